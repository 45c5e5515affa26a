"""The pre-flight doctor, part of the preconditions (issue 15, item 4): what the package manager's
own state says before a host is touched.

One read-only command (PREFLIGHT) reports, in sections:

- `audit`: `dpkg --audit` — packages an interrupted dpkg left half-installed or half-configured.
  Any line refuses the host: "run dpkg --configure -a" (an upgrade on top would fail, or worse).
- `locks`: the dpkg/apt lock files held, each with the holder's pid and name (from /proc/locks,
  as fuser would find it, without psmisc). PatchPilot waits for them to be let go for up to the
  host's `preflight_lock_wait` seconds, then refuses naming the holder.
- `df`: free space (`df -Pk`) on the file systems holding `/`, `/var` and `/boot`; below the
  host's `preflight_free_mb` thresholds refuses with the numbers.
- `held`: packages on hold (dpkg selections): listed, never refused (a hold is deliberate).
- `reboot`: a reboot already pending before this change (`/var/run/reboot-required`, with the
  packages of `.pkgs`): reported.

A host without dpkg has empty `audit`, `locks` and `held` sections. Every value is validated
(host_values.py's rule): a line that does not parse is a HostValueError quoting it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from activities.host_values import HostValueError, shown
from activities.ssh import CommandResult, HostSession
from workflows.models import HostStepInput

__all__ = ["PREFLIGHT", "Preflight", "parse_preflight", "preflight_problem", "thresholds"]

LOCK_FILES = (
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
)
LOCK_POLL_SECONDS = 2.0
# The one command; each section starts with a line "== name".
PREFLIGHT = f"""echo '== audit'
command -v dpkg > /dev/null 2>&1 && dpkg --audit 2>&1
echo '== locks'
for f in {" ".join(LOCK_FILES)}; do
    [ -e "$f" ] || continue
    i=$(stat -c %i "$f") || continue
    awk -v i="$i" '{{ n = split($(NF-2), a, ":"); if (a[n] == i) print $(NF-3) }}' /proc/locks |
    while read -r pid; do echo "$f $pid $(cat /proc/$pid/comm 2>/dev/null || echo '?')"; done
done
echo '== df'
for p in / /var /boot; do [ -e "$p" ] && echo "$p $(df -Pk "$p" | tail -n 1)"; done
echo '== held'
command -v dpkg-query > /dev/null 2>&1 && dpkg-query -W -f='${{db:Status-Want}} ${{Package}}\\n' |
    awk '$1 == "hold" {{ print $2 }}'
echo '== reboot'
if [ -e /var/run/reboot-required ]; then
    echo required; cat /var/run/reboot-required.pkgs 2>/dev/null
fi
true
"""
# "PATH FILESYSTEM 1024-BLOCKS USED AVAILABLE CAPACITY MOUNTED-ON" (df -P, POSIX's format).
_DF_LINE = re.compile(r"^(/\S*) (\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(/.*)$")
_LOCK_LINE = re.compile(r"^(/\S+) (\d+) (.*)$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


@dataclass
class Preflight:
    """What the doctor read on a host (see the module doc for each part)."""

    audit: list[str] = field(default_factory=list)
    # (lock file, holder pid, holder name)
    locks: list[tuple[str, int, str]] = field(default_factory=list)
    # path -> (mount point, free MiB)
    free_mb: dict[str, tuple[str, int]] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)
    reboot_pending: bool = False
    reboot_packages: list[str] = field(default_factory=list)

    def notes(self) -> list[str]:
        """What is reported but not refused: holds and a reboot already pending."""
        found = []
        if self.held:
            found.append(f"held packages (left as they are): {', '.join(self.held)}")
        if self.reboot_pending:
            by = f" (for {', '.join(self.reboot_packages)})" if self.reboot_packages else ""
            found.append(f"a reboot was already pending before this change{by}")
        return found


def thresholds(spec: str) -> dict[str, int]:
    """`"/=500,/var=1000,/boot=100"` -> {"/": 500, "/var": 1000, "/boot": 100} (MiB free at
    least). ValueError naming the part that is not `PATH=MiB`."""
    found: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        path, _, number = part.partition("=")
        if not path.startswith("/") or not number.strip().isdigit():
            raise ValueError(f"preflight_free_mb: {part!r} is not PATH=MiB (e.g. /var=1000)")
        found[path.strip()] = int(number)
    return found


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("== "):
            current = sections.setdefault(line[3:].strip(), [])
        elif current is not None and line.strip():
            current.append(line.rstrip())
    return sections


def parse_preflight(result: CommandResult, host: str) -> Preflight:
    """The doctor's report from its command's result; HostValueError (saying what was read) for
    a failed command, a missing section, or a line that does not parse."""
    what = f"the pre-flight check on {host}"
    if not result.ok:
        raise HostValueError(f"{what} exited {result.exit_status}: {result.tail()}")
    sections = _sections(result.stdout)
    missing = [s for s in ("audit", "locks", "df", "held", "reboot") if s not in sections]
    if missing or not result.stdout_complete:
        raise HostValueError(
            f"{what} printed no {', '.join(missing) or 'complete'} section(s): "
            f"{shown(result.stdout)}"
        )
    found = Preflight(audit=sections["audit"])
    for line in sections["locks"]:
        lock = _LOCK_LINE.match(line)
        if not lock:
            raise HostValueError(f"{what} printed a lock line that does not parse: {shown(line)}")
        found.locks.append((lock.group(1), int(lock.group(2)), lock.group(3).strip()))
    for line in sections["df"]:
        df = _DF_LINE.match(line)
        if not df:
            raise HostValueError(f"{what} printed a df line that does not parse: {shown(line)}")
        found.free_mb[df.group(1)] = (df.group(7), int(df.group(5)) // 1024)
    for name in sections["held"]:
        if not _PACKAGE.match(name):
            raise HostValueError(f"{what} printed a held package that is not one: {shown(name)}")
        found.held.append(name)
    if sections["reboot"]:
        found.reboot_pending = sections["reboot"][0] == "required"
        found.reboot_packages = sorted(set(sections["reboot"][1:]))
    return found


def _refusal(found: Preflight, host: str, minimum: dict[str, int]) -> str | None:
    """Why the doctor's report refuses the host (locks aside), or None."""
    if found.audit:
        listed = "; ".join(line.strip() for line in found.audit[:6])
        return (
            f"dpkg on {host} was interrupted and left packages unfinished (dpkg --audit: "
            f"{listed}); run dpkg --configure -a on the host, then patch it again"
        )
    low = [
        f"{path} ({mount}) has {free} MiB free, below {minimum[path]} MiB"
        for path, (mount, free) in found.free_mb.items()
        if path in minimum and free < minimum[path]
    ]
    if low:
        return f"not enough free space on {host} to patch it safely: {'; '.join(low)}"
    return None


async def preflight_problem(
    session: HostSession,
    step: HostStepInput,
    *,
    heartbeat: Callable[[], None] | None = None,
) -> tuple[str | None, list[str]]:
    """Run the doctor on the session's host: (why it must not be patched now or None, notes).

    A held dpkg/apt lock is waited for, up to the host's `preflight_lock_wait` seconds, polling;
    then refused with the holder's pid and name. Raises HostValueError for an answer that does
    not parse, ValueError for a malformed `preflight_free_mb`.
    """
    commands = step.host.commands
    minimum = thresholds(commands.preflight_free_mb)
    host = step.host.name
    loop = asyncio.get_running_loop()
    deadline = loop.time() + commands.preflight_lock_wait
    while True:
        result = await session.run(PREFLIGHT, step.timeout_seconds, what="the pre-flight check")
        found = parse_preflight(result, host)
        refused = _refusal(found, host, minimum)
        if refused or not found.locks:
            return refused, found.notes()
        if loop.time() >= deadline:
            holders = "; ".join(
                f"{path} by process {pid} ({name})" for path, pid, name in found.locks
            )
            return (
                f"the package manager on {host} is busy: {holders}, still held after "
                f"{commands.preflight_lock_wait:g}s; wait for it to finish (or stop it), then "
                "patch the host again"
            ), found.notes()
        if heartbeat:
            heartbeat()
        await asyncio.sleep(min(LOCK_POLL_SECONDS, max(0.0, deadline - loop.time())))
