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

import atexit
import contextlib
import importlib.resources
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import asyncssh
import hvac
import yaml

from bot.embedded import free_port, kill_process_group, log_tail
from lab.lab import (
    _SHADOW_DIRS,
    _SHADOWED,
    _SIM_ALIASES,
    _SIM_SCRIPTS,
    HOST_LAB_DIR,
    HOST_STATE_DIR,
    SIM_BIN_MOUNT,
    SSHD,
    LabHost,
    _mount_ns,
    _ssh_banner,
    _write_private,
)

MAX_HOSTS = 254 * 256
_READY_TIMEOUT = 20.0

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
            'mount --bind "$1/patchpilot" {state} && mount --bind "$1/lab" {labdir} \\
             && mount --bind "$1/run" /run \\
             && mount --bind "$1/boot_id" /proc/sys/kernel/random/boot_id' mass-lab-host "$dir" \\
            && break
        [ "$try" != 5 ] || exit 1
    done
done
"""


def host_address(index: int, base: str = "127.50.") -> str:
    """Address of the ``index``-th host (0-based): 127.50.0.1 ... 127.50.0.254, 127.50.1.1, ..."""
    if not 0 <= index < MAX_HOSTS:
        raise ValueError(f"host index {index} out of range (at most {MAX_HOSTS} hosts)")
    return f"{base}{index // 254}.{index % 254 + 1}"


class MassLab:
    """``hosts`` simulated hosts behind ``listeners`` real sshd processes; see the module doc."""

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
        self.root = Path(root).absolute()
        self.services = tuple(services)
        self.user = user
        self.address_base = address_base
        self.known_hosts_per_host = known_hosts_per_host
        self.ports = list(ports) if ports else [free_port() for _ in range(max(1, listeners))]
        size = cluster_size or hosts
        width = max(5, len(str(hosts)))
        self.hosts: list[LabHost] = []
        self.clusters: dict[str, list[str]] = {}
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
        self._by_name = {h.name: h for h in self.hosts}
        self.sim_bin = self.root / "sim-bin"
        self.client_key_path = self.root / "client_ed25519"
        self.authorized_keys_path = self.root / "authorized_keys"
        self.host_key_path = self.root / "ssh_host_ed25519_key"
        self.known_hosts_path = self.root / "known_hosts"
        self.inventory_path = self.root / "inventory.yml"
        self.log_path = self.root / "sshd.log"
        self.client_private_key = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._mount_ns: tuple[int, int] | None = None
        # An open fd pins the listeners' namespace: its number cannot go to another namespace
        # while stop() still looks for processes by it.
        self._ns_fd: int | None = None
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def start(self, attempts: int = 3) -> None:
        if self._started:
            return
        self._started = True
        atexit.register(self.stop)
        try:
            self._prepare()
            for attempt in range(1, attempts + 1):
                self._spawn()
                try:
                    self._wait_ready()
                    break
                except RuntimeError:
                    # Killed from outside while starting (see the module docstring): again.
                    self._stop_processes()
                    if attempt == attempts:
                        raise
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill the sessions, the listeners and every other process of the lab; idempotent."""
        self._stop_processes()
        if self._started:
            self._started = False
            atexit.unregister(self.stop)

    def _stop_processes(self) -> None:
        if self._proc is not None:
            began = time.time()
            # Sessions (and simulated hangs) first, found as the listeners' descendants, by pid.
            _kill_tree(self.listener_pids())
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            if self._mount_ns is not None:
                _kill_in_namespace(self._mount_ns, started_before=began)
            kill_process_group(self._proc, timeout=5)
            self._proc = None
            self._mount_ns = None
        if self._ns_fd is not None:
            os.close(self._ns_fd)
            self._ns_fd = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def host(self, name: str) -> LabHost:
        return self._by_name[name]

    def listener_pids(self) -> list[int]:
        """Pids of the sshd listeners (their children are the sessions)."""
        if self._proc is None:
            return []
        return _children(self._proc.pid)

    def host_cpu_seconds(self) -> float:
        """CPU used so far by the hosts: the listeners and every session they have reaped."""
        total = 0.0
        for pid in self.listener_pids():
            total += proc_cpu_seconds(pid, children=True)
        return total

    # ------------------------------------------------------------------ client files

    def write_known_hosts(self, path: Path | None = None) -> Path:
        path = path or self.known_hosts_path
        public = (self.root / "ssh_host_ed25519_key.pub").read_text().split()
        if self.known_hosts_per_host:
            lines = [f"[{h.address}]:{h.port} {public[0]} {public[1]}\n" for h in self.hosts]
        else:
            pattern = f"[{self.address_base}*]"
            lines = [f"{pattern}:{port} {public[0]} {public[1]}\n" for port in self.ports]
        path.write_text("".join(lines))
        return path

    def write_inventory(self, path: Path | None = None) -> Path:
        """Ansible YAML inventory: one group per cluster, ansible_host/port/user per host."""
        path = path or self.inventory_path
        children: dict[str, Any] = {}
        for cluster, names in self.clusters.items():
            hosts = {}
            for name in names:
                h = self._by_name[name]
                hosts[name] = {
                    "ansible_host": h.address,
                    "ansible_port": h.port,
                    "ansible_user": self.user,
                }
            children[cluster] = {"hosts": hosts}
        path.write_text(
            yaml.safe_dump(
                {"all": {"children": children}}, sort_keys=False, default_flow_style=None
            )
        )
        return path

    def seed_vault(
        self, vault_addr: str, token: str, *, mount: str = "secret", prefix: str = "patch-deploy"
    ) -> None:
        """Store the client key at ``<mount>/<prefix>/default`` (one key for the whole fleet)."""
        client = hvac.Client(url=vault_addr, token=token)
        client.secrets.kv.v2.create_or_update_secret(
            path=f"{prefix}/default",
            secret={"private_key": self.client_private_key, "username": self.user},
            mount_point=mount,
        )

    def ssh_options(self, name: str) -> dict[str, Any]:
        h = self.host(name)
        return {
            "host": h.address,
            "port": h.port,
            "username": self.user,
            "client_keys": [asyncssh.import_private_key(self.client_private_key)],
            "known_hosts": str(self.known_hosts_path),
        }

    # ------------------------------------------------------------------ host state

    def reset(self) -> None:
        """Every host back to the initial state: services active, no maintenance, no logs."""
        for h in self.hosts:
            _empty(h.state_dir)
            _empty(h.lab_dir)
            _empty(h.run_dir)
            self._init_host(h)

    def command_log(self, name: str) -> list[str]:
        import base64

        try:
            text = (self.host(name).lab_dir / "commands.log").read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            _, sep, encoded = line.partition("\t")
            if sep:
                out.append(base64.b64decode(encoded).decode(errors="replace"))
        return out

    def update_count(self, name: str) -> int:
        try:
            return int((self.host(name).lab_dir / "update-count").read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def in_maintenance(self, name: str) -> bool:
        return (self.host(name).state_dir / "maintenance").exists()

    def service_state(self, name: str, service: str) -> str:
        try:
            return (self.host(name).lab_dir / "services" / service).read_text().strip()
        except FileNotFoundError:
            return "inactive"

    def set_fault(self, name: str, fault: str) -> None:
        path = self.host(name).lab_dir / "faults"
        with path.open("a") as fh:
            fh.write(f"{fault}\n")

    def verify_patched(self, expected_updates: int = 1) -> list[str]:
        """Problems found after a rollout: hosts not updated exactly once, left in maintenance or
        with a service down. Empty means every host was patched cleanly."""
        problems = []
        for h in self.hosts:
            count = self.update_count(h.name)
            if count != expected_updates:
                problems.append(f"{h.name}: updated {count} times")
            if self.in_maintenance(h.name):
                problems.append(f"{h.name}: still in maintenance")
            for svc in self.services:
                state = self.service_state(h.name, svc)
                if state != "active":
                    problems.append(f"{h.name}: {svc} {state}")
        return problems

    # ------------------------------------------------------------------ building

    def _prepare(self) -> None:
        if not Path(SSHD).exists():
            raise FileNotFoundError(f"{SSHD} is missing (Debian package openssh-server)")
        for directory in (Path("/run/sshd"), HOST_STATE_DIR, HOST_LAB_DIR):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        self._install_simulators()
        client_key = asyncssh.generate_private_key("ssh-ed25519", comment="patchpilot-mass-lab")
        self.client_private_key = client_key.export_private_key("openssh").decode()
        _write_private(self.client_key_path, self.client_private_key)
        self.authorized_keys_path.write_bytes(client_key.export_public_key("openssh"))
        host_key = asyncssh.generate_private_key("ssh-ed25519", comment="mass-lab-host")
        _write_private(self.host_key_path, host_key.export_private_key("openssh").decode())
        (self.root / "ssh_host_ed25519_key.pub").write_bytes(host_key.export_public_key("openssh"))
        for port in self.ports:
            (self.root / f"sshd_config.{port}").write_text(self._sshd_config(port))
        for h in self.hosts:
            h.state_dir.mkdir(parents=True, exist_ok=True)
            h.lab_dir.mkdir(parents=True, exist_ok=True)
            h.run_dir.mkdir(parents=True, exist_ok=True)
            h.boot_id_path.write_text(f"{uuid.uuid4()}\n")
        self.reset()
        self.write_known_hosts()
        self.write_inventory()

    def _install_simulators(self) -> None:
        self.sim_bin.mkdir(parents=True, exist_ok=True)
        source = importlib.resources.files("lab") / "sim"
        for name in _SIM_SCRIPTS:
            target = self.sim_bin / name
            target.write_bytes((source / name).read_bytes())
            target.chmod(0o755)
        for alias, name in _SIM_ALIASES.items():
            shutil.copy2(self.sim_bin / name, self.sim_bin / alias)
        shell = self.sim_bin / "mass-lab-shell"
        shell.write_text(
            _MASS_SHELL.format(
                root=shlex.quote(str(self.root)),
                state=HOST_STATE_DIR,
                labdir=HOST_LAB_DIR,
                bin=SIM_BIN_MOUNT,
            )
        )
        shell.chmod(0o755)
        namespaces = self.root / "host-namespaces.sh"
        namespaces.write_text(
            _HOST_NAMESPACES.format(
                root=shlex.quote(str(self.root)), state=HOST_STATE_DIR, labdir=HOST_LAB_DIR
            )
        )

    def _sshd_config(self, port: int) -> str:
        return "\n".join(
            [
                f"ListenAddress 0.0.0.0:{port}",
                f"HostKey {self.host_key_path}",
                f"AuthorizedKeysFile {self.authorized_keys_path}",
                # Bound to every address, but only loopback clients may log in.
                f"AllowUsers {self.user}@127.0.0.0/8",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PidFile none",
                "MaxStartups 4000",
                "MaxSessions 200",
                "LogLevel ERROR",
                "PrintMotd no",
                "PrintLastLog no",
                "UseDNS no",
                "AcceptEnv LANG LC_*",
                f"ForceCommand {SIM_BIN_MOUNT}/mass-lab-shell",
                "",
            ]
        )

    def _namespace_script(self) -> str:
        mounts: list[str] = []
        shadowed: set[str] = set()
        for name in _SHADOWED:
            for directory in _SHADOW_DIRS:
                candidate = Path(directory) / name
                if not candidate.exists():
                    continue
                real = os.path.realpath(candidate)
                if real in shadowed:
                    continue
                shadowed.add(real)
                mounts.append(f'mount --bind "$1/{name}" {shlex.quote(real)}')
        for startup in ("/root/.bashrc", "/root/.profile", "/root/.bash_profile"):
            if Path(startup).is_file():
                mounts.append(f"mount --bind /dev/null {startup}")
        mounts.append(f'mount --bind "$1" {SIM_BIN_MOUNT}')
        script = shlex.quote(str(self.root / "host-namespaces.sh"))
        hosts = shlex.quote(str(self.root / "hosts"))
        # A few at a time: each host costs some process starts.
        mounts.append(f"find {hosts} -mindepth 1 -maxdepth 1 | xargs -P 4 -n 64 sh {script}")
        sshds = " ".join(
            f"{SSHD} -D -e -f {shlex.quote(str(self.root / f'sshd_config.{port}'))} &"
            for port in self.ports
        )
        return " && ".join(mounts) + f" && {{ {sshds} wait; }}"

    def _spawn(self) -> None:
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            self._namespace_script(),
            "mass-lab",
            str(self.sim_bin),
        ]
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        # Making the hosts' namespaces takes a few ms per host.
        deadline = time.monotonic() + _READY_TIMEOUT + 0.05 * len(self.hosts)
        pending = list(self.ports)
        while pending:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mass lab sshd exited with {self._proc.returncode}; log {self.log_path}:\n"
                    f"{log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"mass lab ports {pending} not accepting SSH; {self.log_path}")
            pending = [p for p in pending if not _ssh_banner(self.hosts[0].address, p)]
            if pending:
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            self._ns_fd = os.open(f"/proc/{self._proc.pid}/ns/mnt", os.O_RDONLY)
        ns = _mount_ns(self._proc.pid)
        if ns is not None and ns != _mount_ns(os.getpid()):
            self._mount_ns = ns

    def _init_host(self, h: LabHost) -> None:
        (h.lab_dir / ".lab-host").write_text(f"{h.name}\n")
        services = h.lab_dir / "services"
        services.mkdir(exist_ok=True)
        for svc in self.services:
            (services / svc).write_text("active\n")


# ---------------------------------------------------------------------- helpers


def _empty(directory: Path) -> None:
    for entry in directory.iterdir() if directory.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                found.extend(int(p) for p in text.split())
    return found


def _descendants(pids: list[int]) -> list[int]:
    found: list[int] = []
    queue = list(pids)
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(_children(pid))
    return found


def _kill_tree(pids: list[int]) -> None:
    for pid in reversed(_descendants(pids)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


_CLK_TCK = os.sysconf("SC_CLK_TCK")
_BOOT_TIME = next(
    (
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    ),
    0.0,
)


def _start_time(pid: int) -> float | None:
    """Unix time a process started (None if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return _BOOT_TIME + int(fields[19]) / _CLK_TCK


def _kill_in_namespace(ns: tuple[int, int], *, started_before: float, timeout: float = 5.0) -> None:
    """SIGKILL the processes in mount namespace ``ns`` that started before ``started_before``.

    Once the namespace is gone its inode number can be reused by an unrelated new namespace at
    once; a process started after the stop began is never one of ours, so it is left alone.
    """
    if ns == _mount_ns(os.getpid()):
        raise RuntimeError("refusing to kill the test process's own mount namespace")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            pid = int(entry)
            if _mount_ns(pid) != ns:
                continue
            started = _start_time(pid)
            if started is None or started > started_before + 1.0:
                continue
            found = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not found:
            return
        time.sleep(0.01)


def proc_cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime+stime of a live process (plus its reaped children's with ``children``), seconds."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(")") + 2 :].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _CLK_TCK
