"""`patchpilot` command line: worker, start, approve, reject, status, watch, cancel."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.inventory import InventoryError, load_inventory
from bot.progress import query_progress
from bot.settings import Settings, describe_settings_error
from workflows.host_patch import failure_reason
from workflows.models import (
    WORKFLOW_NAME,
    ApprovalDecision,
    HostState,
    RolloutInput,
    RolloutProgress,
    describe_validation_error,
)

T = TypeVar("T")
app = typer.Typer(
    name="patchpilot",
    help="Patch OS packages on fleets of hosts over SSH, with approvals, pilots and health checks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
errors = Console(stderr=True)


class UserError(Exception):
    """A problem the user can fix; printed without a traceback, exit code 2."""


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def _split(values: list[str] | None) -> list[str]:
    items: list[str] = []
    for value in values or []:
        items.extend(part.strip() for part in value.split(",") if part.strip())
    return items


async def _client(settings: Settings) -> Client:
    from bot.worker import connect

    try:
        return await connect(settings)
    except Exception as error:
        raise UserError(
            f"cannot reach Temporal at {settings.temporal_address} (namespace "
            f"{settings.temporal_namespace}): {error}. Set TEMPORAL_ADDRESS."
        ) from None


def build_rollout(raw: dict[str, Any], settings: Settings) -> RolloutInput:
    """Validate at the edge: the model's rules, then the clusters against the inventory."""
    try:
        rollout = RolloutInput.at_edge(raw, payload_encryption=settings.payload_codec() is not None)
    except ValidationError as error:
        raise UserError("invalid rollout:\n" + describe_validation_error(error)) from None
    if settings.inventory is not None:
        try:
            clusters = load_inventory(settings.inventory)
        except InventoryError as error:
            raise UserError(str(error)) from None
        unknown = [name for name in rollout.target_clusters if name not in clusters]
        if unknown:
            raise UserError(
                f"targetClusters: {', '.join(unknown)} not in the inventory {settings.inventory} "
                f"(known: {', '.join(sorted(clusters)) or 'none'})"
            )
    return rollout


def _window(text: str) -> dict[str, Any]:
    parts = [part.strip() for part in text.split("|")]
    if len(parts) not in (2, 3) or not all(parts):
        raise UserError(f"--window {text!r}: expected 'CRON|DURATION[|TIMEZONE]'")
    duration: str | int = int(parts[1]) if parts[1].isdigit() else parts[1]
    window: dict[str, Any] = {"cron": parts[0], "duration": duration}
    if len(parts) == 3:
        window["timezone"] = parts[2]
    return window


def new_rollout_id(clusters: list[str]) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    label = "-".join(clusters)[:40]
    return f"patch-{label}-{stamp}-{secrets.token_hex(2)}"


@app.command()
def worker(
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    log_format: Annotated[str, typer.Option(help="text or json")] = "text",
    metrics_port: Annotated[
        int | None,
        typer.Option(envvar="PATCHPILOT_METRICS_PORT", help="Serve Prometheus metrics here."),
    ] = None,
) -> None:
    """Run a worker for SystemPatchWorkflow and its activities until interrupted.

    Without TEMPORAL_ADDRESS it starts an embedded Temporal dev server (database in
    PATCHPILOT_DATA_DIR) so rollouts survive a restart.
    """
    from bot.embedded import temporal_for
    from bot.observability import configure_logging, start_metrics, worker_options

    configure_logging(log_level, log_format)
    if metrics_port:
        console.print(f"metrics at {start_metrics(metrics_port)}")

    async def main(settings: Settings) -> None:
        from bot.worker import build_worker

        client = await _client(settings)
        console.print(
            f"worker polling task queue [bold]{settings.task_queue}[/] on "
            f"{settings.temporal_address} ({settings.temporal_namespace})"
        )
        await build_worker(client, settings, **worker_options()).run()

    try:
        with temporal_for(Settings(), say=console.print) as settings:
            _run(main(settings))
    except KeyboardInterrupt:
        console.print("worker stopped")


@app.command()
def start(
    clusters_option: Annotated[
        list[str] | None,
        typer.Option("--clusters", "--cluster", "-c", help="Cluster(s) to patch, in order."),
    ] = None,
    more_clusters: Annotated[
        list[str] | None, typer.Argument(help="More clusters (after --clusters).")
    ] = None,
    pilot: Annotated[int | None, typer.Option(help="Pilot hosts per cluster.")] = None,
    approver: Annotated[
        list[str] | None, typer.Option("--approver", "--approvers", help="Approver e-mail(s).")
    ] = None,
    requester: Annotated[str | None, typer.Option(help="Your e-mail.")] = None,
    services: Annotated[str | None, typer.Option(help="Comma-separated services.")] = None,
    update: Annotated[str | None, typer.Option(help="Update command run on each host.")] = None,
    vault_address: Annotated[str | None, typer.Option(help="Vault URL (else VAULT_ADDR).")] = None,
    secret_prefix: Annotated[str | None, typer.Option(help="Vault KV path prefix.")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="Hosts patched at once.")] = None,
    max_failures: Annotated[int | None, typer.Option(help="Host failures tolerated.")] = None,
    approval_timeout: Annotated[
        str | None, typer.Option(help="Seconds or ISO 8601 (default 24 h).")
    ] = None,
    pre_downtime_script: Annotated[list[str] | None, typer.Option()] = None,
    pre_update_script: Annotated[list[str] | None, typer.Option()] = None,
    post_update_script: Annotated[list[str] | None, typer.Option()] = None,
    reboot_policy: Annotated[
        str | None, typer.Option(help="if-required (default), always or never.")
    ] = None,
    reboot_timeout: Annotated[
        str | None, typer.Option(help="Seconds or ISO 8601 to wait for a rebooted host.")
    ] = None,
    update_timeout: Annotated[str | None, typer.Option(help="Seconds or ISO 8601.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Inspect only: pending updates, reboot need.")
    ] = False,
    window: Annotated[
        list[str] | None,
        typer.Option(
            help="Maintenance window 'CRON|DURATION[|TIMEZONE]', e.g. '0 2 * * sat|PT4H|UTC' "
            "(repeatable; default: the clusters' patchpilot_windows)."
        ),
    ] = None,
    window_cutoff: Annotated[
        str | None, typer.Option(help="Start no host with less than this left (default 15 min).")
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", help="Rollout JSON with the spec's field names.")
    ] = None,
    rollout_id: Annotated[str | None, typer.Option("--id", help="Workflow id to use.")] = None,
) -> None:
    """Start a rollout. It waits for an approver before touching any host."""
    settings = Settings()
    raw: dict[str, Any] = {}
    if input_file is not None:
        try:
            raw = json.loads(input_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise UserError(f"--input {input_file}: {error}") from None
        if not isinstance(raw, dict):
            raise UserError(f"--input {input_file}: expected a JSON object")
    clusters = _split(clusters_option) + _split(more_clusters)
    given: dict[str, Any] = {
        "targetClusters": clusters or None,
        "pilotHostCount": pilot,
        "approverEmails": _split(approver) or None,
        "requesterEmail": requester,
        "serviceList": _split([services]) if services is not None else None,
        "updateCommand": update,
        "vaultAddress": vault_address,
        "secretPathPrefix": secret_prefix,
        "maxConcurrency": max_concurrency,
        "maxFailures": max_failures,
        "approvalTimeout": approval_timeout,
        "preDowntimeScripts": pre_downtime_script,
        "preUpdateScripts": pre_update_script,
        "postUpdateScripts": post_update_script,
        "rebootPolicy": reboot_policy,
        "rebootTimeout": reboot_timeout,
        "updateTimeout": update_timeout,
        "dryRun": True if dry_run else None,
        "maintenanceWindows": [_window(text) for text in window] if window else None,
        "windowCutoff": window_cutoff,
    }
    raw.update({key: value for key, value in given.items() if value is not None})
    for duration in ("approvalTimeout", "rebootTimeout", "updateTimeout", "windowCutoff"):
        value = raw.get(duration)
        if isinstance(value, str) and value.isdigit():
            raw[duration] = int(value)
    rollout = build_rollout(raw, settings)
    workflow_id = rollout_id or new_rollout_id(rollout.target_clusters)

    async def main() -> None:
        client = await _client(settings)
        await client.start_workflow(
            WORKFLOW_NAME, rollout, id=workflow_id, task_queue=settings.task_queue
        )

    _run(main())
    console.print(f"Started rollout [bold]{workflow_id}[/]")
    if rollout.dry_run:
        console.print("Dry run: no approval needed, nothing will be changed.")
        console.print(f"  patchpilot result {workflow_id}")
    else:
        console.print(f"It waits for approval by: {', '.join(rollout.approver_emails)}")
        console.print(f"  patchpilot approve {workflow_id} --as <approver e-mail>")
    console.print(f"  patchpilot status {workflow_id}")
    link = settings.ui_link(workflow_id)
    if link:
        console.print(f"  {link}")


def _decide(kind: str, rollout_id: str, approver: str, comment: str) -> None:
    settings = Settings()
    try:
        decision = ApprovalDecision(approver=approver, comment=comment)
    except ValidationError as error:
        raise UserError(describe_validation_error(error).replace("approver:", "--as:")) from None

    async def main() -> str:
        client = await _client(settings)
        handle = client.get_workflow_handle(rollout_id)
        try:
            return await handle.execute_update(kind, decision, result_type=str)
        except WorkflowUpdateFailedError as error:
            raise UserError(f"{kind} refused: {failure_reason(error)}") from None
        except RPCError as error:
            raise UserError(_rpc_message(rollout_id, error)) from None

    console.print(_run(main()))


def _rpc_message(rollout_id: str, error: RPCError) -> str:
    if error.status == RPCStatusCode.NOT_FOUND:
        return f"no rollout with id {rollout_id}"
    if "already completed" in error.message or "completed" in error.message.lower():
        return f"rollout {rollout_id} has already finished; nothing to decide"
    return f"Temporal refused the request for {rollout_id}: {error.message}"


@app.command()
def approve(
    rollout_id: str,
    as_: Annotated[str, typer.Option("--as", help="Your e-mail (must be an approver).")],
    comment: Annotated[str, typer.Option(help="Why.")] = "",
) -> None:
    """Approve a rollout (you must be an approver, and not its requester)."""
    _decide("approve", rollout_id, as_, comment)


@app.command()
def reject(
    rollout_id: str,
    as_: Annotated[str, typer.Option("--as", help="Your e-mail (must be an approver).")],
    comment: Annotated[str, typer.Option(help="Why.")] = "",
) -> None:
    """Reject a rollout: no host is touched."""
    _decide("reject", rollout_id, as_, comment)


async def fetch_progress(client: Client, rollout_id: str) -> tuple[RolloutProgress, str]:
    handle = client.get_workflow_handle(rollout_id)
    description = await handle.describe()
    progress = await query_progress(client, rollout_id)
    status = description.status.name if description.status else "UNKNOWN"
    return progress, status


def render_progress(progress: RolloutProgress, status: str) -> Table:
    table = Table(
        title=f"{progress.rollout_id} — {progress.phase.value} (workflow {status.lower()})",
        caption=progress.message or "",
    )
    for column in ("cluster", "host", "pilot", "state", "step", "started", "finished", "note"):
        table.add_column(column)
    colours = {
        HostState.DONE: "green",
        HostState.FAILED: "red",
        HostState.RUNNING: "yellow",
        HostState.SKIPPED: "dim",
        HostState.PENDING: "",
    }
    for cluster in progress.clusters:
        for host in cluster.hosts:
            note = host.failure_reason or ""
            if host.in_maintenance and host.state != HostState.RUNNING:
                note = (note + " [in maintenance]").strip()
            table.add_row(
                cluster.name,
                host.name,
                "yes" if host.pilot else "",
                f"[{colours[host.state]}]{host.state.value}[/]"
                if colours[host.state]
                else "pending",
                host.step or "",
                host.started_at.strftime("%H:%M:%S") if host.started_at else "",
                host.finished_at.strftime("%H:%M:%S") if host.finished_at else "",
                note,
            )
        if cluster.note:
            table.add_row(cluster.name, "", "", "", "", "", "", cluster.note)
    return table


@app.command()
def status(
    rollout_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the progress as JSON.")] = False,
) -> None:
    """Show a rollout's phase and every host's state and step."""
    settings = Settings()

    async def main() -> tuple[RolloutProgress, str]:
        client = await _client(settings)
        try:
            return await fetch_progress(client, rollout_id)
        except RPCError as error:
            raise UserError(_rpc_message(rollout_id, error)) from None

    progress, state = _run(main())
    if as_json:
        # Every field, defaults too: a stable shape for scripts (the wire form leaves them out).
        full = progress.model_dump(mode="json", context={"full": True})
        print(json.dumps({"status": state, "progress": full}, indent=2))
    else:
        console.print(render_progress(progress, state))


@app.command()
def watch(
    rollout_id: str,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
) -> None:
    """Follow a rollout live until it ends; exit 0 only if it succeeded."""
    from rich.live import Live

    settings = Settings()

    async def main() -> tuple[RolloutProgress, str]:
        client = await _client(settings)
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                try:
                    progress, state = await fetch_progress(client, rollout_id)
                except RPCError as error:
                    raise UserError(_rpc_message(rollout_id, error)) from None
                live.update(render_progress(progress, state))
                if state != WorkflowExecutionStatus.RUNNING.name:
                    return progress, state
                await asyncio.sleep(interval)

    progress, _ = _run(main())
    if progress.phase.value != "succeeded":
        raise typer.Exit(1)


@app.command()
def cancel(rollout_id: str) -> None:
    """Cancel a rollout: no new host starts; hosts in progress finish their steps."""
    settings = Settings()

    async def main() -> None:
        client = await _client(settings)
        try:
            await client.get_workflow_handle(rollout_id).cancel()
        except RPCError as error:
            raise UserError(_rpc_message(rollout_id, error)) from None

    _run(main())
    console.print(f"cancellation requested for {rollout_id}")


@app.command()
def result(rollout_id: str) -> None:
    """Wait for a rollout to end and print its summary; exit 1 unless it succeeded."""
    from activities.notify import summary_text
    from workflows.models import RolloutSummary

    settings = Settings()

    async def main() -> RolloutSummary:
        client = await _client(settings)
        handle = client.get_workflow_handle(rollout_id, result_type=RolloutSummary)
        try:
            return await handle.result()
        except WorkflowFailureError as error:
            details = getattr(error.cause, "details", None)
            if details:
                return RolloutSummary.model_validate(details[0])
            raise UserError(f"rollout {rollout_id} failed: {failure_reason(error)}") from None

    summary = _run(main())
    console.print(summary_text(summary), highlight=False, markup=False)
    if summary.phase.value not in ("succeeded", "dry-run-done"):
        raise typer.Exit(1)


# ---- demo and config check (bot/cli/demo.py, bot/cli/config_check.py) ------------------------


@app.command()
def demo(
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Approve as the demo approver, no question.")
    ] = False,
    fail_host: Annotated[
        str | None,
        typer.Option(help="Make the update fail on this host (e.g. a2) to see the failure path."),
    ] = None,
    hosts_per_cluster: Annotated[
        int, typer.Option(help="Lab hosts in each of the 2 clusters.")
    ] = 3,
    lab: Annotated[
        str,
        typer.Option(help="sshd (real OpenSSH hosts), asyncssh (built-in stand-in) or auto."),
    ] = "auto",
    pilot: Annotated[int, typer.Option(help="Pilot hosts per cluster.")] = 1,
    max_concurrency: Annotated[int, typer.Option(help="Hosts patched at once after pilots.")] = 2,
    ui_port: Annotated[
        int | None, typer.Option(help="Temporal Web UI port (default 8233, else a free one).")
    ] = None,
    headless: Annotated[bool, typer.Option(help="No Temporal Web UI.")] = False,
    data_dir: Annotated[
        Path | None, typer.Option(help="Demo state and logs (default ~/.patchpilot/demo).")
    ] = None,
    address_prefix: Annotated[
        str, typer.Option(help="Loopback prefix of the lab hosts.")
    ] = "127.0.1.",
    keep_open: Annotated[
        bool | None,
        typer.Option(
            "--keep-open/--no-keep-open",
            help="Keep the servers up after the summary until Enter (default: on a terminal).",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve the worker's Prometheus metrics on this port.")
    ] = None,
    log_format: Annotated[str, typer.Option(help="demo.log as text or json.")] = "text",
) -> None:
    """Run a complete rollout on embedded Temporal, OpenBao and a lab of sshd hosts."""
    from bot.cli.demo import DemoOptions, run_demo

    options = DemoOptions(
        auto_approve=auto_approve,
        fail_host=fail_host,
        hosts_per_cluster=hosts_per_cluster,
        pilots=pilot,
        max_concurrency=max_concurrency,
        ui_port=ui_port,
        headless=headless,
        data_dir=data_dir,
        address_prefix=address_prefix,
        keep_open=keep_open,
        metrics_port=metrics_port,
        log_format=log_format,
        lab=lab,
    )
    raise typer.Exit(run_demo(options, console))


config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("check")
def config_check(
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only these checks: temporal, vault, inventory, known_hosts, smtp, slack, "
            "codec, notifications (repeatable or comma-separated)."
        ),
    ] = None,
    secret_prefix: Annotated[
        str, typer.Option(help="Vault KV path prefix of the SSH keys to probe.")
    ] = "patch-deploy",  # noqa: S107 - a path, not a password
    timeout: Annotated[float, typer.Option(help="Seconds allowed for each check.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Validate every setting and print a table with the fix for each problem; exit 1 on any."""
    from bot.cli.config_check import print_json, print_report, run_checks

    settings = Settings()  # a bad setting: main() names it
    try:
        checks = run_checks(
            settings, only=_split(only), secret_prefix=secret_prefix, timeout=timeout
        )
        results = _run(checks)
    except ValueError as error:
        raise UserError(str(error)) from None
    raise typer.Exit(print_json(results) if as_json else print_report(results, console))


@app.command()
def bot(
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "info",
    log_format: Annotated[str, typer.Option(help="text or json")] = "text",
    host: Annotated[str, typer.Option(help="HTTP mode: address to listen on.")] = "0.0.0.0",
    metrics_port: Annotated[
        int | None,
        typer.Option(envvar="PATCHPILOT_METRICS_PORT", help="Serve Prometheus metrics here."),
    ] = None,
) -> None:
    """Run the Slack bot (Socket Mode if SLACK_APP_TOKEN, else HTTP mode) and an embedded worker.

    Without TEMPORAL_ADDRESS it starts an embedded Temporal dev server, as `worker` does.
    """
    from bot.embedded import temporal_for
    from bot.observability import configure_logging, start_metrics, worker_options

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
    configure_logging(log_level, log_format)
    if metrics_port:
        console.print(f"metrics at {start_metrics(metrics_port)}")

    async def main(settings: Settings) -> None:
        from bot.slack.app import run_bot

        await _client(settings)  # a clear error when Temporal is unreachable
        mode = (
            "Socket Mode"
            if settings.slack_app_token
            else f"HTTP mode on {host}:{settings.http_port}/slack/events"
        )
        console.print(
            f"Slack bot ({mode}) with a worker on task queue [bold]{settings.task_queue}[/] on "
            f"{settings.temporal_address} ({settings.temporal_namespace})"
        )
        await run_bot(settings, host=host, worker_options=worker_options())

    try:
        with temporal_for(first, say=console.print) as settings:
            _run(main(settings))
    except KeyboardInterrupt:
        console.print("bot stopped")


@app.command("codec-server")
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


schedule_app = typer.Typer(help="Recurring rollouts (Temporal Schedules, overlap: skip).")
app.add_typer(schedule_app, name="schedule")


@schedule_app.command("create")
def schedule_create(
    schedule_id: Annotated[str, typer.Argument(help="Schedule id, e.g. weekly-cluster-a.")],
    input_file: Annotated[
        Path, typer.Option("--input", help="Rollout JSON (the spec's field names).")
    ],
    cron: Annotated[str, typer.Option(help="When to start a rollout, e.g. '0 1 * * sat'.")],
    timezone: Annotated[str, typer.Option(help="IANA time zone of the cron.")] = "UTC",
    pre_approved_by: Annotated[
        str | None,
        typer.Option(help="Standing approval by this approver (recorded in each run's history)."),
    ] = None,
    note: Annotated[str, typer.Option(help="Why this schedule exists.")] = "",
) -> None:
    """Create a schedule that starts SystemPatchWorkflow with a stored input."""
    from bot import schedules

    settings = Settings()
    try:
        raw = json.loads(input_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"--input {input_file}: {error}") from None
    if pre_approved_by:
        raw["preApprovedBy"] = {"approver": pre_approved_by, "comment": note}
    rollout = build_rollout(raw, settings)
    if rollout.pre_approved_by:
        who = rollout.pre_approved_by.approver
        if who == rollout.requester_email:
            raise UserError(f"--pre-approved-by: {who} is the requester and cannot approve")
        if who not in rollout.approver_emails:
            raise UserError(f"--pre-approved-by: {who} is not in approverEmails")
    try:
        schedules.check_cron(cron, timezone)
    except ValueError as error:
        raise UserError(f"--cron/--timezone: {error}") from None

    async def main() -> None:
        client = await _client(settings)
        try:
            await schedules.create(
                client,
                schedule_id,
                rollout,
                cron=cron,
                timezone=timezone,
                task_queue=settings.task_queue,
                note=note,
            )
        except RPCError as error:
            raise UserError(f"cannot create schedule {schedule_id}: {error.message}") from None

    _run(main())
    approval = (
        f"pre-approved by {pre_approved_by}" if pre_approved_by else "each run needs approval"
    )
    console.print(f"Schedule [bold]{schedule_id}[/]: '{cron}' ({timezone}), {approval}")


@schedule_app.command("list")
def schedule_list() -> None:
    """List schedules with their next runs."""
    from bot import schedules

    settings = Settings()

    async def main() -> list[schedules.ScheduleRow]:
        return await schedules.list_rows(await _client(settings))

    table = Table(title="PatchPilot schedules")
    for column in ("id", "cron", "time zone", "state", "next runs", "recent runs", "note"):
        table.add_column(column)
    for found in _run(main()):
        table.add_row(
            found.schedule_id,
            found.cron,
            found.timezone,
            "paused" if found.paused else "active",
            "\n".join(f"{moment:%a %Y-%m-%d %H:%M} UTC" for moment in found.next_runs),
            "\n".join(found.recent_runs),
            found.note,
        )
    console.print(table)


def _schedule_action(schedule_id: str, action: str, note: str = "") -> None:
    settings = Settings()

    async def main() -> None:
        handle = (await _client(settings)).get_schedule_handle(schedule_id)
        try:
            if action == "pause":
                await handle.pause(note=note or "paused with patchpilot")
            elif action == "unpause":
                await handle.unpause(note=note or "unpaused with patchpilot")
            elif action == "trigger":
                await handle.trigger()
            else:
                await handle.delete()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise UserError(f"no schedule with id {schedule_id}") from None
            raise UserError(f"{action} {schedule_id}: {error.message}") from None

    _run(main())
    console.print(
        f"schedule {schedule_id}: {action}d"
        if action != "trigger"
        else f"schedule {schedule_id}: a run was started now"
    )


@schedule_app.command("pause")
def schedule_pause(schedule_id: str, note: str = "") -> None:
    """Pause a schedule (no new runs until unpaused)."""
    _schedule_action(schedule_id, "pause", note)


@schedule_app.command("unpause")
def schedule_unpause(schedule_id: str, note: str = "") -> None:
    """Resume a paused schedule."""
    _schedule_action(schedule_id, "unpause", note)


@schedule_app.command("trigger")
def schedule_trigger(schedule_id: str) -> None:
    """Start one run now (still skipped if a run is in progress)."""
    _schedule_action(schedule_id, "trigger")


@schedule_app.command("delete")
def schedule_delete(schedule_id: str) -> None:
    """Delete a schedule; runs already started go on."""
    _schedule_action(schedule_id, "delete")


@app.command("approval-server")
def approval_server(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "0.0.0.0",
    port: Annotated[
        int | None, typer.Option(help="Port (default PATCHPILOT_APPROVAL_PORT, 3001).")
    ] = None,
) -> None:
    """Serve the pages behind the signed Approve / Reject links of e-mails and Teams cards.

    Needs PATCHPILOT_LINK_SECRET (the same as the workers') and PATCHPILOT_PUBLIC_URL (the address
    approvers reach this server at, e.g. https://patchpilot.example.com behind a TLS proxy).
    """
    from activities.notify.links import LinkSigner
    from bot.web.approvals import start_link_server

    settings = Settings()
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
        client = await _client(settings)
        # No access log: the request line carries the link's token.
        runner = await start_link_server(client, settings, host, listen)
        assert runner is not None
        console.print(
            f"approval links served on {host}:{listen} (public URL {settings.public_url}); "
            f"Temporal {settings.temporal_address} ({settings.temporal_namespace})"
        )
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        _run(main())
    except KeyboardInterrupt:
        console.print("approval server stopped")


def main(argv: list[str] | None = None) -> None:
    """Entry point. Exits with os._exit so temporalio's threads cannot abort a finished command."""
    code = 0
    try:
        returned = app(args=argv, standalone_mode=False)
        if isinstance(returned, int):
            code = returned
    except UserError as error:
        errors.print(f"[red]error:[/] {error}", highlight=False)
        code = 2
    except (ValidationError, SettingsError) as error:
        if isinstance(error, ValidationError) and error.title != "Settings":
            raise
        errors.print(f"[red]error:[/] {escape(describe_settings_error(error))}", highlight=False)
        code = 2
    except typer.Exit as done:
        code = done.exit_code
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except typer.Abort:
        code = 130
    except Exception as error:  # usage errors (typer bundles its own click)
        show = getattr(error, "show", None)
        exit_code = getattr(error, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            code = exit_code
        else:
            raise
    sys.stdout.flush()
    sys.stderr.flush()
    # temporalio/sdk-python#300: teardown can abort with exit 134 after the work is done.
    os._exit(code)


if __name__ == "__main__":
    main()
