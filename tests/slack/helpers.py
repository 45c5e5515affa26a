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

from activities.ssh import unwrap_commands
from bot.settings import Settings
from bot.slack.app import build_app
from bot.slack.client import web_client
from bot.slack.config import SlackDefaults
from bot.slack.context import SlackBot
from bot.slack.http import serve_http
from bot.slack.notifier import SlackNotifier
from bot.slack.pacing import Pacing
from bot.worker import WorkerParts, build_worker
from lab import Lab, free_port
from lab.slack_standin import SlackStandIn, block_action_body, signed_headers, slash_command_body
from tests.support import wait_for

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
PACING = Pacing()  # as `patchpilot bot` builds its notifier (bot/slack/runner.py)


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
        # As Slack does, a click on a reply names its thread.
        thread_ts = (self.slack.messages.get((CHANNEL, message_ts)) or {}).get("thread_ts")
        body = block_action_body(
            action_id, rollout_id, user, CHANNEL, message_ts, thread_ts=thread_ts
        )
        return await self.post(body, **kwargs)

    def offered(self, action_id: str, message_ts: str) -> tuple[str, list[dict[str, Any]]]:
        """The block id and the options of the menu `action_id` on message `message_ts` as it
        reads now; ("", []) when the message has no such menu."""
        for block in (self.slack.messages.get((CHANNEL, message_ts)) or {}).get("blocks") or []:
            for element in block.get("elements") or []:
                if isinstance(element, dict) and element.get("action_id") == action_id:
                    return str(block.get("block_id") or ""), list(element.get("options") or [])
        return "", []

    async def choose(
        self, action_id: str, value: str, user: str, message_ts: str
    ) -> tuple[int, str]:
        """Pick the option `value` of the menu `action_id` on message `message_ts`, as Slack
        sends it: only an option the message offers now can be picked (AssertionError else)."""
        block_id, options = self.offered(action_id, message_ts)
        option = next((o for o in options if o.get("value") == value), None)
        assert option is not None, f"{value!r} is not offered: {[o['value'] for o in options]}"
        thread_ts = (self.slack.messages.get((CHANNEL, message_ts)) or {}).get("thread_ts")
        body = block_action_body(
            action_id,
            "",
            user,
            CHANNEL,
            message_ts,
            block_id=block_id,
            thread_ts=thread_ts,
            selected=option,
        )
        return await self.post(body)


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


@asynccontextmanager
async def standin(**kwargs: Any) -> AsyncIterator[SlackStandIn]:
    """The Slack stand-in with CHANNEL and the people of EMAILS."""
    kwargs.setdefault("channels", {CHANNEL})
    async with SlackStandIn(**kwargs) as slack:
        people(slack)
        yield slack


@asynccontextmanager
async def bot_and_worker(
    worker_settings: Settings,
    temporal_client: Client,
    slack: SlackStandIn,
    pacing: Pacing | None = PACING,
) -> AsyncIterator[BotServer]:
    """`patchpilot bot` in one process: the Bolt app and a worker with the Slack notifier
    (`pacing` None: every event posted and the card updated at once, as before issue 14)."""
    settings = slack_settings(worker_settings, slack)
    notifier = SlackNotifier(
        web_client(slack.bot_token, slack.api_url),
        temporal_client,
        settings.ui_link,
        pacing=pacing,
    )
    worker = build_worker(
        temporal_client, settings, WorkerParts(settings, extra_notifiers=[notifier])
    )
    async with worker, running_bot(settings, temporal_client, slack) as running:
        yield running


def commands(lab: Lab, host: str) -> list[str]:
    """What `host` received, as the operator's commands."""
    return [command for line in lab.command_log(host) for command in unwrap_commands(line)]


async def request_rollout(bot: BotServer, text: str) -> tuple[str, str, dict[str, Any]]:
    """`/patch` as BOB; returns (rollout id, card ts, the approval message)."""
    slack = bot.slack
    status, body = await bot.command(text, user=BOB)
    assert status == 200 and body == ""  # acked at once, without a message
    await wait_for(lambda: slack.top_level(CHANNEL), timeout=60)
    card_ts = slack.top_level(CHANNEL)[-1]["ts"]

    def approval() -> dict[str, Any] | None:
        for message in slack.thread(CHANNEL, card_ts):
            if "Approval needed" in message["text"]:
                return message
        return None

    await wait_for(lambda: approval() is not None, timeout=60)
    message = approval()
    assert message is not None
    buttons = message["blocks"][1]["elements"]
    rollout_id = buttons[0]["value"]
    # The worker's SlackNotifier updates the card once the approval request is sent.
    card = slack.messages[(CHANNEL, card_ts)]
    await wait_for(lambda: "awaiting-approval" in card["text"], timeout=60)
    return rollout_id, card_ts, message


async def ephemeral_for(slack: SlackStandIn, user: str, count: int) -> str:
    await wait_for(lambda: len(slack.ephemerals(user)) >= count, timeout=60)
    return str(slack.ephemerals(user)[count - 1]["text"])
