"""A running bot in HTTP mode, the Slack stand-in's people, and signed requests to the bot."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from pydantic import SecretStr
from slack_bolt.app.async_app import AsyncApp
from temporalio.client import Client

from bot.settings import Settings
from bot.slack.app import build_app
from bot.slack.config import SlackDefaults
from bot.slack.context import SlackBot
from bot.slack.http import serve_http
from lab import free_port
from lab.slack_standin import SlackStandIn, block_action_body, signed_headers, slash_command_body

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
CHANNEL = "CPATCH"
ALICE, BOB, EVE, CAROL = "UALICE", "UBOB", "UEVE", "UCAROL"
EMAILS = {
    ALICE: "alice@example.com",
    BOB: "bob@example.com",
    EVE: "eve@example.com",
    CAROL: "carol@example.com",
}
UPDATE = "apt-get update && apt-get -y upgrade"


def people(slack: SlackStandIn) -> None:
    for user_id, email in EMAILS.items():
        slack.add_user(user_id, email.split("@")[0], email)
    slack.add_user("UNOMAIL", "ghost", None)


def slack_settings(base: Settings, slack: SlackStandIn) -> Settings:
    return base.model_copy(
        update={
            "slack_bot_token": SecretStr(slack.bot_token),
            "slack_signing_secret": SecretStr(SECRET),
            "slack_api_url": slack.api_url,
        }
    )


@dataclass
class BotServer:
    url: str
    app: AsyncApp
    bot: SlackBot
    slack: SlackStandIn
    session: aiohttp.ClientSession

    async def post(
        self, body: str, *, secret: str = SECRET, timestamp: int | None = None
    ) -> tuple[int, str]:
        headers = signed_headers(secret, body, timestamp)
        async with self.session.post(self.url, data=body.encode(), headers=headers) as response:
            return response.status, await response.text()

    async def command(self, text: str, user: str = BOB, **kwargs: Any) -> tuple[int, str]:
        body = slash_command_body(text, user, CHANNEL, self.slack.response_url())
        return await self.post(body, **kwargs)

    async def click(
        self, action_id: str, rollout_id: str, user: str, message_ts: str, **kwargs: Any
    ) -> tuple[int, str]:
        body = block_action_body(action_id, rollout_id, user, CHANNEL, message_ts)
        return await self.post(body, **kwargs)


def ack_text(body: str) -> str:
    return str(json.loads(body).get("text", "")) if body.startswith("{") else body


@asynccontextmanager
async def running_bot(
    settings: Settings,
    temporal: Client,
    slack: SlackStandIn,
    defaults: SlackDefaults | None = None,
) -> AsyncIterator[BotServer]:
    app, bot = build_app(settings, temporal, defaults=defaults)
    port = free_port()
    runner = await serve_http(app, "127.0.0.1", port)
    try:
        async with aiohttp.ClientSession() as session:
            yield BotServer(f"http://127.0.0.1:{port}/slack/events", app, bot, slack, session)
    finally:
        for task in list(bot.tasks):
            task.cancel()
        await runner.cleanup()
