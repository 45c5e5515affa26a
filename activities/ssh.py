"""Running commands on hosts over SSH with verified host keys, timeouts and remote kill."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
from temporalio.exceptions import ApplicationError

from activities.vault import SshCredentials
from workflows.models import HostTarget

# The remote shell is a session leader (sshd calls setsid), so its pid is also its process
# group: printing it first lets a timed-out or cancelled command be killed with its children.
PID_MARKER = "patchpilot-pid="
_PID_LINE = re.compile(rf"^{PID_MARKER}(\d+)\n?", re.MULTILINE)
OUTPUT_TAIL = 2000


def wrap_command(command: str) -> str:
    return f"echo {PID_MARKER}$$ >&2; {command}"


def unwrap_command(logged: str) -> str:
    """What the operator's command was, given what the host received."""
    prefix = f"echo {PID_MARKER}$$ >&2; "
    return logged.removeprefix(prefix)


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def tail(self) -> str:
        text = (self.stderr.strip() or self.stdout.strip())[-OUTPUT_TAIL:]
        return text or "(no output)"


def _where(host: HostTarget) -> str:
    return f"{host.name} ({host.address}:{host.port})"


class HostSession:
    """One SSH connection to one host; several commands may run over it."""

    def __init__(
        self,
        host: HostTarget,
        connection: asyncssh.SSHClientConnection,
        *,
        reconnect: Callable[[], Awaitable[asyncssh.SSHClientConnection]] | None = None,
    ) -> None:
        self.host = host
        self._connection = connection
        self._reconnect = reconnect

    async def run(
        self,
        command: str,
        timeout: float,
        *,
        heartbeat: Callable[[], None] | None = None,
        heartbeat_every: float = 5.0,
    ) -> CommandResult:
        """Run `command`; on timeout or cancellation kill it (and its children) on the host."""
        try:
            process = await self._open(command)
        except (asyncssh.Error, OSError) as error:
            # Nothing ran: safe to retry, unlike a connection lost mid-command.
            raise ApplicationError(
                f"lost the SSH connection to {_where(self.host)} before running a command: {error}",
                type="SshChannelFailed",
            ) from None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        remote_pid: list[int] = []
        stdout_task = asyncio.ensure_future(process.stdout.read())
        stderr_task = asyncio.ensure_future(self._read_stderr(process, remote_pid))
        waiter = asyncio.ensure_future(process.wait_closed())
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait({waiter}, timeout=min(heartbeat_every, remaining))
                if done:
                    waiter.result()
                    break
                if heartbeat:
                    heartbeat()
            stdout = await asyncio.wait_for(stdout_task, timeout=10)
            stderr = await asyncio.wait_for(stderr_task, timeout=10)
        except TimeoutError:
            await self._kill(process, remote_pid)
            raise ApplicationError(
                f"command on {_where(self.host)} did not finish within {timeout:g}s and was "
                f"killed on the host: {command[:200]}",
                type="CommandTimedOut",
                non_retryable=True,
            ) from None
        except asyncio.CancelledError:
            await asyncio.shield(self._kill(process, remote_pid))
            raise
        except (asyncssh.Error, OSError) as error:
            raise ApplicationError(
                f"lost the SSH connection to {_where(self.host)} while running {command[:200]}: "
                f"{error}; the command's outcome is unknown",
                type="SshConnectionLost",
            ) from None
        finally:
            for task in (stdout_task, stderr_task, waiter):
                task.cancel()
        exit_status = process.exit_status
        if exit_status is None or exit_status < 0:
            # Killed by a signal, or the channel closed without a status: never a success.
            exit_status = 255
        return CommandResult(
            command=command, exit_status=exit_status, stdout=str(stdout), stderr=str(stderr)
        )

    @staticmethod
    async def _read_stderr(process: asyncssh.SSHClientProcess[str], pid: list[int]) -> str:
        first = await process.stderr.readline()
        match = _PID_LINE.match(first)
        if match:
            pid.append(int(match.group(1)))
            first = ""
        return first + await process.stderr.read()

    async def _open(self, command: str) -> asyncssh.SSHClientProcess[str]:
        try:
            return await self._connection.create_process(
                wrap_command(command), stdin=asyncssh.DEVNULL
            )
        except (asyncssh.Error, OSError):
            if self._reconnect is None:
                raise
        # A pooled connection that died since its last use: one fresh connection, once.
        self._connection = await self._reconnect()
        return await self._connection.create_process(wrap_command(command), stdin=asyncssh.DEVNULL)

    async def _kill(self, process: asyncssh.SSHClientProcess[str], pid: list[int]) -> None:
        if pid:
            target = pid[0]
            # Kill the command's whole process group (its children too), found from its pid.
            # `kill -SIG -PGID` without `--`: dash (Debian's sh) rejects `--` in its builtin.
            kill = (
                f"g=$(ps -o pgid= -p {target} 2>/dev/null | tr -d ' '); g=${{g:-{target}}}; "
                f"kill -TERM -$g 2>/dev/null; kill -TERM {target} 2>/dev/null; sleep 1; "
                f"kill -KILL -$g 2>/dev/null; kill -KILL {target} 2>/dev/null; true"
            )
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.run(kill, check=False), timeout=15)
        with contextlib.suppress(Exception):
            process.close()


@dataclass
class _Pooled:
    connection: asyncssh.SSHClientConnection
    last_used: float
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class SshRunner:
    """Opens verified SSH connections. Host keys are always checked against `known_hosts`.

    Connections are kept per host (and user and key) in worker memory for `idle_seconds`, so a
    host's steps share one handshake; a connection that died is replaced before a command starts,
    never while one runs.
    """

    def __init__(
        self, known_hosts: Path, *, connect_timeout: float = 15.0, idle_seconds: float = 120.0
    ) -> None:
        self._known_hosts = known_hosts
        self._connect_timeout = connect_timeout
        self._idle_seconds = idle_seconds
        self._pool: dict[tuple[str, int, str, str], _Pooled] = {}
        self._locks: dict[tuple[str, int, str, str], asyncio.Lock] = {}
        self.handshakes = 0  # benchmarks count these

    async def _connect(
        self, host: HostTarget, username: str, credentials: SshCredentials
    ) -> asyncssh.SSHClientConnection:
        if not self._known_hosts.is_file():
            raise ApplicationError(
                f"known_hosts file {self._known_hosts} does not exist: set PATCHPILOT_KNOWN_HOSTS "
                "to a file holding the hosts' keys (host key checking cannot be turned off)",
                type="KnownHostsMissing",
                non_retryable=True,
            )
        try:
            key = asyncssh.import_private_key(credentials.private_key)
        except (asyncssh.KeyImportError, ValueError):
            raise ApplicationError(
                f"the private key at {credentials.source_path} is not a valid OpenSSH or PEM key",
                type="BadPrivateKey",
                non_retryable=True,
            ) from None
        self.handshakes += 1
        try:
            return await asyncssh.connect(
                host.address,
                port=host.port,
                username=username,
                client_keys=[key],
                known_hosts=str(self._known_hosts),
                connect_timeout=self._connect_timeout,
                keepalive_interval=15,
                keepalive_count_max=3,
                agent_path=None,
                config=None,
                preferred_auth="publickey",
            )
        except asyncssh.HostKeyNotVerifiable as error:
            raise ApplicationError(
                f"host key of {_where(host)} does not match {self._known_hosts} ({error.reason}); "
                "refusing to connect, no command was run",
                type="HostKeyMismatch",
                non_retryable=True,
            ) from None
        except asyncssh.PermissionDenied:
            raise ApplicationError(
                f"SSH authentication as {username} to {_where(host)} was refused with the key from "
                f"{credentials.source_path}",
                type="SshAuthFailed",
                non_retryable=True,
            ) from None
        except (OSError, asyncssh.Error, TimeoutError) as error:
            if isinstance(error, OSError) and error.errno:
                reason = os.strerror(error.errno)  # "Connection refused", not "Connect call failed"
            else:
                reason = str(error) or type(error).__name__
            raise ApplicationError(
                f"cannot connect to {_where(host)}: {reason}", type="HostUnreachable"
            ) from None

    async def _pooled(
        self, host: HostTarget, username: str, credentials: SshCredentials, *, fresh: bool
    ) -> asyncssh.SSHClientConnection:
        fingerprint = hashlib.sha256(credentials.private_key.encode()).hexdigest()[:16]
        key = (host.address, host.port, username, fingerprint)
        loop = asyncio.get_running_loop()
        self._close_idle(loop.time())
        async with self._locks.setdefault(key, asyncio.Lock()):
            pooled = self._pool.get(key)
            if pooled is not None and (fresh or pooled.closed.is_set()):
                self._discard(key, pooled)
                pooled = None
            if pooled is None:
                connection = await self._connect(host, username, credentials)
                pooled = _Pooled(connection=connection, last_used=loop.time())
                self._pool[key] = pooled
                watcher = asyncio.ensure_future(connection.wait_closed())
                closed = pooled.closed
                watcher.add_done_callback(lambda _: closed.set())
            pooled.last_used = loop.time()
            return pooled.connection

    def _discard(self, key: tuple[str, int, str, str], pooled: _Pooled) -> None:
        if self._pool.get(key) is pooled:
            del self._pool[key]
        pooled.connection.close()

    def _close_idle(self, now: float) -> None:
        for key, pooled in list(self._pool.items()):
            if pooled.closed.is_set() or now - pooled.last_used > self._idle_seconds:
                self._discard(key, pooled)

    def close_all(self) -> None:
        for key, pooled in list(self._pool.items()):
            self._discard(key, pooled)

    @contextlib.asynccontextmanager
    async def session(
        self, host: HostTarget, credentials: SshCredentials
    ) -> AsyncIterator[HostSession]:
        username = host.user or credentials.username or "root"

        async def reconnect() -> asyncssh.SSHClientConnection:
            return await self._pooled(host, username, credentials, fresh=True)

        connection = await self._pooled(host, username, credentials, fresh=False)
        yield HostSession(host, connection, reconnect=reconnect)
