"""Building blocks of an sshd lab: requirements, keys, simulators, sshd configuration, the mount
namespace an sshd runs in, and the launcher process that owns it.

Both labs run sshd the same way: ``unshare --mount`` starts a shell that bind-mounts the
simulators over the machine's system tools (only inside that namespace) and then runs sshd, in
a session of its own so that stopping reaches everything it started.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import asyncssh

from bot.embedded import kill_process_group, log_tail
from lab.host import HOST_LAB_DIR, HOST_MOUNTS, HOST_STATE_DIR, SIM_BIN_MOUNT
from lab.procfs import MountNamespace, kill_namespace, pin_mount_namespace

SSHD = "/usr/sbin/sshd"

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
# A lab host is a fresh machine: the developer's shell start-up files (pyenv init and the like
# cost ~190 ms per SSH command here) must not run in every session.
_STARTUP_FILES = ("/root/.bashrc", "/root/.profile", "/root/.bash_profile")


def check_requirements() -> None:
    """Raise FileNotFoundError naming the Debian package if sshd, unshare or mount is missing;
    create the directories sshd and the bind mounts need on the real filesystem."""
    if not Path(SSHD).exists():
        raise FileNotFoundError(f"{SSHD} is missing (Debian package openssh-server)")
    for tool in ("unshare", "mount"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} is missing (Debian packages util-linux, mount)")
    # sshd refuses to start without its privilege separation directory; the mount points
    # must exist on the real filesystem for the bind mounts.
    for directory in (Path("/run/sshd"), HOST_STATE_DIR, HOST_LAB_DIR):
        directory.mkdir(mode=0o755, parents=True, exist_ok=True)


def install_simulators(sim_bin: Path) -> None:
    """Copy the simulators (package data ``lab/sim``) into ``sim_bin``, executable, with their
    aliases (``apt`` for ``apt-get``, ``shutdown`` for ``reboot``, ...)."""
    sim_bin.mkdir(parents=True, exist_ok=True)
    source = importlib.resources.files("lab") / "sim"
    for name in _SIM_SCRIPTS:
        target = sim_bin / name
        target.write_bytes((source / name).read_bytes())
        target.chmod(0o755)
    for alias, name in _SIM_ALIASES.items():
        shutil.copy2(sim_bin / name, sim_bin / alias)


def write_private(path: Path, text: str) -> None:
    """Write a private key readable by its owner only (sshd and ssh refuse any other)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    path.chmod(0o600)


def write_key_pair(private_path: Path, comment: str, public_path: Path | None = None) -> str:
    """Generate an Ed25519 key; write it in OpenSSH format to ``private_path`` and its public
    half to ``public_path`` (default: ``<private_path>.pub``). Returns the private key text."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    private = key.export_private_key("openssh").decode()
    write_private(private_path, private)
    public_path = public_path or public_key_file(private_path)
    public_path.write_bytes(key.export_public_key("openssh"))
    return private


def public_key_file(private_path: Path) -> Path:
    """Where ``write_key_pair`` puts the public half of ``private_path`` by default."""
    return private_path.with_name(private_path.name + ".pub")


def known_hosts_line(host: str, port: int, public_key: str) -> str:
    """One known_hosts line for ``host`` (an address or an OpenSSH pattern such as
    ``127.50.*``) on ``port``; ``public_key`` is the text of a ``.pub`` file (comment dropped)."""
    kind, key = public_key.split()[:2]
    where = host if port == 22 else f"[{host}]:{port}"
    return f"{where} {kind} {key}\n"


def sshd_config(
    *,
    listen: str,
    host_key: Path,
    authorized_keys: Path,
    allow_users: str,
    max_startups: int,
    force_command: Path,
) -> str:
    """An sshd_config for a lab: key logins only, no PAM, no DNS, every session through
    ``force_command``. ``listen`` is ``ADDRESS:PORT``."""
    return "\n".join(
        [
            f"ListenAddress {listen}",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {authorized_keys}",
            f"AllowUsers {allow_users}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PidFile none",
            f"MaxStartups {max_startups}",
            "MaxSessions 200",
            "LogLevel ERROR",
            "PrintMotd no",
            "PrintLastLog no",
            "UseDNS no",
            "AcceptEnv LANG LC_*",
            f"ForceCommand {force_command}",
            "",
        ]
    )


def host_mounts(host_root: str) -> list[str]:
    """Shell commands that mount a host's directories over PatchPilot's fixed paths;
    ``host_root`` is a shell word for the host's root directory, e.g. ``"$1"``."""
    return [f"mount --bind {host_root}/{name} {target}" for name, target in HOST_MOUNTS]


def simulator_mounts(sim_bin: str) -> list[str]:
    """Shell commands that put the simulators in ``sim_bin`` (a shell word, e.g. ``"$2"``) over
    the system tools and at ``/usr/local/sbin``, and hide root's shell start-up files."""
    mounts: list[str] = []
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
            mounts.append(f"mount --bind {sim_bin}/{name} {shlex.quote(real)}")
    mounts += [f"mount --bind /dev/null {f}" for f in _STARTUP_FILES if Path(f).is_file()]
    # sim-bin goes last: the per-file mounts above read the scripts from the lab root.
    mounts.append(f"mount --bind {sim_bin} {SIM_BIN_MOUNT}")
    return mounts


def ssh_banner(address: str, port: int) -> bool:
    """True if an SSH server answers with its banner at ``address``:``port`` within a second."""
    try:
        with socket.create_connection((address, port), timeout=1) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


@dataclass
class SshdLauncher:
    """``unshare --mount -- sh -c SCRIPT``: the shell makes the mounts and runs sshd, in a session
    of its own so that stopping reaches the listeners even if they forked. Once sshd answers,
    ``pin_namespace`` records the namespace: every process of the lab host(s) behind this
    launcher is in it (sessions and simulated hangs included), and no process outside the lab."""

    proc: subprocess.Popen[bytes]
    log: IO[bytes]
    log_path: Path
    mount_ns: MountNamespace | None = None
    # An open fd on that namespace keeps its inode number from going to a new namespace
    # (another lab's host) before the kill loop is done with it.
    ns_fd: int | None = None

    @classmethod
    def start(
        cls, script: str, name: str, args: list[str], log_path: Path, *, cpu: int | None = None
    ) -> SshdLauncher:
        """Run ``script`` as ``sh -c`` in a new private mount namespace, ``$0`` = ``name`` and
        ``$1``... = ``args``, output appended to ``log_path``; on CPU ``cpu`` only if given."""
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script]
        if cpu is not None:
            argv = ["taskset", "--cpu-list", str(cpu), *argv]
        log = log_path.open("ab")
        proc = subprocess.Popen(
            [*argv, name, *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        return cls(proc, log, log_path)

    def wait_ready(
        self, what: str, endpoints: list[tuple[str, int]], timeout: float, interval: float
    ) -> None:
        """Wait until sshd answers at every (address, port) of ``endpoints``, then pin the
        namespace. Raises RuntimeError if the launcher exits first, TimeoutError after
        ``timeout`` seconds; both carry the end of the log and name ``what``."""
        deadline = time.monotonic() + timeout
        pending = list(endpoints)
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{what}: sshd exited with code {self.proc.returncode}; "
                    f"log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{what}: {', '.join(f'{a}:{p}' for a, p in pending)} not accepting SSH "
                    f"after {timeout:.0f}s; log {self.log_path}:\n{log_tail(self.log_path)}"
                )
            pending = [(a, p) for a, p in pending if not ssh_banner(a, p)]
            if pending:
                time.sleep(interval)
        # sshd answering means unshare and the mounts are done and sshd runs under the
        # launcher's pid, so its namespace is now the lab's.
        pinned = pin_mount_namespace(self.proc.pid)
        if pinned is not None:
            self.mount_ns, self.ns_fd = pinned

    def kill(self, *, started_before: float | None = None) -> None:
        """SIGKILL the launcher's session and every process in its namespace (see
        ``procfs.kill_namespace`` for ``started_before``), reap it, close the log."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        try:
            if self.mount_ns is not None:
                kill_namespace(self.mount_ns, started_before=started_before)
            kill_process_group(self.proc, timeout=5)
        finally:
            if self.ns_fd is not None:
                os.close(self.ns_fd)
                self.ns_fd = None
            self.mount_ns = None
            self.log.close()
