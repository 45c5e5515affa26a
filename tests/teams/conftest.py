"""Teams stand-in, approval link server and a headless Chromium, on top of the shared real parts."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from pydantic import SecretStr
from temporalio.client import Client

from activities.notify.links import LinkSigner
from bot.settings import Settings
from bot.web.approvals import UsedLinks, create_app
from lab import free_port
from tests.support import running_worker

# The shared real parts (fleet, SMTP mailbox, Temporal, OpenBao, worker_settings) come from
# tests/support.py, registered once by the root conftest.

LINK_SECRET = "test-link-secret-" + "x" * 24
CHROMIUM = os.environ.get("PATCHPILOT_CHROMIUM", "/usr/bin/chromium")


@dataclass
class TeamsStandIn:
    """Stands in for a Teams Workflows webhook: records each posted body, answers 202 (or what
    `answers` says first: a list of (status, headers) consumed in order)."""

    url: str = ""
    posts: list[dict[str, Any]] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)  # bodies answered with an error

    async def handle(self, request: web.Request) -> web.Response:
        self.times.append(asyncio.get_running_loop().time())
        body = await request.read()
        assert request.content_type == "application/json"
        if self.answers:
            status, headers = self.answers.pop(0)
            self.refused.append(json.loads(body))
            return web.Response(status=status, headers=headers, text="refused")
        self.posts.append(json.loads(body))
        return web.Response(status=202)

    def cards(self) -> list[dict[str, Any]]:
        return [post["attachments"][0]["content"] for post in self.posts]

    def titles(self) -> list[str]:
        return [card["body"][0]["text"] for card in self.cards()]

    def reset(self) -> None:
        self.posts.clear()
        self.answers.clear()
        self.times.clear()
        self.refused.clear()


@dataclass
class StandIns:
    """One local server, any number of webhook stand-ins: `new(name)` gives an endpoint of its own
    (a Teams-shaped URL with a secret signature in its query; the generic webhook uses one too)."""

    base: str = ""
    endpoints: dict[str, TeamsStandIn] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.Response:
        endpoint = self.endpoints.get(request.match_info["flow"])
        if endpoint is None:
            return web.Response(status=404, text="no such flow")
        return await endpoint.handle(request)

    def new(self, name: str, flow: str | None = None, secret: str | None = None) -> TeamsStandIn:
        flow = flow or f"{name}-{uuid.uuid4().hex[:8]}"
        secret = secret or uuid.uuid4().hex
        endpoint = TeamsStandIn(
            url=f"{self.base}/workflows/{flow}/triggers/manual/paths/invoke?sig={secret}"
        )
        self.endpoints[flow] = endpoint
        return endpoint


@pytest_asyncio.fixture(scope="session")
async def stand_ins() -> AsyncIterator[StandIns]:
    server = StandIns()
    app = web.Application()
    app.router.add_post("/workflows/{flow}/triggers/manual/paths/invoke", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server.base = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


@pytest.fixture(scope="session")
def teams_session(stand_ins: StandIns) -> TeamsStandIn:
    return stand_ins.new("teams", flow="abc", secret="s3cr3t")


@pytest.fixture
def teams(teams_session: TeamsStandIn) -> TeamsStandIn:
    teams_session.reset()
    return teams_session


@dataclass
class LinkServer:
    url: str
    signer: LinkSigner
    used: UsedLinks


@pytest_asyncio.fixture(scope="session")
async def link_server(temporal_client: Client) -> AsyncIterator[LinkServer]:
    signer = LinkSigner(LINK_SECRET.encode())
    used = UsedLinks()
    runner = web.AppRunner(create_app(temporal_client, signer, used))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield LinkServer(f"http://127.0.0.1:{port}", signer, used)
    await runner.cleanup()


@pytest.fixture
def teams_settings(
    worker_settings: Settings, teams: TeamsStandIn, link_server: LinkServer
) -> Settings:
    return worker_settings.model_copy(
        update={
            "task_queue": f"teams-{uuid.uuid4().hex[:8]}",
            "teams_webhook_url": SecretStr(teams.url),
            "public_url": link_server.url,
            "link_secret": SecretStr(LINK_SECRET),
        }
    )


@pytest_asyncio.fixture
async def teams_worker(temporal_client: Client, teams_settings: Settings):
    async with running_worker(temporal_client, teams_settings) as parts:
        yield parts


@pytest_asyncio.fixture(scope="session")
async def browser():
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        await launched.close()


@pytest_asyncio.fixture
async def page(browser):
    context = await browser.new_context()
    page = await context.new_page()
    yield page
    await context.close()


def links_in(message) -> dict[str, str]:
    """{'approve': url, 'reject': url} from a personal approval e-mail."""
    import re

    found = dict(re.findall(r"^[ \t]+(Approve|Reject):[ \t]+(\S+)", message.get_content(), re.M))
    return {k.lower(): v for k, v in found.items()}
