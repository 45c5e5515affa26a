"""Control of a running rollout from its card, `/patch` and the CLI (issue 14): pause, resume,
skip and abort as Temporal updates, end to end on the real Temporal dev server and sshd lab."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from temporalio.client import Client

from activities.notify import summary_text
from bot.rollouts import Rollouts
from bot.settings import Settings
from bot.slack.blocks import APPROVE_ACTION
from lab import Lab
from lab.slack_standin.rules import rendered
from tests.slack.helpers import (
    ALICE,
    BOB,
    CHANNEL,
    EVE,
    UPDATE,
    BotServer,
    ack_text,
    commands,
    request_rollout,
)
from tests.support import running_worker, wait_for, worker_env
from workflows.models import ApprovalDecision, Phase, RolloutControl, RolloutInput

PATCHPILOT = str(Path(sys.executable).parent / "patchpilot")
PAUSE, RESUME, ABORT = "patchpilot_pause", "patchpilot_resume", "patchpilot_abort"


async def answer(bot: BotServer, text: str, user: str) -> str:
    """`/patch text` as `user`; the ephemeral answer that follows the ack."""
    before = len(bot.slack.responses())
    status, _ = await bot.command(text, user=user)
    assert status == 200
    await wait_for(lambda: len(bot.slack.responses()) > before, timeout=60)
    response = bot.slack.responses()[-1]
    assert response["response_type"] == "ephemeral"
    return str(response["text"])


async def clicked(
    bot: BotServer, action: str, rollout_id: str, user: str, ts: str
) -> dict[str, Any]:
    """Click `action` on message `ts` as `user`; the ephemeral answer."""
    before = len(bot.slack.ephemerals(user))
    await bot.click(action, rollout_id, user, ts)
    await wait_for(lambda: len(bot.slack.ephemerals(user)) > before, timeout=60)
    return bot.slack.ephemerals(user)[-1]


async def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`patchpilot args…` as an operator runs it; in a thread, since the worker serving the
    update runs on this test's event loop."""
    return await asyncio.to_thread(
        subprocess.run,
        [PATCHPILOT, *args],
        env={**os.environ, **worker_env(settings)},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def patching(rollouts: Rollouts, rollout_id: str) -> None:
    async def phase() -> Phase:
        return (await rollouts.progress(rollout_id, steps=False)).phase

    for _ in range(300):
        if await phase() == Phase.PATCHING:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the rollout never reached patching")


async def test_pause_from_the_card_holds_every_host_until_resume(
    bot: BotServer, fleet: Lab
) -> None:
    slack, rollouts = bot.slack, bot.bot.rollouts
    rollout_id, card_ts, approval = await request_rollout(
        bot, f'cluster-a pilot=1 update="{UPDATE}" approvers=<@{ALICE}>'
    )
    paused = await clicked(bot, PAUSE, rollout_id, BOB, card_ts)
    assert "paused by bob@example.com" in paused["text"] and paused["thread_ts"] == card_ts
    await wait_for(lambda: "Paused by" in slack.card_versions(CHANNEL, card_ts)[-1], timeout=60)
    card = slack.messages[(CHANNEL, card_ts)]
    assert RESUME in str(card["blocks"]) and PAUSE not in str(card["blocks"])
    again = await clicked(bot, PAUSE, rollout_id, ALICE, card_ts)
    assert "pause refused: already paused by bob@example.com" in again["text"]

    await bot.click(APPROVE_ACTION, rollout_id, ALICE, approval["ts"])
    await patching(rollouts, rollout_id)
    await asyncio.sleep(3)
    assert all(commands(fleet, host.name) == [] for host in fleet.hosts), "a host started"

    assert "resumed by alice@example.com" in await answer(bot, f"resume {rollout_id}", ALICE)
    summary = await rollouts.result(rollout_id)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    controls = [line.split(" UTC ")[1] for line in summary.controls]
    assert controls[0] == "paused by bob@example.com"
    assert re.fullmatch(
        r"resumed by alice@example\.com \(paused by bob@example\.com for \d+ s\)", controls[1]
    ), controls
    assert len(controls) == 2
    # A person reading only the summary sees who paused, for how long, and who resumed.
    assert "Controls:\n" in summary_text(summary) and controls[1] in summary_text(summary)
    await wait_for(
        lambda: any("*Controls*" in m["text"] for m in slack.thread(CHANNEL, card_ts)), timeout=60
    )
    told = next(m["text"] for m in slack.thread(CHANNEL, card_ts) if "*Controls*" in m["text"])
    assert controls[1] in rendered(told)


async def test_skip_a_pending_host_and_refusals_say_why(
    bot: BotServer, fleet: Lab, worker_settings: Settings
) -> None:
    slack, rollouts = bot.slack, bot.bot.rollouts
    assert slack.channels == {CHANNEL}
    rollout_id, card_ts, approval = await request_rollout(
        bot, f'cluster-b pilot=1 update="{UPDATE}" approvers=<@{ALICE}>'
    )
    refused = await clicked(bot, PAUSE, rollout_id, EVE, card_ts)
    assert "pause refused: eve@example.com may not control this rollout" in refused["text"]
    assert refused["thread_ts"] == card_ts
    refused_cli = await cli(worker_settings, "pause", rollout_id, "--as", "eve@example.com")
    assert refused_cli.returncode == 2
    assert "pause refused: eve@example.com may not" in refused_cli.stderr
    assert "b9 is not a host of this rollout" in await answer(bot, f"skip {rollout_id} b9", BOB)
    _, ack = await bot.command(f"skip {rollout_id}", user=BOB)  # malformed: told in the ack
    assert "`skip` needs a rollout id and a host" in ack_text(ack)
    skipped = await answer(bot, f"skip {rollout_id} b2 disk replacement & check", BOB)
    assert 'skipped host b2 by bob@example.com: "disk replacement &amp; check"' in skipped

    await bot.click(APPROVE_ACTION, rollout_id, ALICE, approval["ts"])
    summary = await rollouts.result(rollout_id)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2 and summary.skipped == 1
    b2 = next(host for host in summary.hosts if host.name == "b2")
    assert b2.state == "skipped"
    assert b2.note == 'skipped by bob@example.com: "disk replacement & check"'
    assert commands(fleet, "b2") == []
    assert summary.controls[0].endswith(
        'skipped host b2 by bob@example.com: "disk replacement & check"'
    )
    text = summary_text(summary)
    assert 'cluster-b/b2: skipped (skipped by bob@example.com: "disk replacement & check")' in text


async def test_abort_a_paused_wave_skips_every_host_not_started(
    bot: BotServer, fleet: Lab, worker_settings: Settings
) -> None:
    rollouts = bot.bot.rollouts
    rollout_id, _, approval = await request_rollout(
        bot, f'cluster-a pilot=1 update="{UPDATE}" approvers=<@{ALICE}>'
    )
    assert "paused by alice" in await answer(bot, f"pause {rollout_id}", ALICE)
    await bot.click(APPROVE_ACTION, rollout_id, ALICE, approval["ts"])
    await patching(rollouts, rollout_id)
    aborted = await cli(worker_settings, "abort", rollout_id, "--as", "bob@example.com")
    assert aborted.returncode == 0, aborted.stderr
    assert "aborted by bob@example.com" in aborted.stdout
    summary = await rollouts.result(rollout_id)
    assert summary.phase == Phase.CANCELLED and summary.skipped == 3 and summary.patched == 0
    assert summary.message.startswith("aborted by bob@example.com")
    assert {host.name for host in summary.hosts} == {"a1", "a2", "a3"}
    assert all(commands(fleet, host.name) == [] for host in fleet.hosts)
    # Aborted while paused: the summary says by whom, and how long the pause had lasted.
    assert re.search(
        r"aborted by bob@example\.com \(paused by alice@example\.com for \d+ s\)",
        summary_text(summary),
    )
    assert "cluster-a/a3: skipped (not started: aborted by bob@example.com)" in summary_text(
        summary
    )
    late = await answer(bot, f"resume {rollout_id}", ALICE)
    assert "resume refused" in late or "has already finished" in late


async def test_a_pause_holds_across_a_worker_restart(
    fleet: Lab, temporal_client: Client, worker_settings: Settings
) -> None:
    rollouts = Rollouts(temporal_client, worker_settings.task_queue)
    bob = RolloutControl(person="bob@example.com")
    alice = RolloutControl(person="alice@example.com")
    request = RolloutInput.model_validate(
        {
            "targetClusters": ["cluster-a"],
            "pilotHostCount": 1,
            "approverEmails": ["alice@example.com"],
            "requesterEmail": "bob@example.com",
            "updateCommand": UPDATE,
        }
    )
    async with running_worker(temporal_client, worker_settings):
        handle = await rollouts.start(request)
        rollout_id = handle.id
        assert await rollouts.control(rollout_id, "pause", bob) == "paused by bob@example.com"
        approval = ApprovalDecision(approver="alice@example.com")
        await rollouts.decide(rollout_id, approval, approve=True)
        await patching(rollouts, rollout_id)
    # A new worker process replays the rollout from its history: still paused.
    async with running_worker(temporal_client, worker_settings):
        await asyncio.sleep(3)
        progress = await rollouts.progress(rollout_id)
        assert progress.paused_by == "bob@example.com" and progress.phase == Phase.PATCHING
        assert all(commands(fleet, host.name) == [] for host in fleet.hosts), "a host started"
        resumed = await rollouts.control(rollout_id, "resume", alice)
        assert resumed.startswith("resumed by alice@example.com (paused by bob@example.com for ")
        summary = await rollouts.result(rollout_id)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
