"""A many-host lab for scale tests and benchmarks: thousands of hosts from a few real sshd.

The classic :class:`lab.Lab` runs one sshd per host in a mount namespace of its own and is
limited to 254 hosts. A :class:`MassLab` instead runs a few sshd processes (``listeners``), each
bound to ``0.0.0.0:<port>`` (logins are only allowed from 127.0.0.0/8), all in one shared mount
namespace where the lab's simulators are mounted over ``systemctl``, ``apt-get``, ... exactly as in
the classic lab. Every host has its own loopback address (``127.50.0.1``, ``127.50.0.2``, ...); the
Linux kernel routes all of 127.0.0.0/8 to ``lo``, so any of them reaches the listeners.

Every host has a mount namespace of its own, made once when the lab starts and kept without a
process (a bind mount of its nsfs file, ``<host>/mntns``), where the host's state directories are
mounted over ``/var/lib/patchpilot`` and ``/var/lib/patchpilot-lab`` (and ``/run`` and the boot id).
A session finds out which host it is from the server address the client connected to (third field
of ``$SSH_CONNECTION``), enters that namespace (``nsenter``) and runs the classic ``lab-shell``:
command log, faults, service states and the simulated upgrade behave exactly as on a classic lab
host, per host. (Namespaces are needed because PatchPilot's own commands use fixed paths such as
``/var/lib/patchpilot/maintenance``; they are made once and not per session because a namespace's
inode number is reused as soon as it is freed, and a lab that stops kills every process in "its"
namespace by that number.) Simulated reboots are not supported: a ``reboot`` is only
recorded (``reboots`` in the host's lab directory) and the host never goes down. No host has a
kernel update pending, so a rollout with the default reboot policy does not reboot.

Known hosts: all listeners share one host key; ``known_hosts`` holds one wildcard line per port,
``[127.50.*]:PORT ssh-ed25519 ...`` (OpenSSH and asyncssh both match such patterns), or one line per
host with ``known_hosts_per_host=True`` (what a real 10,000-host fleet looks like to a client).

The inventory (``inventory.yml``) is Ansible-compatible and is what PatchPilot reads.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from bot.embedded import free_port
from lab import procfs, sshd
from lab.base import LabBase
from lab.host import SIM_BIN_MOUNT, LabHost
from lab.sshd import SSHD, SshdLauncher

MAX_HOSTS = 254 * 256


def _socket_owners(address: str) -> set[int]:
    """Pids holding an established TCP socket whose local address is ``address`` (``ss``)."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", "src", address],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


_READY_TIMEOUT = 20.0

# Each listener execs sshd as a child subreaper (prctl PR_SET_CHILD_SUBREAPER = 36, kept across
# execve): what a session leaves running on its own (the detached update's runner, started with
# `setsid -f`) is reparented to its listener, which reaps any child (OpenSSH's SIGCHLD handler
# waits for pid -1), so its CPU counts in host_cpu_seconds instead of vanishing into init's.
_SUBREAPER = (
    "import ctypes, os, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0 or sys.exit('prctl failed'); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)

# The ForceCommand of every listener. {root} is filled in when the lab is built.
_MASS_SHELL = """#!/bin/sh
# Which lab host is this session? The server address the client connected to.
set -- ${{SSH_CONNECTION-}}
addr=${{3-}}
case $addr in
    *[!0-9.]*|"") echo "mass-lab-shell: cannot tell the host from SSH_CONNECTION" >&2; exit 126 ;;
esac
dir={root}/hosts/$addr
[ -f "$dir/lab/.lab-host" ] || {{ echo "mass-lab-shell: no lab host at $addr" >&2; exit 126; }}
# A cut host (MassLab.cut): its connection dies as if its sshd were gone.
[ ! -e "$dir/cut" ] || {{ kill -KILL "$PPID" 2>/dev/null; exit 255; }}
exec nsenter --mount="$dir/mntns" -- {bin}/lab-shell
"""

# Run once inside the listeners' namespace, before they start: one persistent mount namespace per
# host (pinned by a bind mount of its nsfs file at <host>/mntns, no process needed) with the
# host's directories mounted over PatchPilot's fixed paths.
_HOST_NAMESPACES = """#!/bin/sh
for dir in "$@"; do
    : > "$dir/mntns"
    # Retried: a lab elsewhere on the machine that kills "its" namespace by a number the kernel
    # has just handed to this new one may kill the setup (see the module docstring).
    for try in 1 2 3 4 5; do
        unshare --mount="$dir/mntns" --propagation private -- sh -c \\
            '{mounts}' mass-lab-host "$dir" \\
            && break
        [ "$try" != 5 ] || exit 1
    done
done
"""


def host_address(index: int, base: str = "127.50.") -> str:
    """Address of the ``index``-th host (0-based): 127.50.0.1 ... 127.50.0.254, 127.50.1.1, ...

    ValueError for an index outside 0 .. MAX_HOSTS - 1.
    """
    if not 0 <= index < MAX_HOSTS:
        raise ValueError(f"host index {index} out of range (at most {MAX_HOSTS} hosts)")
    return f"{base}{index // 254}.{index % 254 + 1}"


class MassLab(LabBase):
    """``hosts`` simulated hosts behind ``listeners`` real sshd processes; see the module doc.

    Hosts are named ``h00000``, ``h00001``, ... and split into clusters of ``cluster_size``
    (``<cluster_prefix>-0``, ``-1``, ...; one cluster ``<cluster_prefix>`` without a size).
    ``ports`` (default: ``listeners`` free ports) are dealt out to the hosts in turn.
    ``address_base`` is the /16 of the loopback range the hosts live in. ValueError for more
    than MAX_HOSTS hosts or an address base that is not ``127.N.``.
    """

    client_key_comment = "patchpilot-mass-lab"

    def __init__(
        self,
        root: Path,
        hosts: int,
        *,
        cluster_size: int | None = None,
        cluster_prefix: str = "fleet",
        services: tuple[str, ...] = ("nginx", "postgresql"),
        listeners: int = 4,
        ports: list[int] | None = None,
        address_base: str = "127.50.",
        known_hosts_per_host: bool = False,
        user: str = "root",
    ) -> None:
        if hosts < 1 or hosts > MAX_HOSTS:
            raise ValueError(f"hosts must be 1..{MAX_HOSTS}")
        parts = address_base.rstrip(".").split(".")
        if len(parts) != 2 or parts[0] != "127" or not parts[1].isdigit():
            raise ValueError("address_base must look like '127.N.' (a /16 of the loopback range)")
        super().__init__(root, services=services, user=user)
        self.address_base = address_base
        self.known_hosts_per_host = known_hosts_per_host
        self.ports = list(ports) if ports else [free_port() for _ in range(max(1, listeners))]
        size = cluster_size or hosts
        width = max(5, len(str(hosts)))
        for i in range(hosts):
            cluster = (
                cluster_prefix
                if size >= hosts
                else f"{cluster_prefix}-{i // size:0{len(str((hosts - 1) // size))}d}"
            )
            address = host_address(i, address_base)
            host = LabHost(
                name=f"h{i:0{width}d}",
                cluster=cluster,
                address=address,
                port=self.ports[i % len(self.ports)],
                root=self.root / "hosts" / address,
            )
            self.hosts.append(host)
            self.clusters.setdefault(cluster, []).append(host.name)
        self._index_hosts()
        # One host key and one log for all the listeners.
        self.host_key_path = self.root / "ssh_host_ed25519_key"
        self.log_path = self.root / "sshd.log"
        self._launcher: SshdLauncher | None = None
        self._attempts = 3

    # ------------------------------------------------------------------ lifecycle

    def start(self, attempts: int = 3) -> None:
        """Build and start the lab (see ``LabBase.start``), starting the listeners up to
        ``attempts`` times if something outside kills them while they start."""
        self._attempts = attempts
        super().start()

    def _start_servers(self) -> None:
        for attempt in range(1, self._attempts + 1):
            self._spawn()
            try:
                self._wait_ready()
                return
            except RuntimeError:
                # Killed from outside while starting (see the module docstring): again.
                self._stop_servers()
                if attempt == self._attempts:
                    raise

    def _stop_servers(self) -> None:
        if self._launcher is None:
            return
        began = time.time()
        # Sessions (and simulated hangs) first, found as the listeners' descendants, by pid.
        procfs.kill_tree(self.listener_pids())
        self._launcher.kill(started_before=began)
        self._launcher = None

    def listener_pids(self) -> list[int]:
        """Pids of the sshd listeners (their children are the sessions); empty when stopped."""
        if self._launcher is None:
            return []
        return procfs.children(self._launcher.proc.pid)

    def cut(self, name: str, cut: bool = True) -> int:
        """Cut a host off (or restore it): while cut, every SSH session to it kills its own
        connection before running anything, and the connections it has now are killed too
        (their sshd processes, found by the host's address). Returns how many were killed."""
        host = self.host(name)
        marker = self.root / "hosts" / host.address / "cut"
        if not cut:
            marker.unlink(missing_ok=True)
            return 0
        marker.touch()
        killed = 0
        own = self._own_sshds()
        for pid in _socket_owners(host.address):
            if pid in own:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
        return killed

    def _own_sshds(self) -> set[int]:
        """Every process under this lab's listeners (the sessions and their children)."""
        found: set[int] = set()
        todo = list(self.listener_pids())
        while todo:
            pid = todo.pop()
            kids = procfs.children(pid)
            found.update(kids)
            todo += kids
        return found

    def host_cpu_seconds(self) -> float:
        """CPU seconds used so far by the hosts: the listeners and every session, or process a
        session left running, they reaped."""
        return sum(procfs.proc_cpu_seconds(pid, children=True) for pid in self.listener_pids())

    def reset(self) -> None:
        """Every host back to the initial state: services active, no maintenance, no logs."""
        for h in self.hosts:
            self.reset_host(h.name)

    # ------------------------------------------------------------------ building

    def _write_server_files(self) -> None:
        sshd.write_key_pair(self.host_key_path, "mass-lab-host")
        for port in self.ports:
            (self.root / f"sshd_config.{port}").write_text(
                sshd.sshd_config(
                    listen=f"0.0.0.0:{port}",
                    host_key=self.host_key_path,
                    authorized_keys=self.authorized_keys_path,
                    # Bound to every address, but only loopback clients may log in.
                    allow_users=f"{self.user}@127.0.0.0/8",
                    max_startups=4000,
                    force_command=SIM_BIN_MOUNT / "mass-lab-shell",
                )
            )
        shell = self.sim_bin / "mass-lab-shell"
        shell.write_text(_MASS_SHELL.format(root=shlex.quote(str(self.root)), bin=SIM_BIN_MOUNT))
        shell.chmod(0o755)
        mounts = " && ".join(sshd.host_mounts('"$1"'))
        (self.root / "host-namespaces.sh").write_text(_HOST_NAMESPACES.format(mounts=mounts))

    def _known_hosts_lines(self) -> list[str]:
        public = sshd.public_key_file(self.host_key_path).read_text()
        if self.known_hosts_per_host:
            return [sshd.known_hosts_line(h.address, h.port, public) for h in self.hosts]
        return [sshd.known_hosts_line(f"{self.address_base}*", p, public) for p in self.ports]

    def _namespace_script(self, cpus: str) -> str:
        # $1: the simulators.
        mounts = sshd.simulator_mounts('"$1"')
        script = shlex.quote(str(self.root / "host-namespaces.sh"))
        hosts = shlex.quote(str(self.root / "hosts"))
        # A few at a time: each host costs some process starts.
        mounts.append(f"find {hosts} -mindepth 1 -maxdepth 1 | xargs -P 4 -n 64 sh {script}")
        subreaper = f"{shlex.quote(sys.executable)} -c {shlex.quote(_SUBREAPER)}"
        sshds = " ".join(
            f"taskset --cpu-list {cpus} {subreaper} "
            f"{SSHD} -D -e -f {shlex.quote(str(self.root / f'sshd_config.{port}'))} &"
            for port in self.ports
        )
        return " && ".join(mounts) + f" && {{ {sshds} wait; }}"

    def _spawn(self) -> None:
        # The kernel binds a namespace's file (<host>/mntns) only into an older namespace, and
        # some kernels (seen on 6.18) tell older by ids handed out in per-CPU batches, so a host
        # namespace made on another CPU than the listeners' can look older and is refused
        # (EINVAL). Both are made on one CPU; the listeners then run on every allowed CPU.
        allowed = sorted(os.sched_getaffinity(0))
        self._launcher = SshdLauncher.start(
            self._namespace_script(",".join(map(str, allowed))),
            "mass-lab",
            [str(self.sim_bin)],
            self.log_path,
            cpu=allowed[0],
        )

    def _wait_ready(self) -> None:
        assert self._launcher is not None
        # Making the hosts' namespaces takes a few ms per host.
        timeout = _READY_TIMEOUT + 0.05 * len(self.hosts)
        endpoints = [(self.hosts[0].address, port) for port in self.ports]
        self._launcher.wait_ready("mass lab", endpoints, timeout, interval=0.05)
