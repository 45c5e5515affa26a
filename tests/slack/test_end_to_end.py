"""`/patch` to a patched fleet: the bot in HTTP mode, the worker with its SlackNotifier, the real
Temporal dev server, OpenBao and the sshd lab; only Slack's Web API is the stand-in."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from bot.slack.blocks import APPROVE_ACTION, REJECT_ACTION
from lab import Lab
from tests.slack.helpers import (
    ALICE,
    BOB,
    CAROL,
    CHANNEL,
    EMAILS,
    EVE,
    UPDATE,
    BotServer,
    commands,
    ephemeral_for,
    request_rollout,
)
from tests.support import Mailbox, wait_for
from workflows.models import Phase, RolloutProgress, RolloutSummary


async def test_patch_approve_and_the_thread_tells_the_whole_rollout(
    bot: BotServer, fleet: Lab, temporal_client: Client, mailbox: Mailbox
) -> None:
    slack = bot.slack
    rollout_id, card_ts, approval = await request_rollout(
        bot,
        f'cluster-a pilot=1 services=nginx,postgresql update="{UPDATE}" '
        f"approvers=<@{ALICE}|alice>,Carol@Example.com,outside@example.org",
    )
    # E-mail approvers who are in Slack are mentioned; others are named (they get the e-mail).
    assert approval["text"] == (
        f"Approval needed for rollout {rollout_id}: <@{ALICE}> <@{CAROL}> outside@example.org"
    )
    handle: WorkflowHandle[Any, RolloutSummary] = temporal_client.get_workflow_handle(
        rollout_id, result_type=RolloutSummary
    )
    progress = await handle.query("progress", result_type=RolloutProgress)
    assert progress.requester_email == EMAILS[BOB]
    assert progress.approver_emails == [EMAILS[ALICE], "carol@example.com", "outside@example.org"]

    # The requester and a stranger are refused, ephemerally, with the workflow's own reason.
    assert (await bot.click(APPROVE_ACTION, rollout_id, BOB, approval["ts"]))[0] == 200
    refused = await ephemeral_for(slack, BOB, 1)
    assert "approve refused: bob@example.com requested this rollout and cannot approve" in refused
    await bot.click(APPROVE_ACTION, rollout_id, EVE, approval["ts"])
    assert "eve@example.com is not an approver of this rollout" in await ephemeral_for(
        slack, EVE, 1
    )
    assert all(commands(fleet, host.name) == [] for host in fleet.hosts), "touched before approval"

    await bot.click(APPROVE_ACTION, rollout_id, ALICE, approval["ts"])
    await wait_for(lambda: slack.messages[(CHANNEL, approval["ts"])]["updates"] == 1, timeout=60)
    # A second click is harmless: refused with "already approved", nothing else happens.
    await bot.click(APPROVE_ACTION, rollout_id, ALICE, approval["ts"])
    assert "already approved by alice@example.com" in await ephemeral_for(slack, ALICE, 1)
    summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    # So is a click on a finished rollout.
    await bot.click(REJECT_ACTION, rollout_id, ALICE, approval["ts"])
    assert f"rollout {rollout_id} has already finished" in await ephemeral_for(slack, ALICE, 2)

    def thread_texts() -> list[str]:
        return [message["text"] for message in slack.thread(CHANNEL, card_ts)]

    await wait_for(lambda: any("Rollout succeeded" in text for text in thread_texts()), timeout=60)
    decided = slack.messages[(CHANNEL, approval["ts"])]
    assert decided["text"] == f"Approved by <@{ALICE}>"
    assert all(block["type"] != "actions" for block in decided["blocks"]), "buttons left"
    texts = thread_texts()
    for host in ("a1", "a2", "a3"):
        assert f":arrow_forward: Patching *{host}* (cluster-a)" in texts
        assert any(t.startswith(f":white_check_mark: *{host}* (cluster-a) patched") for t in texts)
    # pilot first: a1's success comes before a2's start
    assert texts.index(":arrow_forward: Patching *a2* (cluster-a)") > next(
        i for i, t in enumerate(texts) if t.startswith(":white_check_mark: *a1*")
    )
    assert "patched 3, failed 0, skipped 0" in texts[-1]
    waves = [t for t in texts if t.startswith(":arrows_counterclockwise: Starting cluster-a:")]
    assert waves == [
        ":arrows_counterclockwise: Starting cluster-a: pilot hosts: a1",
        ":arrows_counterclockwise: Starting cluster-a: the rest, 1 at a time: a2, a3",
    ], waves
    assert texts.index(waves[0]) < texts.index(":arrow_forward: Patching *a1* (cluster-a)")
    card = slack.messages[(CHANNEL, card_ts)]
    # The card is updated right after the summary is posted.
    await wait_for(lambda: card["text"].endswith("succeeded, 3/3 hosts done"), timeout=60)
    assert "*cluster-a*: 3/3 done" in str(card["blocks"])
    assert [fleet.update_count(h) for h in ("a1", "a2", "a3")] == [1, 1, 1]
    # E-mail still goes out beside Slack (after it: notifiers are called in turn).
    await wait_for(lambda: len(mailbox.events("summary")) == 1, timeout=60)


async def test_reject_touches_no_host(bot: BotServer, fleet: Lab, temporal_client: Client) -> None:
    slack = bot.slack
    rollout_id, card_ts, approval = await request_rollout(
        bot, f'cluster-a cluster-b update="{UPDATE}" approvers=<@{ALICE}>'
    )
    await bot.click(REJECT_ACTION, rollout_id, ALICE, approval["ts"])
    summary = await temporal_client.get_workflow_handle(
        rollout_id, result_type=RolloutSummary
    ).result()
    assert summary.phase == Phase.REJECTED and summary.patched == 0 and summary.skipped == 6
    await wait_for(
        lambda: slack.messages[(CHANNEL, approval["ts"])]["text"] == f"Rejected by <@{ALICE}>",
        timeout=60,
    )
    await wait_for(
        lambda: any("Rollout rejected" in m["text"] for m in slack.thread(CHANNEL, card_ts)),
        timeout=60,
    )
    assert all(commands(fleet, host.name) == [] for host in fleet.hosts)
    await wait_for(lambda: "rejected" in slack.messages[(CHANNEL, card_ts)]["text"], timeout=60)


async def test_status_list_and_cancel_by_requester_only_or_approvers(
    bot: BotServer, fleet: Lab, temporal_client: Client
) -> None:
    slack = bot.slack
    rollout_id, card_ts, _ = await request_rollout(
        bot, f'cluster-b update="{UPDATE}" approvers=<@{ALICE}>'
    )

    async def answer(text: str, user: str = BOB) -> dict[str, Any]:
        before = len(slack.responses())
        status, _ = await bot.command(text, user=user)
        assert status == 200
        await wait_for(lambda: len(slack.responses()) > before, timeout=60)
        return slack.responses()[-1]

    status = await answer(f"status {rollout_id}")
    assert status["response_type"] == "ephemeral"
    assert f"{rollout_id} (cluster-b): awaiting-approval, 0/3 hosts done" in status["text"]
    assert "*cluster-b*: 0/3 done" in str(status["blocks"])
    running = await answer("status")
    assert rollout_id in running["text"]
    assert "no rollout with id nope" in (await answer("status nope"))["text"]
    listed = await answer("list")
    assert f"`{rollout_id}` — running" in listed["text"]

    refused = await answer(f"cancel {rollout_id}", user=EVE)
    assert "only the requester or an approver" in refused["text"]
    cancelled = await answer(f"cancel {rollout_id}", user=BOB)
    assert "cancellation of" in cancelled["text"]
    await wait_for(
        lambda: any("Rollout cancelled" in m["text"] for m in slack.thread(CHANNEL, card_ts)),
        timeout=60,
    )
    handle = temporal_client.get_workflow_handle(rollout_id)
    with pytest.raises(WorkflowFailureError):  # a cancelled workflow's result
        await asyncio.wait_for(handle.result(), 60)
    description = await handle.describe()
    assert description.status is not None and description.status.name == "CANCELED"
    assert all(commands(fleet, host.name) == [] for host in fleet.hosts)


async def test_a_failing_pilot_is_told_in_the_thread_and_on_the_card(
    bot: BotServer, fleet: Lab, temporal_client: Client
) -> None:
    slack = bot.slack
    fleet.set_fault("a1", "update-fail")
    rollout_id, card_ts, approval = await request_rollout(
        bot, f'cluster-a pilot=1 update="{UPDATE}" approvers=<@{ALICE}>'
    )
    await bot.click(APPROVE_ACTION, rollout_id, ALICE, approval["ts"])
    await wait_for(
        lambda: any("Rollout failed" in m["text"] for m in slack.thread(CHANNEL, card_ts)),
        timeout=60,
    )
    texts = [message["text"] for message in slack.thread(CHANNEL, card_ts)]
    failure = next(text for text in texts if text.startswith(":x: *Failure*"))
    assert "host a1 (cluster cluster-a) failed at step update: update command on a1 exited" in (
        failure
    )
    assert failure.endswith("Maintenance mode: in maintenance.")
    assert "patched 0, failed 1, skipped 2" in texts[-1]
    assert "cluster-a/a1: failed at update" in texts[-1]
    await wait_for(
        lambda: "2 skipped" in str(slack.messages[(CHANNEL, card_ts)]["blocks"]), timeout=60
    )
    card = str(slack.messages[(CHANNEL, card_ts)]["blocks"])
    assert "*cluster-a*: 0/3 done · 1 failed · 2 skipped" in card
    assert ":x: *a1* (cluster-a) at update" in card
    assert commands(fleet, "a2") == [] and commands(fleet, "a3") == []


async def test_dry_run_from_slack_needs_no_approval_and_posts_the_table(
    bot: BotServer, fleet: Lab, temporal_client: Client
) -> None:
    slack = bot.slack
    status, body = await bot.command(f'cluster-b dry-run update="{UPDATE}"', user=BOB)
    assert status == 200 and body == ""
    await wait_for(lambda: slack.top_level(CHANNEL), timeout=60)
    card_ts = slack.top_level(CHANNEL)[-1]["ts"]

    def texts() -> list[str]:
        return [message["text"] for message in slack.thread(CHANNEL, card_ts)]

    await wait_for(lambda: any("dry-run-done" in text for text in texts()), timeout=90)
    assert not any("Approval needed" in text for text in texts())
    table = next(text for text in texts() if "dry-run-done" in text)
    assert "Dry run — nothing was changed" in table and "cluster-b/b1: ok" in table
    for host in ("b1", "b2", "b3"):
        assert fleet.update_count(host) == 0 and not fleet.in_maintenance(host)
        assert not any("systemctl stop" in command for command in commands(fleet, host))


async def test_schedules_from_slack_and_only_their_people_may_change_them(
    bot: BotServer, temporal_client: Client
) -> None:
    slack = bot.slack
    schedule_id = f"slack-weekly-{uuid.uuid4().hex[:6]}"
    created = await bot.command(
        f'schedule create {schedule_id} cron="0 2 * * sat" tz=Europe/Paris cluster-a pilot=1 '
        f'update="{UPDATE}" approvers=<@{ALICE}|alice>',
        user=BOB,
    )
    assert created[0] == 200
    await wait_for(
        lambda: any(f"created schedule `{schedule_id}`" in str(r) for r in slack.responses()),
        timeout=60,
    )
    description = await temporal_client.get_schedule_handle(schedule_id).describe()
    assert await description.memo() == {"cron": "0 2 * * sat", "timezone": "Europe/Paris"}
    assert not description.schedule.state.paused

    await bot.command(f"schedule pause {schedule_id}", user=EVE)  # neither requester nor approver
    await wait_for(lambda: any("may pause" in str(r) for r in slack.responses()), timeout=60)
    assert not (
        await temporal_client.get_schedule_handle(schedule_id).describe()
    ).schedule.state.paused

    await bot.command(f"schedule pause {schedule_id}", user=ALICE)
    await wait_for(
        lambda: any(f"pause `{schedule_id}` done" in str(r) for r in slack.responses()), timeout=60
    )
    assert (await temporal_client.get_schedule_handle(schedule_id).describe()).schedule.state.paused
    await bot.command(f"schedule delete {schedule_id}", user=BOB)
    await wait_for(
        lambda: any(f"delete `{schedule_id}` done" in str(r) for r in slack.responses()), timeout=60
    )
