"""`patchpilot bot`: the Slack app (Socket Mode or HTTP mode), the embedded worker with the Slack
notifier, and the approval link pages, in one process until it is stopped."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from slack_bolt.app.async_app import AsyncApp

from bot.settings import Settings
from bot.slack.app import build_app
from bot.slack.http import EVENTS_PATH, serve_http

log = logging.getLogger("patchpilot.slack")


async def run_bot(
    settings: Settings, host: str = "0.0.0.0", worker_options: dict[str, Any] | None = None
) -> None:
    """Serve Slack and run a worker on `settings.task_queue` until cancelled or the worker fails.

    Socket Mode when SLACK_APP_TOKEN is set (https://api.slack.com/apis/socket-mode), else HTTP
    mode on `host`:PATCHPILOT_HTTP_PORT. Raises RuntimeError when SLACK_BOT_TOKEN or both mode
    settings are missing, and Slack's error when auth.test refuses the token (checked first, so a
    wrong token or SLACK_API_URL fails at start rather than at the first command). On the way out,
    acknowledged work gets `SlackBot.drain`'s time to finish.
    """
    from activities.inventory import prefetch
    from activities.notify import email_notifier
    from bot.slack.notifier import SlackNotifier
    from bot.slack.pacing import Pacing
    from bot.web.approvals import start_link_server
    from bot.worker import WorkerParts, build_worker, connect

    if settings.slack_bot_token is None:
        raise RuntimeError("SLACK_BOT_TOKEN is not set (the bot token, xoxb-…)")
    if settings.slack_app_token is None and settings.slack_signing_secret is None:
        raise RuntimeError(
            "set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode at /slack/events)"
        )
    temporal = await connect(settings)
    app, bot = build_app(settings, temporal)
    bot.spawn(prefetch(settings.inventory))  # the first /patch is answered within 3 s
    identity = await bot.client.auth_test()
    bot.team_id = identity.get("team_id")
    notifier = SlackNotifier(
        bot.client,
        temporal,
        settings.ui_link,
        fallback=email_notifier(settings),
        pacing=Pacing(),  # the thread's rule: bot.slack.pacing
    )
    worker = build_worker(
        temporal,
        settings,
        WorkerParts(settings, extra_notifiers=[notifier]),
        **(worker_options or {}),
    )
    async with contextlib.AsyncExitStack() as stack:
        # The front door first: a command that arrives while the worker starts is simply queued.
        await _front_door(stack, app, settings, host)
        link_pages = await start_link_server(temporal, settings, host)
        if link_pages is not None:
            stack.push_async_callback(link_pages.cleanup)
            log.info("approval link pages on port %d", settings.approval_port)
        stack.push_async_callback(bot.drain)
        log.info("worker polling task queue %s", settings.task_queue)
        await worker.run()  # until interrupted; a worker failure ends the bot too


async def _front_door(
    stack: contextlib.AsyncExitStack, app: AsyncApp, settings: Settings, host: str
) -> None:
    """Connect Socket Mode or start the HTTP server; `stack` closes it on the way out."""
    if settings.slack_app_token is not None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        handler = AsyncSocketModeHandler(app, settings.slack_app_token.get_secret_value())
        await handler.connect_async()
        stack.push_async_callback(handler.close_async)
        log.info("Socket Mode connected")
        return
    runner = await serve_http(app, host, settings.http_port)
    stack.push_async_callback(runner.cleanup)
    log.info("HTTP mode: POST http://%s:%d%s", host, settings.http_port, EVENTS_PATH)
