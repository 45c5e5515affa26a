"""`/patch cluster-a limit=…` through the bot, the worker and the sshd lab: the card counts and the
approval request lists exactly the hosts the Ansible pattern selects, and only those are patched."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from temporalio.client import Client, WorkflowHandle

from bot.settings import Settings
from bot.slack.blocks import APPROVE_ACTION
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
    await wait_for(lambda: mailbox.events("approval-request"), timeout=60)
    asked = mailbox.events("approval-request")[0].get_content().replace("\r\n", "\n")
    assert "cluster-a (2 hosts): a1, a3\n" in asked
    assert "only the hosts matching the Ansible pattern '!a2'" in asked

    await bot.click(APPROVE_ACTION, rollout_id, ALICE, approval["ts"])
    summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2
    assert commands(fleet, "a2") == [], "the host the limit left out was touched"
    assert all(fleet.update_count(name) == 1 for name in ("a1", "a3"))
