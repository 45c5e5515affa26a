"""The Bolt AsyncApp: `/patch`, the Approve / Reject buttons, the card's controls (Pause, Resume,
Abort, "Skip a host…") and the modals wired to their listeners.

What each listener does is in `bot.slack.listeners`; serving the app is `bot.slack.http` (HTTP
mode) or `bot.slack.runner` (Socket Mode, and `patchpilot bot` as a whole).
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.app.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client

from bot.settings import Settings
from bot.slack import blocks, listeners, modal, package_blocks, selection, skip, what_runs
from bot.slack.client import web_client
from bot.slack.config import SlackDefaults, load_defaults
from bot.slack.context import Ack, Respond, SlackBot
from bot.slack.decisions import APPROVE, REJECT


def _client_given_filter(record: logging.LogRecord) -> bool:
    # Bolt reads SLACK_BOT_TOKEN itself and warns that our client (which has that very token and
    # the SLACK_API_URL base) wins over it; that is intended, so the warning is noise.
    return "`token` will be unused" not in record.getMessage()


def build_app(
    settings: Settings,
    temporal: Client,
    *,
    client: AsyncWebClient | None = None,
    defaults: SlackDefaults | None = None,
) -> tuple[AsyncApp, SlackBot]:
    """The AsyncApp with PatchPilot's listeners, and the SlackBot they share.

    `client` defaults to a Web API client with the settings' bot token and SLACK_API_URL;
    `defaults` to the file PATCHPILOT_SLACK_DEFAULTS names (DefaultsError when it is unusable).
    Request signatures are verified with SLACK_SIGNING_SECRET in HTTP mode.
    """
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    client = client or web_client(token, settings.slack_api_url)
    secret = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    )
    logging.getLogger("slack_bolt.AsyncApp").addFilter(_client_given_filter)
    app = AsyncApp(
        client=client,
        signing_secret=secret,
        request_verification_enabled=True,
        # Every listener acks and hands the slow part to SlackBot.spawn before it returns, so the
        # response can go out when the listener returns: no polling for the ack (bench/slack_ack.py:
        # p50 25 -> 15 ms). Listeners must keep it that way.
        process_before_response=True,
    )
    bot = SlackBot(
        settings=settings,
        temporal=temporal,
        client=client,
        defaults=defaults if defaults is not None else load_defaults(settings.slack_defaults),
    )

    @app.command("/patch")
    async def patch(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        await listeners.on_patch(bot, ack, body, respond)

    @app.action(blocks.APPROVE_ACTION)
    async def approve(ack: Ack, body: dict[str, Any]) -> None:
        await listeners.on_decision(bot, APPROVE, ack, body)

    @app.action(blocks.REJECT_ACTION)
    async def reject(ack: Ack, body: dict[str, Any]) -> None:
        await listeners.on_decision(bot, REJECT, ack, body)

    @app.action(selection.SHOW_HOSTS_ACTION)
    async def show_hosts(ack: Ack, body: dict[str, Any]) -> None:
        await listeners.on_show_hosts(bot, ack, body)

    @app.action(what_runs.SHOW_RUNS_ACTION)
    async def show_runs(ack: Ack, body: dict[str, Any]) -> None:
        await listeners.on_show_runs(bot, ack, body)

    @app.action(package_blocks.PACKAGES_ACTION)
    async def show_packages(ack: Ack, body: dict[str, Any]) -> None:
        await listeners.on_show_packages(bot, ack, body)

    @app.view(modal.CALLBACK_ID)
    async def submitted(ack: Ack, body: dict[str, Any]) -> None:
        await listeners.on_submission(bot, ack, body)

    for action_id, update in blocks.CONTROL_ACTIONS.items():
        app.action(action_id)(_control_listener(bot, update))

    @app.action(skip.SKIP_ACTION)
    async def skip_choice(ack: Ack, body: dict[str, Any]) -> None:
        await listeners.on_skip_choice(bot, ack, body)

    @app.action(skip.SKIP_OPEN_ACTION)
    async def skip_open(ack: Ack, body: dict[str, Any]) -> None:
        await listeners.on_skip_open(bot, ack, body)

    @app.view(skip.SKIP_CALLBACK)
    async def skip_submitted(ack: Ack, body: dict[str, Any]) -> None:
        await listeners.on_skip_submission(bot, ack, body)

    return app, bot


def _control_listener(bot: SlackBot, update: str) -> Any:
    async def control(ack: Ack, body: dict[str, Any]) -> None:
        await listeners.on_control(bot, update, ack, body)

    return control
