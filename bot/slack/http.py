"""HTTP mode: Slack's events, commands and interactivity at `POST /slack/events`, and `/healthz`.

Bolt verifies each request's signature and refuses a timestamp older than five minutes
(https://api.slack.com/authentication/verifying-requests-from-slack). A signature stays valid for
those five minutes, so a captured request could be sent again within them; `ReplayGuard` accepts
each correctly signed request once.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp

log = logging.getLogger("patchpilot.slack")

REPLAY_WINDOW_SECONDS = 300  # Slack's own limit on a request's age
EVENTS_PATH = "/slack/events"


class ReplayGuard:
    """The signatures of requests accepted in the last `window` seconds (monotonic clock)."""

    def __init__(self, window: float = REPLAY_WINDOW_SECONDS) -> None:
        self.window = window
        self._seen: dict[str, float] = {}

    def replayed(self, signature: str) -> bool:
        """Whether `signature` was accepted within the window; forgets older ones."""
        now = time.monotonic()
        for old, expires in list(self._seen.items()):
            if expires < now:
                del self._seen[old]
        return bool(signature) and signature in self._seen

    def accepted(self, signature: str) -> None:
        """Remember `signature` of a request Bolt accepted (status below 400)."""
        if signature:
            self._seen[signature] = time.monotonic() + self.window


def http_app(app: AsyncApp, path: str = EVENTS_PATH) -> web.Application:
    """An aiohttp application serving `app` at `POST path` and `GET /healthz` ("ok").

    A forged or stale request gets Bolt's 401; the same signature again within the five minutes it
    could still verify is a replay (someone resending a captured request) and gets 401
    "replayed request" without reaching the listeners.
    """
    guard = ReplayGuard()

    async def events(request: web.Request) -> web.Response:
        signature = request.headers.get("X-Slack-Signature", "")
        if guard.replayed(signature):
            log.warning("refused a replayed Slack request")
            return web.Response(status=401, text="replayed request")
        bolt_response = await app.async_dispatch(await to_bolt_request(request))
        if bolt_response.status < 400:
            guard.accepted(signature)
        return await to_aiohttp_response(bolt_response)

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    server = web.Application()
    server.router.add_post(path, events)
    server.router.add_get("/healthz", health)
    return server


async def serve_http(app: AsyncApp, host: str, port: int) -> web.AppRunner:
    """Serve `http_app(app)` on `host`:`port` until the returned runner is cleaned up."""
    runner = web.AppRunner(http_app(app), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
