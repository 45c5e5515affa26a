"""A lab host's state as the test process reads and switches it: through the host's directories
on the real filesystem, the same files the simulators (``lab/sim``) read and write inside it.

What the simulators keep in a host's lab directory (``/var/lib/patchpilot-lab`` inside it):
``.lab-host`` (the host's name; without it every simulator refuses to run), ``commands/`` (one
file per SSH command, ``TIME.PID``: unix time, tab, the command's length in bytes, tab, the
command, newline; see ``lab/sim/lab-shell``), ``services/<name>`` (the state
``systemctl`` reports), ``faults``, ``pending`` (what ``apt list --upgradable`` shows),
``update-count``, ``reboots``, ``hangs/<pid>`` (pid and start time of a simulated hang).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import uuid
from collections.abc import Iterable
from pathlib import Path

from lab import procfs
from lab.host import LabHost

_SERVICE_RE = re.compile(r"^[A-Za-z0-9@._:-]+$")
_PLAIN_FAULTS = ("update-fail", "update-hang", "reboot-never-returns", "sudo-needs-password")
_VALUED_FAULTS = ("start-fail", "unhealthy", "fail-command", "hang-command")
# The directory of a host's command log: one file per SSH command (lab/sim/lab-shell).
COMMAND_LOG = "commands"


def parse_command_record(data: bytes) -> tuple[float, str] | None:
    """The (unix time, command) of one file of a host's ``commands/`` (``lab/sim/lab-shell``:
    ``TIME\\tLENGTH\\tCOMMAND\\n``, LENGTH in bytes; a command may hold tabs and newlines);
    None for a record still being written (shorter than its length says). ValueError for one
    that is not a record."""
    stamp, tab, rest = data.partition(b"\t")
    length, tab2, command = rest.partition(b"\t")
    if not (tab and tab2) and len(data) < 64 and b"\n" not in data:
        return None  # the head itself is still being written
    try:
        when, size = float(stamp), int(length)
    except ValueError:
        raise ValueError(f"not a command record: {data[:80]!r}") from None
    if size < 0 or len(command) > size + 1 or (len(command) == size + 1 and command[-1:] != b"\n"):
        raise ValueError(f"not a command record: {data[:80]!r}")
    if len(command) < size + 1:
        return None
    return when, command[:size].decode(errors="replace")


class HostStates:
    """The lab's hosts by name, and each host's simulated state: what it was asked to run, its
    services, maintenance flag, updates, reboots and hangs, and the faults switched on.

    Every method taking ``host`` raises KeyError for a name that is not a lab host.
    """

    def __init__(self, services: Iterable[str]) -> None:
        self.services = tuple(services)
        for svc in self.services:
            if not _SERVICE_RE.match(svc):
                raise ValueError(f"invalid service name {svc!r}")
        self.hosts: list[LabHost] = []
        self._by_name: dict[str, LabHost] = {}

    def _index_hosts(self) -> None:
        """Make ``host()`` find every host of ``self.hosts``; ValueError on a repeated name."""
        self._by_name = {h.name: h for h in self.hosts}
        if len(self._by_name) != len(self.hosts):
            raise ValueError("host names must be unique across clusters")

    def host(self, name: str) -> LabHost:
        """The host called ``name``; KeyError (listing some host names) if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            names = sorted(self._by_name)
            shown = f"{names[:20]} and {len(names) - 20} more" if len(names) > 20 else names
            raise KeyError(f"no lab host {name!r}; hosts: {shown}") from None

    # ------------------------------------------------------------------ observations

    def command_log_timed(self, host: str) -> list[tuple[float, str]]:
        """Every command the host was asked to run over SSH, in order, with its unix time (a
        record still being written shows up next time)."""
        directory = self.host(host).lab_dir / COMMAND_LOG
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return []
        entries: list[tuple[float, str, str]] = []
        for name in names:
            try:
                record = parse_command_record((directory / name).read_bytes())
            except FileNotFoundError:  # cleared meanwhile
                continue
            if record is not None:
                entries.append((*record, name))
        entries.sort(key=lambda entry: (entry[0], entry[2]))
        return [(stamp, command) for stamp, command, _ in entries]

    def command_log(self, host: str) -> list[str]:
        """Every command the host was asked to run over SSH, in order."""
        return [command for _, command in self.command_log_timed(host)]

    def in_maintenance(self, host: str) -> bool:
        """Whether PatchPilot's maintenance flag (``/var/lib/patchpilot/maintenance``) is set."""
        return (self.host(host).state_dir / "maintenance").exists()

    def service_state(self, host: str, service: str) -> str:
        """``active``, ``inactive`` or ``failed``, as the host's ``systemctl is-active`` says."""
        try:
            state = (self.host(host).lab_dir / "services" / service).read_text().strip()
        except FileNotFoundError:
            return "inactive"
        if state == "active" and f"unhealthy:{service}" in self.faults(host):
            return "failed"
        return state

    def update_count(self, host: str) -> int:
        """How many simulated upgrades (``apt-get -y upgrade``, ``dnf -y upgrade``, ...) ran."""
        try:
            return int((self.host(host).lab_dir / "update-count").read_text().strip() or 0)
        except FileNotFoundError:
            return 0

    def pending_updates(self, host: str) -> list[str]:
        """The lines ``apt list --upgradable`` shows on the host now."""
        try:
            return (self.host(host).lab_dir / "pending").read_text().splitlines()
        except FileNotFoundError:
            return []

    def reboot_required(self, host: str) -> bool:
        """Whether the host has ``/var/run/reboot-required``."""
        return (self.host(host).run_dir / "reboot-required").exists()

    def boot_id(self, host: str) -> str:
        """The host's ``/proc/sys/kernel/random/boot_id`` (a new one after a simulated reboot)."""
        return self.host(host).boot_id_path.read_text().strip()

    def reboot_count(self, host: str) -> int:
        """How many times ``reboot``/``shutdown``/... ran on the host (none of them reboots)."""
        try:
            return len((self.host(host).lab_dir / "reboots").read_text().splitlines())
        except FileNotFoundError:
            return 0

    def apt_environments(self, host: str) -> list[str]:
        """Per simulated upgrade, the question settings apt saw:
        ``DEBIAN_FRONTEND=… NEEDRESTART_MODE=… DPKG_FORCE=…``."""
        try:
            return (self.host(host).lab_dir / "apt-env").read_text().splitlines()
        except FileNotFoundError:
            return []

    def sudo_calls(self, host: str) -> list[tuple[str, str]]:
        """Every ``sudo`` the host ran, in order: (target user, the command's words joined)."""
        try:
            text = (self.host(host).lab_dir / "sudo.log").read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [
            (user, command)
            for user, _, command in (line.partition("\t") for line in text.splitlines())
        ]

    def hung_processes(self, host: str) -> list[int]:
        """Pids of the host's simulated hangs (update-hang, hang-command) that are still alive."""
        hangs = self.host(host).lab_dir / "hangs"
        alive = []
        for record in sorted(hangs.glob("*")) if hangs.is_dir() else []:
            try:
                pid_text, started = record.read_text().split()
                pid = int(pid_text)
            except (OSError, ValueError):
                continue
            # The recorded start time tells this process from a later one with the same pid.
            if procfs.start_ticks(pid) == started:
                alive.append(pid)
        return alive

    def faults(self, host: str) -> list[str]:
        """The faults switched on for the host (see ``set_fault``), in the order they were."""
        try:
            text = (self.host(host).lab_dir / "faults").read_text()
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line]

    def verify_patched(self, expected_updates: int = 1) -> list[str]:
        """Problems found after a rollout: hosts not updated exactly ``expected_updates`` times,
        left in maintenance or with a service not active. Empty means every host was patched
        cleanly."""
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

    # ------------------------------------------------------------------ switches

    def set_fault(self, host: str, fault: str) -> None:
        """Switch a fault on for ``host`` (ValueError for an unknown or malformed one). The faults:

        - ``update-fail``: the simulated upgrade exits 100, "E: simulated upgrade failure on <host>"
        - ``update-hang``: the simulated upgrade writes its pid to ``update.pid`` and never ends
        - ``start-fail:<svc>``: ``systemctl start <svc>`` exits 1 and leaves the service failed
        - ``unhealthy:<svc>``: ``systemctl start <svc>`` succeeds, ``is-active`` says failed (3)
        - ``fail-command:<text>``: any command containing <text> exits 1 without running
        - ``hang-command:<text>``: any command containing <text> never ends (``hung_processes``)
        - ``reboot-never-returns``: after a ``reboot`` the host stays down (sshd lab only)
        - ``sudo-needs-password``: ``sudo -n`` exits 1 with "sudo: a password is required", as
          sudo(8) does for a user without NOPASSWD (every ``sudo`` call is logged to ``sudo.log``)
        """
        if "\n" in fault or not fault:
            raise ValueError("a fault is one non-empty line")
        kind = fault.split(":", 1)[0]
        if fault not in _PLAIN_FAULTS and kind not in _VALUED_FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        if kind != fault and not fault.split(":", 1)[1]:
            raise ValueError(f"fault {fault!r} needs a value after ':'")
        faults = self.faults(host)
        if fault not in faults:
            self._write_faults(host, [*faults, fault])

    def clear_fault(self, host: str, fault: str) -> None:
        """Switch one fault off for ``host`` (no error if it was not on)."""
        self._write_faults(host, [f for f in self.faults(host) if f != fault])

    def clear_faults(self, host: str) -> None:
        """Switch every fault off for ``host``."""
        self._write_faults(host, [])

    def set_pending_updates(self, host: str, lines: Iterable[str]) -> None:
        """What ``apt list --upgradable`` lists; a ``linux-image`` line makes the upgrade leave
        ``/var/run/reboot-required`` behind, as Debian's kernel packages do."""
        text = "".join(f"{line}\n" for line in lines)
        (self.host(host).lab_dir / "pending").write_text(text)

    def set_reboot_required(self, host: str, required: bool = True) -> None:
        """Create (or with ``required=False`` remove) the host's ``/var/run/reboot-required``."""
        flag = self.host(host).run_dir / "reboot-required"
        if required:
            flag.write_text("*** System restart required ***\n")
        else:
            flag.unlink(missing_ok=True)

    def clear_logs(self) -> None:
        """Empty every host's command log."""
        for h in self.hosts:
            _empty_dir(h.lab_dir / COMMAND_LOG)

    def reset_host(self, host: str) -> None:
        """Back to the initial state: services active, no maintenance, no faults, no history.

        Simulated hangs on the host are killed; its sshd keeps running (or stays stopped).
        """
        h = self.host(host)
        for pid in self.hung_processes(h.name):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # Only the contents: the directories themselves are bind-mounted into the host, and a
        # recreated directory would be a different inode that the host no longer sees.
        for directory in (h.state_dir, h.lab_dir, h.run_dir):
            _empty_dir(directory)
        self._init_host_state(h)

    def _init_host_state(self, h: LabHost) -> None:
        """Fill a host's emptied directories with the initial state; a lab may add to it."""
        (h.lab_dir / ".lab-host").write_text(f"{h.name}\n")
        (h.lab_dir / COMMAND_LOG).mkdir(exist_ok=True)
        write_in_place(h.boot_id_path, f"{uuid.uuid4()}\n")
        services = h.lab_dir / "services"
        services.mkdir(exist_ok=True)
        for svc in self.services:
            (services / svc).write_text("active\n")

    def _write_faults(self, host: str, faults: Iterable[str]) -> None:
        path = self.host(host).lab_dir / "faults"
        tmp = path.with_name("faults.tmp")
        tmp.write_text("".join(f"{f}\n" for f in faults))
        # Atomic, so a command running right now sees the old list or the new one.
        tmp.replace(path)


def write_in_place(path: Path, text: str) -> None:
    """Replace the contents of ``path`` keeping its inode (creating it if missing)."""
    # Same inode: the file is bind-mounted into the host, a replaced file would not be seen.
    with path.open("r+" if path.exists() else "w") as fh:
        fh.seek(0)
        fh.write(text)
        fh.truncate()


def _empty_dir(directory: Path) -> None:
    for entry in directory.iterdir() if directory.is_dir() else []:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
