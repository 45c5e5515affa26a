"""Running commands on hosts over SSH with verified host keys, timeouts and remote kill.

Every command runs the same way: stdin closed, no PTY (asyncssh allocates none unless a
`term_type` is given), the non-interactive environment below, through `sudo -n` when the
inventory says `become`, its output read as bytes into a bounded head and tail
(activities/output.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
from temporalio.exceptions import ApplicationError

from activities.known_hosts import KnownHostsFile
from activities.output import HEAD_BYTES, TAIL_BYTES, OutputStreams
from activities.remote_shell import (
    NONINTERACTIVE_ENV,
    PID_LINE,
    PID_MARKER,
    kill_command,
    unwrap_command,
    unwrap_commands,
    wrap_command,
)
from activities.vault import SshCredentials
from workflows.families import FAMILY_VAR, READ_OS_RELEASE, family_of, parse_os_release
from workflows.models import HostTarget

__all__ = [
    "NONINTERACTIVE_ENV",
    "PID_MARKER",
    "CommandResult",
    "HostSession",
    "SshRunner",
    "unwrap_command",
    "unwrap_commands",
    "wrap_command",
]

OUTPUT_TAIL = 2000
# AES-GCM before asyncssh's default first choice, ChaCha20-Poly1305: every host offers it
# (OpenSSH's defaults since 6.2) and, in asyncssh, it is one call into OpenSSL per packet where
# ChaCha20-Poly1305 builds two cipher contexts and a MAC in Python for each (1.0-1.2 vs 0.8 ms of
# worker CPU per command on the lab; issue 16). The rest of asyncssh's defaults follow, in order.
ENCRYPTION_ALGS = ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com"] + [
    alg.decode()
    for alg in asyncssh.encryption.get_default_encryption_algs()
    if alg not in (b"aes128-gcm@openssh.com", b"aes256-gcm@openssh.com")
]


@dataclass(frozen=True)
class CommandResult:
    """A finished command: its exit status and its output, decoded leniently and cut to a bounded
    head and tail (`stdout_complete` / `stderr_complete` say whether anything was cut)."""

    command: str
    exit_status: int
    stdout: str
    stderr: str
    stdout_complete: bool = True
    stderr_complete: bool = True

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def tail(self) -> str:
        """The end of stderr (else stdout), at most OUTPUT_TAIL characters, for messages."""
        text = (self.stderr.strip() or self.stdout.strip())[-OUTPUT_TAIL:]
        return text or "(no output)"


def _exit_status(status: int | None) -> int:
    # Killed by a signal (< 0), or the channel closed without a status: never a success.
    return 255 if status is None or status < 0 else status


def _where(host: HostTarget) -> str:
    return f"{host.name} ({host.address}:{host.port})"


class _WaitsForInput(Exception):
    """The command keeps asking a question (activities/output.py PromptWatch)."""


class HostSession:
    """One SSH connection to one host; several commands may run over it.

    With `become_user`, every command (and the kill of a timed-out one) runs through `sudo -n`.
    """

    def __init__(
        self,
        host: HostTarget,
        connection: asyncssh.SSHClientConnection,
        *,
        reconnect: Callable[[], Awaitable[asyncssh.SSHClientConnection]] | None = None,
        become_user: str | None = None,
        families: dict[tuple[str, int], str] | None = None,
    ) -> None:
        self.host = host
        self.become_user = become_user
        # Host (address, port) -> OS family, shared by a runner's sessions (set by the doctor).
        self._families = {} if families is None else families
        self._connection = connection
        self._reconnect = reconnect

    async def run(
        self,
        command: str,
        timeout: float,
        *,
        what: str = "command",
        heartbeat: Callable[[], None] | None = None,
        heartbeat_every: float = 5.0,
        head: int = HEAD_BYTES,
        tail: int = TAIL_BYTES,
    ) -> CommandResult:
        """Run `command` for at most `timeout` seconds; on timeout or cancellation kill it (and
        its children) on the host. Only `head` + `tail` bytes of each stream are kept.

        Raises ApplicationError: `SshChannelFailed` (nothing ran, retryable), `CommandTimedOut`
        (non-retryable, named by `what`), `SshConnectionLost` (outcome unknown).
        """
        if FAMILY_VAR in command and self.family is None:
            await self._read_family(timeout)
        try:
            process = await self._open(command)
        except (asyncssh.Error, OSError) as error:
            # Nothing ran: safe to retry, unlike a connection lost mid-command.
            raise ApplicationError(
                f"lost the SSH connection to {_where(self.host)} before running a command: {error}",
                type="SshChannelFailed",
            ) from None
        streams = OutputStreams(process, head, tail, PID_LINE)
        try:
            await self._wait(process, streams, timeout, heartbeat, heartbeat_every)
            await streams.finish(timeout=10)
        except (_WaitsForInput, TimeoutError) as stopped:
            await self._kill(process, streams.remote_pid)
            raise self._stopped(stopped, what, command, timeout, streams.prompt) from None
        except asyncio.CancelledError:
            await asyncio.shield(self._kill(process, streams.remote_pid))
            raise
        except (asyncssh.Error, OSError) as error:
            raise ApplicationError(
                f"lost the SSH connection to {_where(self.host)} while running {command[:200]}: "
                f"{error}; the command's outcome is unknown",
                type="SshConnectionLost",
            ) from None
        finally:
            streams.cancel()
        return CommandResult(
            command=command,
            exit_status=_exit_status(process.exit_status),
            stdout=streams.stdout.text(),
            stderr=streams.stderr.text(),
            stdout_complete=streams.stdout.complete,
            stderr_complete=streams.stderr.complete,
        )

    def _stopped(
        self, why: Exception, what: str, command: str, timeout: float, prompt: str | None
    ) -> ApplicationError:
        """The non-retryable error for a command PatchPilot killed (a retry would end the same)."""
        if isinstance(why, _WaitsForInput):
            return ApplicationError(
                f"{what} on {_where(self.host)} waits for input that never comes (stdin is "
                f"closed): it keeps asking {prompt!r}; it was killed on the host. Make the "
                f"command non-interactive (e.g. -y, --force-confold): {command[:200]}",
                type="CommandWaitsForInput",
                non_retryable=True,
            )
        return self.overran(what, command, timeout)

    def overran(self, what: str, command: str, timeout: float) -> ApplicationError:
        """The non-retryable `CommandTimedOut` for `command` killed on the host after `timeout`
        seconds: by `run`, or by a batch's limit on the host (activities/checks.py)."""
        return ApplicationError(
            f"{what} on {_where(self.host)} did not finish within {timeout:g}s and was "
            f"killed on the host: {command[:200]}",
            type="CommandTimedOut",
            non_retryable=True,
        )

    @staticmethod
    async def _wait(
        process: asyncssh.SSHClientProcess[bytes],
        streams: OutputStreams,
        timeout: float,
        heartbeat: Callable[[], None] | None,
        heartbeat_every: float,
    ) -> None:
        """Until the channel closes, heartbeating meanwhile: TimeoutError at `timeout`,
        _WaitsForInput as soon as the output keeps repeating a question."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        waiter = asyncio.ensure_future(process.wait_closed())
        asking = asyncio.ensure_future(streams.waiting_for_input.wait())
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                done, _ = await asyncio.wait(
                    {waiter, asking},
                    timeout=min(heartbeat_every, remaining),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if waiter in done:
                    waiter.result()
                    return
                if asking in done:
                    raise _WaitsForInput
                if heartbeat:
                    heartbeat()
        finally:
            waiter.cancel()
            asking.cancel()

    @property
    def family(self) -> str | None:
        """The host's OS family ("apt", "dnf", "zypper", "unknown"), None until read."""
        return self._families.get((self.host.address, self.host.port))

    @family.setter
    def family(self, family: str) -> None:
        if len(self._families) > 100_000:
            self._families.clear()
        self._families[(self.host.address, self.host.port)] = family

    async def _read_family(self, timeout: float) -> None:
        # A command that dispatches on the family, in a session the doctor did not start (a
        # retry on another worker): read os-release first; what does not parse is "unknown",
        # whose `case` branch says so (the preconditions refused such a host with the details).
        result = await self.run(READ_OS_RELEASE, timeout, what="reading /etc/os-release")
        try:
            family = family_of(parse_os_release(result.stdout)) if result.ok else None
        except ValueError:
            family = None
        self.family = family or "unknown"

    async def _open(self, command: str) -> asyncssh.SSHClientProcess[bytes]:
        wrapped = wrap_command(command, self.become_user, self.family)
        try:
            return await self._create(wrapped)
        except (asyncssh.Error, OSError):
            if self._reconnect is None:
                raise
        # A pooled connection that died since its last use: one fresh connection, once.
        self._connection = await self._reconnect()
        return await self._create(wrapped)

    async def _create(self, wrapped: str) -> asyncssh.SSHClientProcess[bytes]:
        # encoding=None: bytes, decoded leniently later; no term_type: no PTY; stdin at EOF.
        process: asyncssh.SSHClientProcess[bytes] = await self._connection.create_process(
            wrapped, stdin=asyncssh.DEVNULL, encoding=None
        )
        return process

    async def _kill(self, process: asyncssh.SSHClientProcess[bytes], pid: int | None) -> None:
        if pid is not None:
            kill = kill_command(pid, become=self.become_user is not None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._connection.run(kill, check=False, encoding=None), timeout=15
                )
        with contextlib.suppress(Exception):
            process.close()


@dataclass
class _Pooled:
    connection: asyncssh.SSHClientConnection
    last_used: float
    # The version of the known_hosts file the host key was checked against (KnownHostsFile).
    known_hosts: str
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class SshRunner:
    """Opens verified SSH connections. Host keys are always checked against `known_hosts`.

    Connections are kept per host (and user and key) in worker memory for `idle_seconds`, so a
    host's steps share one handshake; a connection that died, or whose host key was checked
    against a known_hosts file that has changed since (a key removed or replaced), is replaced
    before a command starts, never while one runs.
    """

    def __init__(
        self, known_hosts: Path, *, connect_timeout: float = 15.0, idle_seconds: float = 120.0
    ) -> None:
        self._known_hosts = known_hosts
        self._connect_timeout = connect_timeout
        self._idle_seconds = idle_seconds
        self._pool: dict[tuple[str, int, str, str], _Pooled] = {}
        self._locks: dict[tuple[str, int, str, str], asyncio.Lock] = {}
        self._families: dict[tuple[str, int], str] = {}
        self._known = KnownHostsFile(known_hosts)
        self.handshakes = 0  # benchmarks count these

    async def _connect(
        self, host: HostTarget, username: str, credentials: SshCredentials
    ) -> tuple[asyncssh.SSHClientConnection, str]:
        """A new connection, and the version of the known_hosts file its host key was checked
        against."""
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
            version, trusted = await self._known.keys()
            connection = await asyncssh.connect(
                host.address,
                port=host.port,
                username=username,
                client_keys=[_with_certificate(key, credentials)],
                known_hosts=trusted,
                connect_timeout=self._connect_timeout,
                keepalive_interval=15,
                keepalive_count_max=3,
                agent_path=None,
                config=None,
                preferred_auth="publickey",
                encryption_algs=ENCRYPTION_ALGS,
            )
            return connection, version
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
            stale = pooled is not None and pooled.known_hosts != self._known.version()
            if pooled is not None and (fresh or stale or pooled.closed.is_set()):
                self._discard(key, pooled)
                pooled = None
            if pooled is None:
                connection, known_hosts = await self._connect(host, username, credentials)
                pooled = _Pooled(connection, last_used=loop.time(), known_hosts=known_hosts)
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
        """A session on `host`, over a pooled connection; commands run through `sudo -n` as
        `host.become_user` (default root) when `host.become` is set."""
        username = host.user or credentials.username or "root"
        become_user = (host.become_user or "root") if host.become else None

        async def reconnect() -> asyncssh.SSHClientConnection:
            return await self._pooled(host, username, credentials, fresh=True)

        connection = await self._pooled(host, username, credentials, fresh=False)
        yield HostSession(
            host, connection, reconnect=reconnect, become_user=become_user, families=self._families
        )


def _with_certificate(
    key: asyncssh.SSHKey, credentials: SshCredentials
) -> asyncssh.SSHKey | tuple[asyncssh.SSHKey, asyncssh.SSHCertificate]:
    """The key, with its Vault-signed certificate in certificate mode (activities/vault_ssh)."""
    if credentials.certificate is None:
        return key
    return key, asyncssh.import_certificate(credentials.certificate)
