"""The Slack tests' shared fixtures: the stand-in with the people of `helpers.EMAILS`, and the
bot in HTTP mode with a worker and its Slack notifier (a test module may define its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from temporalio.client import Client

from bot.settings import Settings
from lab.slack_standin import SlackStandIn
from tests.slack.helpers import BotServer, bot_and_worker, standin


@pytest_asyncio.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with standin() as running:
        yield running


@pytest_asyncio.fixture
async def bot(
    worker_settings: Settings, temporal_client: Client, slack: SlackStandIn
) -> AsyncIterator[BotServer]:
    async with bot_and_worker(worker_settings, temporal_client, slack) as running:
        yield running
