"""Codec server: the Temporal Web UI (or `temporal` CLI) decodes PatchPilot's encrypted payloads.

Implements Temporal's remote codec protocol (POST /encode and /decode with a JSON `Payloads`
body). Every request must carry `Authorization: Bearer <PATCHPILOT_CODEC_SERVER_TOKEN>`, so only
people given that token (or a proxy that adds it for authorised users) can read histories.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"


def build_app(
    codec: PayloadCodec, *, token: str | None, cors_origins: list[str]
) -> web.Application:
    """The codec server: POST /encode and /decode transcode a JSON `Payloads` body with `codec`.

    With a `token`, requests without `Authorization: Bearer <token>` get 401; `cors_origins` are
    the Web UI origins allowed to call from a browser. A body that is not `Payloads` JSON, or a
    payload the codec refuses (e.g. an unknown key id), gets 400 with the reason.
    """

    @web.middleware
    async def cors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        cors = {}
        if origin and origin in cors_origins:
            cors = {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Allow-Credentials": "true",
            }
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=cors)
        if token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return web.json_response(
                    {"error": "missing or wrong bearer token"}, status=401, headers=cors
                )
        response = await handler(request)
        response.headers.update(cors)
        return response

    async def transcode(request: web.Request, encode: bool) -> web.Response:
        try:
            payloads = json_format.Parse(await request.text(), Payloads())
        except json_format.ParseError as error:
            return web.json_response({"error": f"not a Payloads JSON body: {error}"}, status=400)
        try:
            changed = await (codec.encode if encode else codec.decode)(payloads.payloads)
        except Exception as error:  # a wrong key id must answer, not crash the server
            return web.json_response({"error": str(error)}, status=400)
        return web.Response(
            text=json_format.MessageToJson(Payloads(payloads=changed)),
            content_type="application/json",
        )

    async def encode(request: web.Request) -> web.Response:
        return await transcode(request, encode=True)

    async def decode(request: web.Request) -> web.Response:
        return await transcode(request, encode=False)

    app = web.Application(middlewares=[cors_and_auth])
    app.router.add_route("POST", "/encode", encode)
    app.router.add_route("POST", "/decode", decode)
    app.router.add_route("OPTIONS", "/{tail:.*}", encode)  # answered by the middleware
    return app
