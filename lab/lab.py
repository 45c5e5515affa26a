"""A lab of real OpenSSH hosts on loopback addresses, with a host simulator behind each one.

Every lab host is one real ``sshd`` in a mount namespace of its own. Inside it,
``/var/lib/patchpilot`` (PatchPilot's state, e.g. the maintenance flag) and
``/var/lib/patchpilot-lab`` (simulator state) are bind mounts of that host's directories under the
lab root, ``/usr/local/sbin`` holds the simulators (``systemctl``, ``apt-get``, ...), and every
session runs through ``lab-shell``, which logs the command before running it. The test process
reads and switches a host's state through the same directories on the real filesystem.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
import uuid
from pathlib import Path

from lab import procfs, sshd
from lab.base import LabBase
from lab.host import SIM_BIN_MOUNT, LabHost
from lab.hoststate import write_in_place
from lab.sshd import SSHD, SshdLauncher

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_READY_TIMEOUT = 15.0
# What `apt list --upgradable` shows on a fresh lab host; an upgrade installs them all.
DEFAULT_PENDING = (
    "openssl/stable-security 3.0.15-1~deb12u1 amd64 [upgradable from: 3.0.14-1~deb12u2]",
    "nginx/stable 1.22.1-9+deb12u2 amd64 [upgradable from: 1.22.1-9]",
)


class Lab(LabBase):
    """Real sshd hosts for tests and demos; see the module docstring for how a host is built.

    ``clusters`` maps a cluster name to its host names (unique across clusters, at most 254 in
    all); host *i* (from 1, in order) listens on ``<address_prefix><i>:<port>``. Every host runs
    ``services``, all active at first. ValueError for a name that does not fit PatchPilot's
    patterns. Needs root, ``/usr/sbin/sshd``, ``unshare`` and ``mount`` to start.
    """

    def __init__(
        self,
        root: Path,
        clusters: dict[str, list[str]],
        *,
        services: tuple[str, ...] = ("nginx", "postgresql"),
        port: int = 2222,
        address_prefix: str = "127.0.1.",
        user: str = "root",
    ) -> None:
        super().__init__(root, services=services, user=user)
        self.clusters = {cluster: list(names) for cluster, names in clusters.items()}
        self.port = port
        self.address_prefix = address_prefix
        for cluster, names in self.clusters.items():
            if not _NAME_RE.match(cluster):
                raise ValueError(f"invalid cluster name {cluster!r}")
            for name in names:
                if not _NAME_RE.match(name):
                    raise ValueError(f"invalid host name {name!r}")
                index = len(self.hosts) + 1
                if index > 254:
                    raise ValueError("a lab has at most 254 hosts")
                self.hosts.append(
                    LabHost(
                        name=name,
                        cluster=cluster,
                        address=f"{address_prefix}{index}",
                        port=port,
                        root=self.root / "hosts" / name,
                    )
                )
        self._index_hosts()
        self._running: dict[str, SshdLauncher] = {}
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        # Seconds a simulated reboot keeps the host down.
        self.reboot_delay = 1.0

    # ------------------------------------------------------------------ lifecycle

    def _start_servers(self) -> None:
        self._stopping.clear()
        for host in self.hosts:
            self._spawn(host)
        for host in self.hosts:
            self._wait_ready(host)
        self._watcher = threading.Thread(target=self._watch_reboots, daemon=True)
        self._watcher.start()

    def _stop_servers(self) -> None:
        self._stopping.set()
        for name in list(self._running):
            self._kill_host(name)

    def stop_host(self, host: str) -> None:
        """Kill the host's sshd and its sessions: connecting to it is refused from now on."""
        self._kill_host(self.host(host).name)

    def start_host(self, host: str) -> None:
        """Start the host's sshd again (same host key, same state); no-op if it runs."""
        h = self.host(host)
        if h.name in self._running:
            return
        self._spawn(h)
        self._wait_ready(h)

    def cut_connections(self, host: str) -> int:
        """Drop every SSH connection to the host, as a network cut would: each connection's
        own sshd process is killed, the listener and everything the sessions started detached
        (setsid) go on. Returns how many connections were cut."""
        running = self._running.get(self.host(host).name)
        if running is None:
            return 0
        cut = 0
        for pid in procfs.children(running.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                cut += 1
        return cut

    def rekey_host(self, host: str) -> None:
        """Give the host a new host key and restart it; known_hosts keeps the old key."""
        h = self.host(host)
        self._kill_host(h.name)
        self._write_host_key(h)
        self._spawn(h)
        self._wait_ready(h)

    def reset(self) -> None:
        """Every host back to its initial state, running again, and known_hosts current.

        For a lab shared between tests: undoes ``stop_host`` and ``rekey_host`` as well.
        """
        for h in self.hosts:
            if self._started:
                self.start_host(h.name)
            self.reset_host(h.name)
        if self._started:
            self.write_known_hosts()

    # ------------------------------------------------------------------ simulated reboots

    def _watch_reboots(self) -> None:
        """A host's ``reboot`` leaves a request; the lab then takes the host down like a reboot:
        connections drop, sshd is gone for ``reboot_delay`` seconds, and it comes back with a new
        boot id and without ``/var/run/reboot-required``. With fault ``reboot-never-returns`` it
        stays down."""
        while not self._stopping.wait(0.1):
            for h in self.hosts:
                request = h.lab_dir / "reboot-requested"
                if request.exists():
                    request.unlink(missing_ok=True)
                    threading.Thread(target=self._reboot, args=(h,), daemon=True).start()

    def _reboot(self, h: LabHost) -> None:
        time.sleep(0.3)  # let the command that asked for the reboot answer first
        self._kill_host(h.name)
        (h.run_dir / "reboot-required").unlink(missing_ok=True)
        write_in_place(h.boot_id_path, f"{uuid.uuid4()}\n")
        if "reboot-never-returns" in self.faults(h.name):
            return
        if self._stopping.wait(self.reboot_delay):
            return
        self.start_host(h.name)

    # ------------------------------------------------------------------ building hosts

    def _init_host_state(self, h: LabHost) -> None:
        super()._init_host_state(h)
        # The host's sshd runs with the host's /run, where it needs its privsep directory.
        (h.run_dir / "sshd").mkdir(mode=0o755, exist_ok=True)
        (h.lab_dir / "pending").write_text("".join(f"{line}\n" for line in DEFAULT_PENDING))

    def _write_server_files(self) -> None:
        for h in self.hosts:
            self._write_host_key(h)
            h.sshd_config_path.write_text(
                sshd.sshd_config(
                    listen=f"{h.address}:{h.port}",
                    host_key=h.host_key_path,
                    authorized_keys=self.authorized_keys_path,
                    allow_users=self.user,
                    max_startups=200,
                    force_command=SIM_BIN_MOUNT / "lab-shell",
                )
            )

    def _write_host_key(self, h: LabHost) -> None:
        sshd.write_key_pair(h.host_key_path, f"lab-{h.name}")

    def _known_hosts_lines(self) -> list[str]:
        return [
            sshd.known_hosts_line(
                h.address, h.port, sshd.public_key_file(h.host_key_path).read_text()
            )
            for h in self.hosts
        ]

    def _namespace_script(self) -> str:
        # $1: the host's root directory, $2: the simulators, $3: the sshd configuration.
        mounts = [*sshd.host_mounts('"$1"'), *sshd.simulator_mounts('"$2"')]
        return " && ".join([*mounts, f'exec {SSHD} -D -e -f "$3"'])

    def _spawn(self, h: LabHost) -> None:
        self._running[h.name] = SshdLauncher.start(
            self._namespace_script(),
            f"lab-host-{h.name}",
            [str(h.root), str(self.sim_bin), str(h.sshd_config_path)],
            h.log_path,
        )

    def _wait_ready(self, h: LabHost) -> None:
        what = f"lab host {h.name} ({h.address}:{h.port})"
        try:
            self._running[h.name].wait_ready(
                what, [(h.address, h.port)], _READY_TIMEOUT, interval=0.02
            )
        except (RuntimeError, TimeoutError):
            self._kill_host(h.name)
            raise

    def _kill_host(self, name: str) -> None:
        running = self._running.pop(name, None)
        if running is not None:
            running.kill()
