"""A local stand-in for the Slack Web API (and Socket Mode), for tests, benches and demos.

No Slack workspace is reachable from here, so the bot's slack_sdk clients are pointed at this
server (`SLACK_API_URL=http://127.0.0.1:PORT/api/`). It answers the methods PatchPilot uses the way
Slack does (`{"ok": true, ...}` or `{"ok": false, "error": "..."}`), keeps every version of every
message it was sent so a test can read a thread and a card's history back, and records every call.
Slack's documented rules (`rules`) apply: Block Kit limits, `thread_ts` naming a message of the
channel, and about one post a second per channel after a short burst (429 with Retry-After). It
can also play Slack's side of a Socket Mode connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from lab.slack_standin.rules import (
    ChannelRate,
    block_kit_error,
    block_texts,
    rendered,
    view_error,
)

TEAM_ID = "T0PATCHPILOT"
BOT_USER_ID = "UPATCHBOT"


@dataclass
class Call:
    """One Web API call the stand-in received: ``method`` (e.g. ``chat.postMessage``), its
    parameters (query, form or JSON; ``blocks`` decoded), and ``time.monotonic()`` at arrival."""

    method: str
    params: dict[str, Any]
    at: float


@dataclass
class User:
    """A member of the stand-in's workspace (``users.info``, ``users.lookupByEmail``), with the
    user object's flags (https://api.slack.com/types/user): ``team_id`` (another workspace's for
    a Slack Connect member, who also reads as ``is_stranger``), ``deleted`` (deactivated),
    ``restricted`` / ``ultra_restricted`` (multi- / single-channel guests), and
    ``email_confirmed`` (``is_email_confirmed``; None leaves the field out, as Slack may)."""

    id: str
    name: str
    email: str | None
    team_id: str = TEAM_ID
    deleted: bool = False
    restricted: bool = False
    ultra_restricted: bool = False
    email_confirmed: bool | None = True
    display_name: str | None = None  # what the person set as display name (default: name)

    def as_slack(self) -> dict[str, Any]:
        """The user object as Slack's API returns it."""
        profile: dict[str, Any] = {
            "display_name": self.display_name or self.name,
            "real_name": self.name.title(),
        }
        if self.email:
            profile["email"] = self.email
        user: dict[str, Any] = {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "deleted": self.deleted,
            "is_bot": False,
            "is_restricted": self.restricted,
            "is_ultra_restricted": self.ultra_restricted,
            "profile": profile,
        }
        if self.team_id != TEAM_ID:
            user["is_stranger"] = True
        if self.email_confirmed is not None:
            user["is_email_confirmed"] = self.email_confirmed
        return user


@dataclass
class Failure:
    """An error the next ``times`` calls of a method get (see ``SlackStandIn.fail``)."""

    error: str
    status: int = 200
    retry_after: int | None = None
    times: int = 1


@dataclass
class SlackStandIn:
    """`async with SlackStandIn(...) as slack:` serves on 127.0.0.1 on a free port."""

    bot_token: str = "xoxb-test-token"
    app_token: str = "xapp-test-token"
    channels: set[str] = field(default_factory=lambda: {"CPATCH"})
    not_member: set[str] = field(default_factory=set)
    users: dict[str, User] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    failures: dict[str, list[Failure]] = field(default_factory=dict)
    # Every version of every message, oldest first: the post, then each chat.update.
    versions: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    # Posting rate per channel; None turns the rule off (e.g. for a test of something else).
    rate: ChannelRate | None = field(default_factory=ChannelRate)
    # The calls answered 429 because of `rate`.
    throttled: list[Call] = field(default_factory=list)
    # Every modal opened with views.open, with the id the stand-in gave it.
    views: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""
    _runner: web.AppRunner | None = None
    _ts: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _acks: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    _connected: asyncio.Event = field(default_factory=asyncio.Event)

    # ---- set-up -----------------------------------------------------------------------------

    def add_user(self, user_id: str, name: str, email: str | None, **flags: Any) -> User:
        """Add a workspace member; ``email`` None for one whose profile hides it; ``flags`` are
        `User`'s (``restricted=True`` for a guest, ``team_id=`` for another workspace's …)."""
        user = User(user_id, name, email, **flags)
        self.users[user_id] = user
        return user

    def fail(
        self,
        method: str,
        error: str,
        *,
        status: int = 200,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Make the next `times` calls of `method` fail as Slack would."""
        self.failures.setdefault(method, []).append(Failure(error, status, retry_after, times))

    async def __aenter__(self) -> SlackStandIn:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/response/{key}", self._response_url)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for socket in list(self._sockets):
            await socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        """What to set ``SLACK_API_URL`` (slack_sdk's ``base_url``) to; set once started."""
        return f"{self.base_url}/api/"

    def response_url(self) -> str:
        """A fresh ``response_url`` whose POSTs are recorded (see ``responses``)."""
        return f"{self.base_url}/response/{uuid.uuid4().hex}"

    # ---- reading back -----------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        """The calls of one Web API method, oldest first."""
        return [call for call in self.calls if call.method == method]

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """Replies in a thread, oldest first (the parent excluded)."""
        return [
            message
            for (chan, _), message in sorted(self.messages.items(), key=lambda kv: float(kv[0][1]))
            if chan == channel and message.get("thread_ts") == ts
        ]

    def top_level(self, channel: str) -> list[dict[str, Any]]:
        """The messages in ``channel`` that are not thread replies, oldest first."""
        return [
            message
            for (chan, _), message in sorted(self.messages.items(), key=lambda kv: float(kv[0][1]))
            if chan == channel and not message.get("thread_ts")
        ]

    def card_versions(self, channel: str, ts: str) -> list[str]:
        """Each version of a message as a person read it: its blocks' texts (else its text),
        rendered from mrkdwn, one string per version."""
        return [
            "\n".join(block_texts(version["blocks"])) or rendered(str(version["text"]))
            for version in self.versions.get((channel, ts), [])
        ]

    def posts(self, channel: str) -> list[Call]:
        """The chat.postMessage calls Slack accepted in `channel` (thread replies included)."""
        return [
            call
            for call in self.calls_to("chat.postMessage")
            if call.params.get("channel") == channel and call not in self.throttled
        ]

    def ephemerals(self, user: str | None = None) -> list[dict[str, Any]]:
        """Parameters of every ``chat.postEphemeral`` (to ``user`` only, if given)."""
        found = [call.params for call in self.calls if call.method == "chat.postEphemeral"]
        return [params for params in found if user is None or params.get("user") == user]

    def responses(self) -> list[dict[str, Any]]:
        """Bodies posted to any ``response_url``, oldest first."""
        return [call.params for call in self.calls if call.method == "response_url"]

    # ---- the Web API --------------------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, Any]:
        params: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                body = await request.json()
                if isinstance(body, dict):
                    params.update(body)
            else:
                params.update(dict(await request.post()))
        for key in ("blocks", "attachments"):
            if isinstance(params.get(key), str):
                with contextlib.suppress(json.JSONDecodeError):
                    params[key] = json.loads(params[key])
        return params

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        params = await self._params(request)
        self.calls.append(Call(method, params, time.monotonic()))
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        token = token or str(params.get("token", ""))
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if token != expected:
            return web.json_response({"ok": False, "error": "invalid_auth"})
        queued = self.failures.get(method)
        if queued:
            failure = queued[0]
            failure.times -= 1
            if failure.times <= 0:
                queued.pop(0)
            headers = (
                {} if failure.retry_after is None else {"Retry-After": str(failure.retry_after)}
            )
            return web.json_response(
                {"ok": False, "error": failure.error}, status=failure.status, headers=headers
            )
        if method == "chat.postMessage" and self.rate is not None:
            wait = self.rate.retry_after(str(params.get("channel")), time.monotonic())
            if wait is not None:
                self.throttled.append(self.calls[-1])
                return web.json_response(
                    {"ok": False, "error": "ratelimited"},
                    status=429,
                    headers={"Retry-After": str(wait)},
                )
        handler = getattr(self, "_m_" + method.replace(".", "_"), None)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        return web.json_response(handler(params))

    def _next_ts(self) -> str:
        return f"{1_700_000_000 + next(self._ts)}.{next(self._ts) % 1_000_000:06d}"

    def _m_auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://patchpilot-test.slack.com/",
            "team": "PatchPilot Test",
            "user": "patchpilot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": "BPATCHBOT",
            "is_enterprise_install": False,
        }

    def _m_users_info(self, params: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(params.get("user")))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": user.as_slack()}

    def _m_users_lookupByEmail(self, params: dict[str, Any]) -> dict[str, Any]:
        wanted = str(params.get("email", "")).lower()
        for user in self.users.values():
            if user.email and user.email.lower() == wanted:
                return {"ok": True, "user": user.as_slack()}
        return {"ok": False, "error": "users_not_found"}

    def _m_users_list(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "members": [user.as_slack() for user in self.users.values()],
            "response_metadata": {"next_cursor": ""},
        }

    def _channel_error(self, channel: str) -> dict[str, Any] | None:
        if channel not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        if channel in self.not_member:
            return {"ok": False, "error": "not_in_channel"}
        return None

    def _m_chat_postMessage(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel"))
        if error := self._channel_error(channel):
            return error
        if not params.get("text") and not params.get("blocks"):
            return {"ok": False, "error": "no_text"}
        if problem := block_kit_error(params):
            return {"ok": False, "error": problem}
        thread_ts = params.get("thread_ts")
        if thread_ts and (channel, thread_ts) not in self.messages:
            return {"ok": False, "error": "thread_not_found"}
        ts = self._next_ts()
        message = {
            "type": "message",
            "user": BOT_USER_ID,
            "ts": ts,
            "text": params.get("text", ""),
            "blocks": params.get("blocks") or [],
            "updates": 0,
        }
        if thread_ts:
            message["thread_ts"] = thread_ts
        self.messages[(channel, ts)] = message
        self.versions[(channel, ts)] = [dict(message)]
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _m_chat_update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel, ts = str(params.get("channel")), str(params.get("ts"))
        if error := self._channel_error(channel):
            return error
        message = self.messages.get((channel, ts))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        if problem := block_kit_error(params):
            return {"ok": False, "error": problem}
        message["text"] = params.get("text", message["text"])
        if "blocks" in params:
            message["blocks"] = params["blocks"] or []
        message["updates"] += 1
        self.versions[(channel, ts)].append(dict(message))
        return {"ok": True, "channel": channel, "ts": ts, "text": message["text"]}

    def _m_chat_postEphemeral(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel"))
        if error := self._channel_error(channel):
            return error
        if str(params.get("user")) not in self.users:
            return {"ok": False, "error": "user_not_in_channel"}
        if problem := block_kit_error(params):
            return {"ok": False, "error": problem}
        thread_ts = params.get("thread_ts")
        if thread_ts and (channel, str(thread_ts)) not in self.messages:
            return {"ok": False, "error": "thread_not_found"}
        return {"ok": True, "message_ts": self._next_ts()}

    def _m_views_open(self, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        view = params.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not isinstance(view, dict):
            return {"ok": False, "error": "invalid_arguments"}
        if problem := view_error(view):
            return {"ok": False, "error": problem}
        opened = {**view, "id": f"V{len(self.views) + 1:08d}"}
        self.views.append(opened)
        return {"ok": True, "view": opened}

    def _m_apps_connections_open(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "url": self.base_url.replace("http", "ws", 1) + "/socket"}

    async def _response_url(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(Call("response_url", body, time.monotonic()))
        return web.Response(text="ok")

    # ---- Socket Mode --------------------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(autoping=True)
        await socket.prepare(request)
        self._sockets.append(socket)
        await socket.send_json({"type": "hello", "num_connections": 1})
        self._connected.set()
        async for frame in socket:
            if frame.type != WSMsgType.TEXT:
                continue
            data = json.loads(frame.data)
            waiter = self._acks.pop(str(data.get("envelope_id")), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(data)
        self._sockets.remove(socket)
        return socket

    async def socket_request(
        self, kind: str, payload: dict[str, Any], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send one Socket Mode envelope to the connected app and wait for its ack."""
        await asyncio.wait_for(self._connected.wait(), timeout)
        envelope_id = uuid.uuid4().hex
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._acks[envelope_id] = waiter
        await self._sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": kind,
                "payload": payload,
                "accepts_response_payload": kind != "events_api",
                "retry_attempt": 0,
                "retry_reason": "",
            }
        )
        return await asyncio.wait_for(waiter, timeout)
