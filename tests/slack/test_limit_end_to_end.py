"""`/patch cluster-a limit=…` through the bot, the worker and the sshd lab: the card counts and the
approval request lists exactly the hosts the Ansible pattern selects, and only those are patched."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from temporalio.client import Client, WorkflowHandle

from bot.settings import Settings
from bot.slack.blocks import APPROVE_ACTION, REJECT_ACTION
from bot.slack.selection import SHOW_HOSTS_ACTION
from lab import Lab
from lab.slack_standin import SlackStandIn
from tests.slack.helpers import (
    ALICE,
    CHANNEL,
    UPDATE,
    BotServer,
    bot_and_worker,
    commands,
    request_rollout,
    standin,
)
from tests.support import Mailbox, wait_for
from workflows.models import Phase, RolloutProgress, RolloutSummary


@pytest_asyncio.fixture
async def bot(worker_settings: Settings, temporal_client: Client) -> AsyncIterator[BotServer]:
    slack: SlackStandIn
    async with standin() as slack, bot_and_worker(worker_settings, temporal_client, slack) as bot:
        yield bot


async def test_limit_selects_what_the_approval_shows_and_what_is_patched(
    bot: BotServer, fleet: Lab, temporal_client: Client, mailbox: Mailbox
) -> None:
    rollout_id, card_ts, approval = await request_rollout(
        bot, f'cluster-a pilot=1 update="{UPDATE}" approvers=<@{ALICE}|alice> limit=!a2'
    )
    handle: WorkflowHandle[Any, RolloutSummary] = temporal_client.get_workflow_handle(
        rollout_id, result_type=RolloutSummary
    )
    progress = await handle.query("progress", result_type=RolloutProgress)
    assert [h.name for h in progress.hosts()] == ["a1", "a3"]
    card = json.dumps(bot.slack.messages[(CHANNEL, card_ts)]["blocks"])
    assert "*cluster-a*: 0/2 done" in card
    assert "*Limit (Ansible host pattern)*\\n`!a2`" in card
    # The approval request in the thread names the selected hosts and the pattern.
    asking = approval["blocks"][0]["text"]["text"]
    assert "*cluster-a* — 2 hosts: a1, a3\n" in asking
    assert "limit: `!a2` (Ansible host pattern" in asking
    assert [b["text"]["text"] for b in approval["blocks"][1]["elements"]] == ["Approve", "Reject"]
    await wait_for(lambda: mailbox.events("approval-request"), timeout=60)
    asked = mailbox.events("approval-request")[0].get_content().replace("\r\n", "\n")
    assert "cluster-a (2 hosts): a1, a3\n" in asked
    assert "limit: !a2 (Ansible host pattern" in asked

    await bot.click(APPROVE_ACTION, rollout_id, ALICE, approval["ts"])
    summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2
    assert commands(fleet, "a2") == [], "the host the limit left out was touched"
    assert all(fleet.update_count(name) == 1 for name in ("a1", "a3"))


async def test_a_limit_that_selects_no_host_is_refused_in_the_ack_and_starts_nothing(
    bot: BotServer, temporal_client: Client, worker_settings: Settings
) -> None:
    # a1 is in cluster-a only: cluster-b would have no host to patch.
    status, body = await bot.command(
        f'cluster-a cluster-b update="{UPDATE}" approvers=<@{ALICE}|alice> limit=a1'
    )
    assert status == 200
    answer = json.loads(body)
    assert answer["response_type"] == "ephemeral"
    assert "limit=a1 selects no host of cluster-b in the inventory" in answer["text"]
    assert "nothing was started" in answer["text"]
    # Matching nothing at all: both clusters named, with Ansible's own warning.
    status, body = await bot.command(
        f'cluster-a cluster-b update="{UPDATE}" approvers=<@{ALICE}|alice> limit=web0[1-3]'
    )
    text = json.loads(body)["text"]
    assert "limit=web0[1-3] selects no host of cluster-a, cluster-b" in text
    assert "Use [x:y] inclusive subscripts" in text
    assert bot.slack.top_level(CHANNEL) == [], "a card was posted for a refused command"
    started = [
        execution.id
        async for execution in temporal_client.list_workflows(
            query=f"TaskQueue='{worker_settings.task_queue}'"
        )
    ]
    assert started == []


async def test_a_long_selection_is_folded_behind_show_all_and_never_cut(
    fleet: Lab,
    worker_settings: Settings,
    temporal_client: Client,
    mailbox: Mailbox,
    tmp_path: Path,
) -> None:
    # A second inventory source with a 120-host group: the approval must not list 120 names in
    # the thread, nor leave any of them out.
    big = tmp_path / "big.ini"
    big.write_text("[big]\nweb[001:120].example.com\n")
    settings = worker_settings.model_copy(
        update={"inventory": Path(f"{worker_settings.inventory},{big}")}
    )
    selected = [f"web{n:03d}.example.com" for n in range(1, 120)]  # the limit leaves out web120
    async with standin() as slack, bot_and_worker(settings, temporal_client, slack) as bot:
        rollout_id, _card_ts, approval = await request_rollout(
            bot,
            f'big pilot=1 update="{UPDATE}" approvers=<@{ALICE}|alice> '
            "limit=big:!web120.example.com",
        )
        asking = approval["blocks"][0]["text"]["text"]
        assert f"*big* — 119 hosts: {', '.join(selected[:20])} … and 99 more\n" in asking
        assert "limit: `big:!web120.example.com`" in asking
        show_all = approval["blocks"][1]["elements"][2]
        assert show_all["text"]["text"] == "Show all 119 hosts"

        await bot.click(SHOW_HOSTS_ACTION, rollout_id, ALICE, approval["ts"])
        await wait_for(lambda: slack.views, timeout=30)
        listed = " ".join(b["text"]["text"] for b in slack.views[-1]["blocks"])
        assert "119 hosts selected" in listed and "limit: `big:!web120.example.com`" in listed
        assert ", ".join(selected) in listed
        assert listed.count("web120") == 1, "web120 is named by the limit, not listed"

        await wait_for(lambda: mailbox.events("approval-request"), timeout=60)
        asked = mailbox.events("approval-request")[0].get_content().replace("\r\n", "\n")
        assert "big (119 hosts): web001.example.com, " in asked
        assert "… and 69 more (every host is listed at the end)" in asked
        assert "limit: big:!web120.example.com (Ansible host pattern" in asked
        every = asked.split("Every selected host:\n", 1)[1]
        assert every.startswith("  big (119 hosts):\n" + "".join(f"    {h}\n" for h in selected))

        await bot.click(REJECT_ACTION, rollout_id, ALICE, approval["ts"])
        handle = temporal_client.get_workflow_handle(rollout_id)
        for _ in range(300):
            progress = await handle.query("progress", result_type=RolloutProgress)
            if progress.phase == Phase.REJECTED:
                break
            await asyncio.sleep(0.1)
        assert progress.phase == Phase.REJECTED, "nothing of the big group may run"
