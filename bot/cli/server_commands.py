"""The long-running processes: `worker`, `bot`, `codec-server` and `approval-server`.

`worker` and `bot` start an embedded Temporal dev server when TEMPORAL_ADDRESS is not set
(`bot.embedded.temporal_for`); each refuses to start, with the setting to fix, when its own
configuration is incomplete.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import typer

from bot.cli.common import (
    NoPolicy,
    UserError,
    connect,
    console,
    require_policy,
    run,
    stop_on_sigterm,
)
from bot.settings import Settings
from bot.temporal_config import temporal_target

LogLevel = Annotated[str, typer.Option(help="debug, info, warning, error or critical")]
LogFormat = Annotated[str, typer.Option(help="text or json")]
MetricsPort = Annotated[
    int | None,
    typer.Option(
        envvar="PATCHPILOT_METRICS_PORT",
        min=0,
        max=65535,
        help="Serve Prometheus metrics here (0: off).",
    ),
]


def _serve(
    settings: Callable[[], Settings],
    serve: Callable[[Settings], Coroutine[Any, Any, None]],
    *,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    stopped: str,
) -> None:
    """Log as asked, serve metrics if asked, then run `serve` with the `settings()` against
    Temporal (embedded when TEMPORAL_ADDRESS is unset) until Ctrl-C or SIGTERM, which print
    `stopped`."""
    from bot.embedded import temporal_for
    from bot.observability import configure_logging, start_metrics

    try:
        configure_logging(log_level, log_format)
    except ValueError as error:
        raise UserError(f"--log-level {log_level} / --log-format {log_format}: {error}") from None
    if metrics_port:
        try:
            console.print(f"metrics at {start_metrics(metrics_port)}")
        except ValueError as error:  # the SDK's runtime could not listen there
            raise UserError(f"--metrics-port {metrics_port}: {error}") from None
    try:
        stop_on_sigterm()
        with temporal_for(settings(), say=console.print) as connected:
            run(serve(connected), sigterm=True)
    except KeyboardInterrupt:
        console.print(stopped)


def require_inventory(settings: Settings) -> None:
    """UserError unless PATCHPILOT_INVENTORY is set: any worker on the task queue picks up any
    rollout, and one without an inventory would fail other people's rollouts ("no inventory
    configured") rather than refuse to start."""
    if settings.inventory is None:
        raise UserError(
            "PATCHPILOT_INVENTORY is not set: the worker resolves clusters and checks every "
            'host against it (an Ansible inventory source; see README "Inventory")'
        )


def worker(
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
    metrics_port: MetricsPort = None,
    no_policy: NoPolicy = False,
) -> None:
    """Run a worker for SystemPatchWorkflow and its activities until interrupted.

    Without TEMPORAL_ADDRESS it starts an embedded Temporal dev server (database in
    PATCHPILOT_DATA_DIR) so rollouts survive a restart. Needs PATCHPILOT_INVENTORY and
    PATCHPILOT_POLICY (or --no-policy).
    """
    first = Settings()
    require_inventory(first)
    require_policy(first, no_policy)

    async def main(settings: Settings) -> None:
        from activities.inventory import prefetch
        from bot.observability import worker_options
        from bot.worker import build_worker

        client = await connect(settings)
        reading = asyncio.create_task(prefetch(settings.inventory))  # before the first rollout
        console.print(
            f"worker polling task queue [bold]{settings.task_queue}[/] on "
            f"{temporal_target(settings).describe()}"
        )
        await build_worker(client, settings, **worker_options()).run()
        await reading

    _serve(
        Settings,
        main,
        log_level=log_level,
        log_format=log_format,
        metrics_port=metrics_port,
        stopped="worker stopped",
    )


def bot(
    log_level: LogLevel = "info",
    log_format: LogFormat = "text",
    host: Annotated[str, typer.Option(help="HTTP mode: address to listen on.")] = "0.0.0.0",
    metrics_port: MetricsPort = None,
    no_policy: NoPolicy = False,
) -> None:
    """Run the Slack bot (Socket Mode if SLACK_APP_TOKEN, else HTTP mode) and an embedded worker.

    Without TEMPORAL_ADDRESS it starts an embedded Temporal dev server, as `worker` does. Needs
    PATCHPILOT_POLICY and, under it, PATCHPILOT_SIGNING_KEY to sign the clicks it verified.
    """
    first = Settings()
    if first.slack_bot_token is None:
        raise UserError("SLACK_BOT_TOKEN is not set (the bot token, xoxb-...)")
    if first.slack_app_token is None and first.slack_signing_secret is None:
        raise UserError(
            "set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode, "
            "POST /slack/events on PATCHPILOT_HTTP_PORT)"
        )
    from bot.slack.config import DefaultsError, load_defaults

    try:
        load_defaults(first.slack_defaults)  # a clear error now rather than a traceback later
    except DefaultsError as error:
        raise UserError(f"PATCHPILOT_SLACK_DEFAULTS: {error}") from None
    require_policy(first, no_policy)
    if first.policy is not None and first.signing_key is None:
        raise UserError(
            "PATCHPILOT_SIGNING_KEY is not set: under a policy the bot signs each Approve or "
            "Reject click it verified with its own key (listed under the policy's frontends)"
        )

    require_inventory(first)  # its embedded worker takes rollouts as any worker does

    async def main(settings: Settings) -> None:
        from bot.observability import worker_options
        from bot.slack.runner import run_bot

        await connect(settings)  # a clear error when Temporal is unreachable
        mode = (
            "Socket Mode"
            if settings.slack_app_token
            else f"HTTP mode on {host}:{settings.http_port}/slack/events"
        )
        console.print(
            f"Slack bot ({mode}) with a worker on task queue [bold]{settings.task_queue}[/] on "
            f"{temporal_target(settings).describe()}"
        )
        await run_bot(settings, host=host, worker_options=worker_options())

    _serve(
        lambda: first,
        main,
        log_level=log_level,
        log_format=log_format,
        metrics_port=metrics_port,
        stopped="bot stopped",
    )


def codec_server(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8081,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Web UI origin allowed to call (repeatable).")
    ] = None,
    allow_unauthenticated: Annotated[
        bool, typer.Option(help="Serve without a bearer token (local use only).")
    ] = False,
) -> None:
    """Serve /encode and /decode so the Temporal Web UI can show encrypted payloads."""
    from aiohttp import web

    from bot.codec import CodecConfigError
    from bot.web.codec_server import build_app

    settings = Settings()
    try:
        codec = settings.payload_codec()
    except CodecConfigError as error:
        raise UserError(str(error)) from None
    if codec is None:
        raise UserError("no payload encryption configured: set PATCHPILOT_CODEC_KEYS")
    token = os.environ.get("PATCHPILOT_CODEC_SERVER_TOKEN") or None
    if token is None and not allow_unauthenticated:
        raise UserError(
            "set PATCHPILOT_CODEC_SERVER_TOKEN (callers send 'Authorization: Bearer <token>'), "
            "or pass --allow-unauthenticated for local use"
        )
    origins = cors_origin or ["http://localhost:8233"]
    console.print(f"codec server on http://{host}:{port} (CORS: {', '.join(origins)})")
    web.run_app(
        build_app(codec, token=token, cors_origins=origins), host=host, port=port, print=None
    )


def approval_server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[
        int | None, typer.Option(help="Port (default PATCHPILOT_APPROVAL_PORT, 3001).")
    ] = None,
    no_policy: NoPolicy = False,
) -> None:
    """Serve the pages behind the signed Approve / Reject links of e-mails.

    Needs PATCHPILOT_LINK_SECRET (the same as the workers') and PATCHPILOT_PUBLIC_URL (the address
    approvers reach this server at, e.g. https://patchpilot.example.com behind a TLS proxy), and
    PATCHPILOT_POLICY with PATCHPILOT_SIGNING_KEY and PATCHPILOT_INVENTORY: it signs each decision
    of a link it verified, as PATCHPILOT_SIGNER (default "links", a `frontends` name).
    """
    from activities.notify.links import LinkSigner
    from bot.web.approvals import start_link_server

    settings = Settings()
    require_policy(settings, no_policy)
    if settings.policy is not None and (settings.signing_key is None or not settings.inventory):
        raise UserError(
            "set PATCHPILOT_SIGNING_KEY and PATCHPILOT_INVENTORY: under a policy the approval "
            "server signs each decision of a link it verified with its own key (listed under "
            f"the policy's frontends as {settings.signer or 'links'!r}), for the digest of what "
            "runs computed from its own inventory"
        )
    if settings.link_secret is None or not settings.public_url:
        raise UserError(
            "set PATCHPILOT_LINK_SECRET (shared with the workers) and PATCHPILOT_PUBLIC_URL "
            "(where approvers reach this server)"
        )
    try:
        LinkSigner(settings.link_secret.get_secret_value().encode())
    except ValueError as error:
        raise UserError(f"PATCHPILOT_LINK_SECRET: {error}") from None
    listen = port or settings.approval_port

    async def main() -> None:
        client = await connect(settings)
        # No access log: the request line carries the link's token.
        runner = await start_link_server(client, settings, host, listen)
        assert runner is not None
        signing = f"signing as {settings.signer or 'links'}" if settings.policy else "unsigned"
        console.print(
            f"approval links served on {host}:{listen} (public URL {settings.public_url}); "
            f"Temporal {temporal_target(settings).describe()}; decisions {signing}"
        )
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    stop_on_sigterm()
    try:
        run(main(), sigterm=True)
    except KeyboardInterrupt:
        console.print("approval server stopped")
