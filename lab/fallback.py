"""A lab for machines without OpenSSH's server or root: asyncssh servers, one per host.

Same API and host simulator as `Lab`, but each host is an asyncssh server thread-hosted in this
process instead of a real `sshd` in a mount namespace. Without a private filesystem per host, the
simulator's paths come from the environment, and the inventory points PatchPilot's maintenance,
boot id and reboot-required commands at each host's own directory. It is a stand-in for real hosts
(commands still run in a real shell), clearly labelled as such wherever it is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from concurrent.futures import Future
from typing import Any

import asyncssh

from lab.lab import Lab, LabHost

READY_TIMEOUT = 15.0


class _HostServer(asyncssh.SSHServer):
    # Keeps the lab's list of a host's open connections, which stopping the host aborts.
    def __init__(self, lab: AsyncsshLab, host: LabHost) -> None:
        self._lab = lab
        self._host = host

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._lab._connections.setdefault(self._host.name, set()).add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        for connections in self._lab._connections.values():
            connections.difference_update({c for c in connections if c.is_closed()})


class AsyncsshLab(Lab):
    """`Lab` on asyncssh servers: for the demo where no real sshd (or no root) is available."""

    kind = "asyncssh lab (simulated hosts, not OpenSSH)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._servers: dict[str, asyncssh.SSHAcceptor] = {}
        self._connections: dict[str, set[asyncssh.SSHServerConnection]] = {}
        self._children: dict[str, set[int]] = {}

    # ---- what differs from the sshd lab ----------------------------------------------------

    def _check_requirements(self) -> None:
        if not self._thread.is_alive():
            self._thread.start()

    def _inventory_host_vars(self, h: LabHost) -> dict[str, Any]:
        # PatchPilot's fixed paths (/var/lib/patchpilot, /run, the boot id) are the machine's
        # own here, so each host's commands point at its own directories instead.
        flag = h.state_dir / "maintenance"
        return {
            "patchpilot_maintenance_check": f"test -e {flag}",
            "patchpilot_maintenance_on": f"mkdir -p {h.state_dir} && echo {{rollout_id}} > {flag}",
            "patchpilot_maintenance_off": f"rm -f {flag}",
            "patchpilot_boot_id": f"cat {h.boot_id_path}",
            "patchpilot_reboot_required_check": f"test -e {h.run_dir}/reboot-required",
            "patchpilot_run_dir": f"{h.state_dir}/runs",
        }

    def _spawn(self, h: LabHost) -> None:
        future: Future[asyncssh.SSHAcceptor] = asyncio.run_coroutine_threadsafe(
            self._listen(h), self._loop
        )
        self._servers[h.name] = future.result(timeout=READY_TIMEOUT)
        self._running[h.name] = None  # type: ignore[assignment]  # only membership is used

    def _wait_ready(self, h: LabHost) -> None:
        return None  # listening once _spawn returns

    def _kill_host(self, name: str) -> None:
        self._running.pop(name, None)
        server = self._servers.pop(name, None)
        if server is not None:
            self._on_loop(self._close(name, server))
        for pid in self._children.pop(name, set()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        for pid in self.hung_processes(name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Close every server and kill every session and hang (see ``Lab.stop``), then end the
        servers' event loop thread: an AsyncsshLab is not started again after this."""
        super().stop()
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    # ---- the servers ------------------------------------------------------------------------

    def _on_loop(self, coroutine: Any) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _close(self, name: str, server: asyncssh.SSHAcceptor) -> None:
        server.close()
        for conn in self._connections.pop(name, set()):
            conn.abort()  # like a host going away: the peer sees the connection drop

    async def _listen(self, h: LabHost) -> asyncssh.SSHAcceptor:
        async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
            await self._run(h, process)

        return await asyncssh.listen(
            h.address,
            h.port,
            server_host_keys=[str(h.host_key_path)],
            authorized_client_keys=str(self.authorized_keys_path),
            server_factory=lambda: _HostServer(self, h),
            process_factory=handle,
            encoding=None,
            allow_scp=False,
            sftp_factory=None,
        )

    async def _run(self, h: LabHost, process: asyncssh.SSHServerProcess[bytes]) -> None:
        env = {
            "PATH": f"{self.sim_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(h.root),
            "LANG": "C.UTF-8",
            "SSH_ORIGINAL_COMMAND": process.command or "",
            "PATCHPILOT_SIM_BIN": str(self.sim_bin),
            "PATCHPILOT_LAB_DIR": str(h.lab_dir),
            "PATCHPILOT_LAB_RUN": str(h.run_dir),
            "PATCHPILOT_LAB_FALLBACK": "1",
        }
        # Its own session, like an sshd session: `$$` leads the process group PatchPilot kills.
        child = await asyncio.create_subprocess_exec(
            str(self.sim_bin / "lab-shell"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            cwd=str(h.root),
            start_new_session=True,
        )
        self._children.setdefault(h.name, set()).add(child.pid)

        async def pump(source: asyncio.StreamReader | None, target: Any) -> None:
            while source is not None and (chunk := await source.read(65536)):
                target.write(chunk)

        try:
            await asyncio.gather(
                pump(child.stdout, process.stdout), pump(child.stderr, process.stderr)
            )
            status = await child.wait()
            process.exit(status if status >= 0 else 128 - status)
        except (asyncssh.Error, OSError):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        finally:
            self._children.get(h.name, set()).discard(child.pid)
