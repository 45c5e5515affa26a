"""A lab of real OpenSSH hosts on loopback addresses, with a host simulator behind each one.

Every lab host is one real ``sshd`` in a mount namespace of its own. Inside it,
``/var/lib/patchpilot`` (PatchPilot's state, e.g. the maintenance flag) and
``/var/lib/patchpilot-lab`` (simulator state) are bind mounts of that host's directories under the
lab root, ``/usr/local/sbin`` holds the simulators (``systemctl``, ``apt-get``, ...), and every
session runs through ``lab-shell``, which logs the command before running it. The test process
reads and switches a host's state through the same directories on the real filesystem.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import importlib.resources
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import asyncssh
import hvac
import yaml

from bot.embedded import kill_process_group, log_tail

SSHD = "/usr/sbin/sshd"
# Where PatchPilot and the simulators look inside a lab host; bind mounts make them per host.
HOST_STATE_DIR = Path("/var/lib/patchpilot")
HOST_LAB_DIR = Path("/var/lib/patchpilot-lab")
SIM_BIN_MOUNT = Path("/usr/local/sbin")

_SIM_SCRIPTS = ("lab-lib.sh", "lab-shell", "systemctl", "apt-get", "dnf", "reboot", "sudo")
# Names served by a script under another name; the script looks at $0.
_SIM_ALIASES = {
    "apt": "apt-get",
    "yum": "dnf",
    "shutdown": "reboot",
    "poweroff": "reboot",
    "halt": "reboot",
}
# Commands a rollout may call by absolute path. Inside a lab host the simulator is mounted over
# each of them that exists, so `/usr/bin/apt-get` or `/sbin/reboot` can never reach the machine
# that runs the lab.
_SHADOWED = ("systemctl", "apt-get", "apt", "dnf", "yum", "reboot", "shutdown", "poweroff", "halt")
_SHADOW_DIRS = ("/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SERVICE_RE = re.compile(r"^[A-Za-z0-9@._:-]+$")
_READY_TIMEOUT = 15.0
# What `apt list --upgradable` shows on a fresh lab host; an upgrade installs them all.
DEFAULT_PENDING = (
    "openssl/stable-security 3.0.15-1~deb12u1 amd64 [upgradable from: 3.0.14-1~deb12u2]",
    "nginx/stable 1.22.1-9+deb12u2 amd64 [upgradable from: 1.22.1-9]",
)


@dataclass
class LabHost:
    name: str
    cluster: str
    address: str
    port: int
    root: Path

    @property
    def state_dir(self) -> Path:
        """The host's ``/var/lib/patchpilot``, as seen from the test process."""
        return self.root / "patchpilot"

    @property
    def lab_dir(self) -> Path:
        """The host's simulator state (``/var/lib/patchpilot-lab`` inside the host)."""
        return self.root / "lab"

    @property
    def run_dir(self) -> Path:
        """The host's ``/run`` (so ``/var/run/reboot-required`` is per host)."""
        return self.root / "run"

    @property
    def boot_id_path(self) -> Path:
        """Mounted over ``/proc/sys/kernel/random/boot_id`` inside the host."""
        return self.root / "boot_id"

    @property
    def host_key_path(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def sshd_config_path(self) -> Path:
        return self.root / "sshd_config"

    @property
    def log_path(self) -> Path:
        return self.root / "sshd.log"


@dataclass
class _Running:
    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    # (st_dev, st_ino) of the host's mount namespace: every process of the host, sessions and
    # simulated hangs included, is in it, and no process outside the lab is.
    mount_ns: tuple[int, int] | None = None
    # An open fd on that namespace keeps it alive, so its inode number cannot be reused by a new
    # namespace (another lab's host) before the kill loop is done with it.
    ns_fd: int | None = None


class Lab:
    """Real sshd hosts for tests and demos; see the module docstring for how a host is built."""

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
        self.root = Path(root).absolute()
        self.clusters = {cluster: list(names) for cluster, names in clusters.items()}
        self.services = tuple(services)
        self.port = port
        self.address_prefix = address_prefix
        self.user = user
        for svc in self.services:
            if not _SERVICE_RE.match(svc):
                raise ValueError(f"invalid service name {svc!r}")

        self.hosts: list[LabHost] = []
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
        self._by_name = {h.name: h for h in self.hosts}
        if len(self._by_name) != len(self.hosts):
            raise ValueError("host names must be unique across clusters")

        self.sim_bin = self.root / "sim-bin"
        self.client_key_path = self.root / "client_ed25519"
        self.authorized_keys_path = self.root / "authorized_keys"
        self.known_hosts_path = self.root / "known_hosts"
        self.inventory_path = self.root / "inventory.yml"
        self.client_private_key = ""
        self._running: dict[str, _Running] = {}
        self._started = False
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        # Seconds a simulated reboot keeps the host down.
        self.reboot_delay = 1.0

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Generate keys, write configs and start every host; returns once all accept SSH."""
        if self._started:
            return
        self._started = True
        self._stopping.clear()
        atexit.register(self.stop)
        try:
            self._prepare()
            for host in self.hosts:
                self._spawn(host)
            for host in self.hosts:
                self._wait_ready(host)
        except BaseException:
            self.stop()
            raise
        self._watcher = threading.Thread(target=self._watch_reboots, daemon=True)
        self._watcher.start()

    def stop(self) -> None:
        """Kill every process of every host (sshd, sessions, simulated hangs); idempotent."""
        self._stopping.set()
        for name in list(self._running):
            self._kill_host(name)
        if self._started:
            self._started = False
            atexit.unregister(self.stop)

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
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no lab host {name!r}; hosts: {sorted(self._by_name)}") from None

    def stop_host(self, host: str) -> None:
        """Kill the host's sshd and its sessions: connecting to it is refused from now on."""
        self._kill_host(self.host(host).name)

    def start_host(self, host: str) -> None:
        """Start the host's sshd again (same host key, same state)."""
        h = self.host(host)
        if h.name in self._running:
            return
        self._spawn(h)
        self._wait_ready(h)

    def rekey_host(self, host: str) -> None:
        """Give the host a new host key and restart it; known_hosts keeps the old key."""
        h = self.host(host)
        self._kill_host(h.name)
        self._write_host_key(h)
        self._spawn(h)
        self._wait_ready(h)

    # ------------------------------------------------------------------ files for clients

    def write_known_hosts(self, path: Path | None = None) -> Path:
        """Write known_hosts for every host's current key (``rekey_host`` leaves it stale)."""
        path = path or self.known_hosts_path
        lines = []
        for h in self.hosts:
            public = (h.root / "ssh_host_ed25519_key.pub").read_text().split()
            where = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
            lines.append(f"{where} {public[0]} {public[1]}\n")
        path.write_text("".join(lines))
        return path

    def write_inventory(
        self,
        path: Path | None = None,
        host_vars: dict[str, dict[str, Any]] | None = None,
        group_vars: dict[str, dict[str, Any]] | None = None,
    ) -> Path:
        """Write an Ansible YAML inventory of the lab; ``group_vars`` may also have ``"all"``."""
        path = path or self.inventory_path
        host_vars = host_vars or {}
        group_vars = group_vars or {}
        unknown = (set(host_vars) - set(self._by_name)) | (
            set(group_vars) - set(self.clusters) - {"all"}
        )
        if unknown:
            raise KeyError(f"vars for unknown hosts or groups: {sorted(unknown)}")
        children: dict[str, Any] = {}
        for cluster, names in self.clusters.items():
            hosts: dict[str, Any] = {}
            for name in names:
                h = self._by_name[name]
                entry: dict[str, Any] = {
                    "ansible_host": h.address,
                    "ansible_port": h.port,
                    "ansible_user": self.user,
                }
                entry.update(host_vars.get(name, {}))
                hosts[name] = entry
            group: dict[str, Any] = {"hosts": hosts}
            if cluster in group_vars:
                group["vars"] = dict(group_vars[cluster])
            children[cluster] = group
        everything: dict[str, Any] = {"children": children}
        if "all" in group_vars:
            everything["vars"] = dict(group_vars["all"])
        path.parent.mkdir(parents=True, exist_ok=True)
        # Flow style for the innermost mappings gives the one-line-per-host shape people expect.
        path.write_text(
            yaml.safe_dump({"all": everything}, sort_keys=False, default_flow_style=None)
        )
        return path

    def seed_vault(
        self,
        vault_addr: str,
        token: str,
        *,
        mount: str = "secret",
        prefix: str = "patch-deploy",
        per_host: bool = False,
    ) -> None:
        """Store the client key in KV v2 at ``<mount>/<prefix>/default`` (and per host)."""
        if not self.client_private_key:
            raise RuntimeError("start the lab first: the client key is generated by start()")
        client = hvac.Client(url=vault_addr, token=token)
        secret = {"private_key": self.client_private_key, "username": self.user}
        paths = [f"{prefix}/default"]
        if per_host:
            paths += [f"{prefix}/{h.name}" for h in self.hosts]
        for secret_path in paths:
            client.secrets.kv.v2.create_or_update_secret(
                path=secret_path, secret=secret, mount_point=mount
            )

    def ssh_options(self, host: str) -> dict[str, Any]:
        """Keyword arguments for ``asyncssh.connect`` that reach ``host`` as the lab user."""
        h = self.host(host)
        return {
            "host": h.address,
            "port": h.port,
            "username": self.user,
            "client_keys": [asyncssh.import_private_key(self.client_private_key)],
            "known_hosts": str(self.known_hosts_path),
        }

    async def run(
        self,
        host: str,
        command: str,
        *,
        # asyncssh's own timeout, not asyncio.timeout: its TimeoutError carries the partial output.
        timeout: float | None = None,
    ) -> asyncssh.SSHCompletedProcess:
        """Run one command on ``host`` over a fresh SSH connection (no check of the exit code)."""
        async with asyncssh.connect(**self.ssh_options(host)) as conn:
            return await conn.run(command, check=False, timeout=timeout)

    # ------------------------------------------------------------------ observations

    def command_log_timed(self, host: str) -> list[tuple[float, str]]:
        """Every command the host's sshd was asked to run, in order, with its unix time."""
        path = self.host(host).lab_dir / "commands.log"
        try:
            text = path.read_text()
        except FileNotFoundError:
            return []
        entries = []
        for line in text.splitlines():
            stamp, sep, encoded = line.partition("\t")
            # A line being appended right now may be incomplete; it shows up next time.
            if not sep:
                continue
            try:
                command = base64.b64decode(encoded, validate=True).decode(errors="replace")
                entries.append((float(stamp), command))
            except ValueError:
                continue
        return entries

    def command_log(self, host: str) -> list[str]:
        return [command for _, command in self.command_log_timed(host)]

    def in_maintenance(self, host: str) -> bool:
        return (self.host(host).state_dir / "maintenance").exists()

    def service_state(self, host: str, service: str) -> str:
        """``active``, ``inactive`` or ``failed``, as the host's ``systemctl is-active`` says."""
        h = self.host(host)
        try:
            state = (h.lab_dir / "services" / service).read_text().strip()
        except FileNotFoundError:
            return "inactive"
        if state == "active" and f"unhealthy:{service}" in self.faults(host):
            return "failed"
        return state

    def update_count(self, host: str) -> int:
        try:
            return int((self.host(host).lab_dir / "update-count").read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def set_pending_updates(self, host: str, lines: Iterable[str]) -> None:
        """What ``apt list --upgradable`` lists; a ``linux-image`` line makes the upgrade leave
        ``/var/run/reboot-required`` behind, as Debian's kernel packages do."""
        text = "".join(f"{line}\n" for line in lines)
        (self.host(host).lab_dir / "pending").write_text(text)

    def pending_updates(self, host: str) -> list[str]:
        try:
            return (self.host(host).lab_dir / "pending").read_text().splitlines()
        except FileNotFoundError:
            return []

    def set_reboot_required(self, host: str, required: bool = True) -> None:
        flag = self.host(host).run_dir / "reboot-required"
        if required:
            flag.write_text("*** System restart required ***\n")
        else:
            flag.unlink(missing_ok=True)

    def reboot_required(self, host: str) -> bool:
        return (self.host(host).run_dir / "reboot-required").exists()

    def boot_id(self, host: str) -> str:
        return self.host(host).boot_id_path.read_text().strip()

    def reboot_count(self, host: str) -> int:
        """How many times ``reboot``/``shutdown``/... ran on the host (none of them reboots)."""
        try:
            return len((self.host(host).lab_dir / "reboots").read_text().splitlines())
        except FileNotFoundError:
            return 0

    def hung_processes(self, host: str) -> list[int]:
        """Pids of the host's simulated hangs (update-hang, hang-command) that are still alive."""
        hangs = self.host(host).lab_dir / "hangs"
        alive = []
        for record in sorted(hangs.glob("*")) if hangs.is_dir() else []:
            try:
                pid_text, start_time = record.read_text().split()
                pid = int(pid_text)
            except (OSError, ValueError):
                continue
            if _process_start_time(pid) == start_time:
                alive.append(pid)
        return alive

    def faults(self, host: str) -> list[str]:
        try:
            text = (self.host(host).lab_dir / "faults").read_text()
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line]

    # ------------------------------------------------------------------ switches

    def set_fault(self, host: str, fault: str) -> None:
        """Switch a fault on for ``host``. The faults:

        - ``update-fail``: the simulated upgrade exits 100, "E: simulated upgrade failure on <host>"
        - ``update-hang``: the simulated upgrade writes its pid to ``update.pid`` and never ends
        - ``start-fail:<svc>``: ``systemctl start <svc>`` exits 1 and leaves the service failed
        - ``unhealthy:<svc>``: ``systemctl start <svc>`` succeeds, ``is-active`` says failed (3)
        - ``fail-command:<text>``: any command containing <text> exits 1 without running
        - ``hang-command:<text>``: any command containing <text> never ends (``hung_processes``)
        - ``reboot-never-returns``: after a ``reboot`` the host stays down
        """
        if "\n" in fault or not fault:
            raise ValueError("a fault is one non-empty line")
        kind = fault.split(":", 1)[0]
        if fault not in ("update-fail", "update-hang", "reboot-never-returns") and kind not in (
            "start-fail",
            "unhealthy",
            "fail-command",
            "hang-command",
        ):
            raise ValueError(f"unknown fault {fault!r}")
        if kind != fault and not fault.split(":", 1)[1]:
            raise ValueError(f"fault {fault!r} needs a value after ':'")
        faults = self.faults(host)
        if fault not in faults:
            self._write_faults(host, [*faults, fault])

    def clear_fault(self, host: str, fault: str) -> None:
        self._write_faults(host, [f for f in self.faults(host) if f != fault])

    def clear_faults(self, host: str) -> None:
        self._write_faults(host, [])

    def clear_logs(self) -> None:
        for h in self.hosts:
            _truncate(h.lab_dir / "commands.log")

    def reset_host(self, host: str) -> None:
        """Back to the initial state: services active, no maintenance, no faults, no history.

        Simulated hangs on the host are killed; the sshd keeps running (or stays stopped).
        """
        h = self.host(host)
        for pid in self.hung_processes(h.name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Only the contents: the directories themselves are bind-mounted into the host, and a
        # recreated directory would be a different inode that the host no longer sees.
        _empty_dir(h.state_dir)
        _empty_dir(h.lab_dir)
        _empty_dir(h.run_dir)
        self._init_host_state(h)

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

    def _write_faults(self, host: str, faults: Iterable[str]) -> None:
        path = self.host(host).lab_dir / "faults"
        tmp = path.with_name("faults.tmp")
        tmp.write_text("".join(f"{f}\n" for f in faults))
        # Atomic, so a command running right now sees the old list or the new one.
        tmp.replace(path)

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
        _write_in_place(h.boot_id_path, f"{uuid.uuid4()}\n")
        if "reboot-never-returns" in self.faults(h.name):
            return
        if self._stopping.wait(self.reboot_delay):
            return
        self.start_host(h.name)

    # ------------------------------------------------------------------ building hosts

    def _check_requirements(self) -> None:
        if not Path(SSHD).exists():
            raise FileNotFoundError(f"{SSHD} is missing (Debian package openssh-server)")
        for tool in ("unshare", "mount"):
            if shutil.which(tool) is None:
                raise FileNotFoundError(f"{tool} is missing (Debian packages util-linux, mount)")
        # sshd refuses to start without its privilege separation directory; the mount points
        # must exist on the real filesystem for the bind mounts.
        for directory in (Path("/run/sshd"), HOST_STATE_DIR, HOST_LAB_DIR):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)

    def _prepare(self) -> None:
        self._check_requirements()

        self.root.mkdir(parents=True, exist_ok=True)
        self._install_simulators()

        client_key = asyncssh.generate_private_key("ssh-ed25519", comment="patchpilot-lab")
        self.client_private_key = client_key.export_private_key("openssh").decode()
        _write_private(self.client_key_path, self.client_private_key)
        self.authorized_keys_path.write_bytes(client_key.export_public_key("openssh"))

        for h in self.hosts:
            for directory in (h.root, h.state_dir, h.lab_dir, h.run_dir):
                directory.mkdir(parents=True, exist_ok=True)
            h.boot_id_path.touch()
            self._write_host_key(h)
            h.sshd_config_path.write_text(self._sshd_config(h))
            self.reset_host(h.name)
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

    def _write_host_key(self, h: LabHost) -> None:
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"lab-{h.name}")
        _write_private(h.host_key_path, key.export_private_key("openssh").decode())
        h.host_key_path.with_name("ssh_host_ed25519_key.pub").write_bytes(
            key.export_public_key("openssh")
        )

    def _sshd_config(self, h: LabHost) -> str:
        return "\n".join(
            [
                f"ListenAddress {h.address}:{h.port}",
                f"HostKey {h.host_key_path}",
                f"AuthorizedKeysFile {self.authorized_keys_path}",
                f"AllowUsers {self.user}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "PidFile none",
                "MaxStartups 200",
                "MaxSessions 200",
                "LogLevel ERROR",
                "PrintMotd no",
                "PrintLastLog no",
                "UseDNS no",
                "AcceptEnv LANG LC_*",
                f"ForceCommand {SIM_BIN_MOUNT}/lab-shell",
                "",
            ]
        )

    def _namespace_script(self) -> str:
        mounts = [
            f'mount --bind "$1/patchpilot" {HOST_STATE_DIR}',
            f'mount --bind "$1/lab" {HOST_LAB_DIR}',
            # Per-host /run (reboot-required flag; sshd's privsep dir is recreated in it) and a
            # boot id that changes when the lab "reboots" the host.
            'mount --bind "$1/run" /run',
            'mount --bind "$1/boot_id" /proc/sys/kernel/random/boot_id',
        ]
        # Mount over the real file a path resolves to, once: on merged-/usr systems /sbin/reboot
        # and /usr/bin/systemctl can be the same file.
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
                mounts.append(f'mount --bind "$2/{name}" {shlex.quote(real)}')
        # A lab host is a fresh machine: the developer's shell start-up files (pyenv init and the
        # like cost ~190 ms per SSH command here) must not run in every session.
        for startup in ("/root/.bashrc", "/root/.profile", "/root/.bash_profile"):
            if Path(startup).is_file():
                mounts.append(f"mount --bind /dev/null {startup}")
        # sim-bin goes last: the per-file mounts above read the scripts from the lab root.
        mounts.append(f'mount --bind "$2" {SIM_BIN_MOUNT}')
        return " && ".join([*mounts, f'exec {SSHD} -D -e -f "$3"'])

    def _spawn(self, h: LabHost) -> None:
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            self._namespace_script(),
            f"lab-host-{h.name}",
            str(h.root),
            str(self.sim_bin),
            str(h.sshd_config_path),
        ]
        log = h.log_path.open("ab")
        # Own session, so stopping the lab reaches the listener even if it forked.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        self._running[h.name] = _Running(proc=proc, log=log)

    def _wait_ready(self, h: LabHost) -> None:
        running = self._running[h.name]
        deadline = time.monotonic() + _READY_TIMEOUT
        while not _ssh_banner(h.address, h.port):
            if running.proc.poll() is not None:
                code = running.proc.returncode
                self._kill_host(h.name)
                raise RuntimeError(
                    f"lab host {h.name} ({h.address}:{h.port}): sshd exited with code {code}; "
                    f"log {h.log_path}:\n{log_tail(h.log_path)}"
                )
            if time.monotonic() > deadline:
                self._kill_host(h.name)
                raise TimeoutError(
                    f"lab host {h.name} ({h.address}:{h.port}) not accepting SSH after "
                    f"{_READY_TIMEOUT:.0f}s; log {h.log_path}:\n{log_tail(h.log_path)}"
                )
            time.sleep(0.02)
        # sshd answering means unshare and the mounts are done and sshd runs under the
        # launcher's pid, so its namespace is now the host's.
        try:
            fd = os.open(f"/proc/{running.proc.pid}/ns/mnt", os.O_RDONLY)
        except OSError:
            return
        ns = _mount_ns(running.proc.pid)
        if ns is not None and ns != _mount_ns(os.getpid()) and ns == _fd_ns(fd):
            running.mount_ns, running.ns_fd = ns, fd
        else:
            os.close(fd)

    def _kill_host(self, name: str) -> None:
        running = self._running.pop(name, None)
        if running is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(running.proc.pid, signal.SIGKILL)
        try:
            if running.mount_ns is not None:
                _kill_namespace(running.mount_ns)
            kill_process_group(running.proc, timeout=5)
        finally:
            if running.ns_fd is not None:
                os.close(running.ns_fd)
            running.log.close()

    def _init_host_state(self, h: LabHost) -> None:
        (h.lab_dir / ".lab-host").write_text(f"{h.name}\n")
        (h.run_dir / "sshd").mkdir(mode=0o755, exist_ok=True)
        _write_in_place(h.boot_id_path, f"{uuid.uuid4()}\n")
        (h.lab_dir / "pending").write_text("".join(f"{line}\n" for line in DEFAULT_PENDING))
        services = h.lab_dir / "services"
        services.mkdir(exist_ok=True)
        for svc in self.services:
            (services / svc).write_text("active\n")


# ---------------------------------------------------------------------- helpers


def _write_private(path: Path, text: str) -> None:
    # sshd and ssh refuse private keys others can read.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


def _write_in_place(path: Path, text: str) -> None:
    # Same inode: the file is bind-mounted into the host, a replaced file would not be seen.
    with path.open("r+" if path.exists() else "w") as fh:
        fh.seek(0)
        fh.write(text)
        fh.truncate()


def _truncate(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError), path.open("r+b") as fh:
        fh.truncate(0)


def _empty_dir(directory: Path) -> None:
    for entry in directory.iterdir() if directory.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _ssh_banner(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def _fd_ns(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino)


def _mount_ns(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _process_start_time(pid: int) -> str | None:
    """Start time of a live process (None if gone, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in field 2 may contain spaces, so count from ')': field 3 is the state,
    # field 22 the start time.
    fields = stat[stat.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _kill_namespace(ns: tuple[int, int], timeout: float = 5.0) -> None:
    """SIGKILL every process in mount namespace ``ns`` until none is left."""
    if ns == _mount_ns(os.getpid()):
        # Never: that would be every process of the machine, this one included.
        raise RuntimeError("refusing to kill the test process's own mount namespace")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            pid = int(entry)
            if pid == os.getpid() or _mount_ns(pid) != ns:
                continue
            found = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not found:
            return
        time.sleep(0.01)
