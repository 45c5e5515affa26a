"""The pre-flight doctor, part of the preconditions (issue 15, item 4): what the package manager's
own state says before a host is touched.

One read-only command (PREFLIGHT) reports, in sections:

- `audit`: `dpkg --audit` — packages an interrupted dpkg left half-installed or half-configured.
  Any line refuses the host: "run dpkg --configure -a" (an upgrade on top would fail, or worse).
  When the rollout opts in (`repairInterruptedDpkg`, workflows/repair.py) and no lock is held,
  the doctor runs that repair itself, once, audits again and refuses only if packages are still
  unfinished, with what dpkg said; the repair is one of the notes. A dry run never repairs.
- `locks`: the dpkg/apt lock files held, each with the holder's pid and name (from /proc/locks,
  as fuser would find it, without psmisc; only holders whose root is the host's own, as
  /proc/locks lists every lock of the kernel by inode number). PatchPilot waits for them to be let
  go for up to the host's `preflight_lock_wait` seconds, then refuses naming the holder; while
  one is held, `audit` and `df` refuse nothing (a dpkg at work lists its packages in `audit`).
- `df`: free space (`df -Pk`) on the file systems holding `/`, `/var` and `/boot`; below the
  host's `preflight_free_mb` thresholds refuses with the numbers.
- `held`: packages on hold (dpkg selections): listed, never refused (a hold is deliberate).
- `reboot`: a reboot already pending before this change (`/var/run/reboot-required`, with the
  packages of `.pkgs`): reported.
- `os-release`: the host's os-release (workflows/families.py), which gives its OS family: the
  session exports it to every later command (PATCHPILOT_OS_FAMILY). A family PatchPilot does not
  know refuses the host, saying what os-release said, unless none of the commands the rollout
  would run there picks its default by family (every one overridden for the host).

Each refusal is a `Refusal`: the sentence, and its kind (`DpkgInterrupted`, `PackageLockHeld`,
`LowDiskSpace`, `UnknownOsFamily`; preconditions.py adds the others), the type of the activity's
non-retryable error.

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
from workflows.families import FAMILY_VAR, READ_OS_RELEASE, described, family_of, parse_os_release
from workflows.models import HostStepInput
from workflows.repair import REPAIR_DPKG, REPAIR_FIELD

__all__ = [
    "PREFLIGHT",
    "Preflight",
    "Refusal",
    "parse_preflight",
    "preflight_problem",
    "should_repair",
    "thresholds",
    "unfinished_packages",
]


class Refusal(str):
    """Why a host must not be patched now: the sentence people read (a str), with its `kind`,
    the ApplicationError type the preconditions activity raises it as."""

    kind: str

    def __new__(cls, text: str, kind: str) -> Refusal:
        refusal = super().__new__(cls, text)
        refusal.kind = kind
        return refusal


LOCK_FILES = (
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
    "/var/lib/rpm/.rpm.lock",  # rpm's transaction lock (dnf and zypper hold it while they work)
)
LOCK_POLL_SECONDS = 2.0
NOTE_NAMES = 20  # package names in one note at most
# The one command; each section starts with a line "== name".
PREFLIGHT = f"""echo '== audit'
command -v dpkg > /dev/null 2>&1 && dpkg --audit 2>&1
echo '== locks'
# One stat and one awk for every lock file: "INODE PATH" of those that exist (passed in the
# environment: POSIX awk refuses a newline in a -v value), matched against the inode (last field
# of MAJOR:MINOR:INODE) of each lock the kernel lists; printed in the order of LOCK_FILES.
PATCHPILOT_LOCKS=$(stat -c '%i %n' {" ".join(LOCK_FILES)} 2> /dev/null)
[ -n "$PATCHPILOT_LOCKS" ] && PATCHPILOT_LOCKS=$PATCHPILOT_LOCKS awk '
    BEGIN {{ n = split(ENVIRON["PATCHPILOT_LOCKS"], l, "\\n")
        for (k = 1; k <= n; k++) {{ split(l[k], w, " "); f[w[1]] = f[w[1]] " " k; p[k] = w[2] }} }}
    {{ m = split($(NF-2), a, ":"); c = split(f[a[m]], ks, " ")
        for (j = 1; j <= c; j++) by[ks[j]] = by[ks[j]] p[ks[j]] " " $(NF-3) "\\n" }}
    END {{ for (k = 1; k <= n; k++) printf "%s", by[k] }}' /proc/locks |
while read -r f pid; do
    # /proc/locks is the kernel's, not this root's: a lock on the same inode number under
    # another root (a container, a chroot, another overlay of one image) is not this host's.
    [ -e "/proc/$pid/root/." ] && ! [ "/proc/$pid/root/." -ef / ] && continue
    echo "$f $pid $(cat /proc/$pid/comm 2>/dev/null || echo '?')"
done
echo '== df'
# One df for every path, each line paired with its path; when df fails for a path it leaves
# that line out (and the rest would pair wrongly), so then one df per path.
set --
for p in / /var /boot; do [ -e "$p" ] && set -- "$@" "$p"; done
df -Pk "$@" 2> /dev/null | awk -v p="$*" 'BEGIN {{ n = split(p, path, " ") }}
    NR > 1 {{ line[NR - 1] = $0 }}
    END {{ if (NR - 1 != n) exit 1; for (k = 1; k <= n; k++) print path[k], line[k] }}' ||
    for p; do echo "$p $(df -Pk "$p" | tail -n 1)"; done
echo '== held'
command -v dpkg-query > /dev/null 2>&1 && dpkg-query -W -f='${{db:Status-Want}} ${{Package}}\\n' |
    awk '$1 == "hold" {{ print $2 }}'
echo '== reboot'
if [ -e /var/run/reboot-required ]; then
    echo required; cat /var/run/reboot-required.pkgs 2>/dev/null
fi
echo '== os-release'
{READ_OS_RELEASE}
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
    # os-release's KEY -> value, and the family it gives (None: not one PatchPilot knows).
    os_release: dict[str, str] = field(default_factory=dict)
    family: str | None = None

    def notes(self) -> list[str]:
        """What is reported but not refused: holds and a reboot already pending (at most
        NOTE_NAMES package names each, the rest counted: the notes travel in every host's
        result and the rollout's summary)."""
        found = []
        if self.held:
            found.append(f"held packages (left as they are): {named(self.held)}")
        if self.reboot_pending:
            by = f" (for {named(self.reboot_packages)})" if self.reboot_packages else ""
            found.append(f"a reboot was already pending before this change{by}")
        return found


def named(names: list[str]) -> str:
    """`names` joined with ", ", the first NOTE_NAMES of them and "and N more"."""
    shown = ", ".join(names[:NOTE_NAMES])
    return shown + (f" and {len(names) - NOTE_NAMES} more" if len(names) > NOTE_NAMES else "")


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
    wanted = ("audit", "locks", "df", "held", "reboot", "os-release")
    missing = [s for s in wanted if s not in sections]
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
    try:
        found.os_release = parse_os_release("\n".join(sections["os-release"]))
    except ValueError as error:
        raise HostValueError(f"{what} read an os-release that does not parse: {error}") from None
    found.family = family_of(found.os_release)
    return found


# The host commands only a dry run runs (host_steps.inspect_host): a rollout never needs them.
DRY_RUN_ONLY = ("list_updates", "simulate_update")


def _family_refusal(
    found: Preflight, step: HostStepInput, inspecting: bool = False
) -> Refusal | None:
    """A host of no known family is refused while any command the rollout would run there
    picks its default by family (it would only print that it has none); `inspecting`: a dry
    run, which also runs DRY_RUN_ONLY."""
    if found.family is not None:
        return None
    commands = step.host.commands
    defaults = sorted(
        f"patchpilot_{name}"
        for name in type(commands).model_fields
        if FAMILY_VAR in str(getattr(commands, name)) and (inspecting or name not in DRY_RUN_ONLY)
    )
    profile = FAMILY_VAR in (step.command or step.job.update_command)
    if not defaults and not profile:
        return None
    needed = [f"set {', '.join(defaults)} for the host"] if defaults else []
    if profile:
        needed.append("give the rollout an update command for this OS (its own is a profile)")
    return Refusal(
        f"{step.host.name} runs an OS PatchPilot has no default commands for (os-release: "
        f"{described(found.os_release)}); PatchPilot knows apt (Debian, Ubuntu), dnf (RHEL 8+, "
        f"Fedora, Rocky, Alma) and zypper (SUSE): {' and '.join(needed)}",
        "UnknownOsFamily",
    )


def unfinished_packages(audit: list[str]) -> list[str]:
    """The package names `dpkg --audit` lists (its indented lines: " NAME  DESCRIPTION"), in
    order; its explanations are not names."""
    return [line.split()[0] for line in audit if line[:1].isspace() and line.split()]


def should_repair(found: Preflight, *, repair: bool, tried: bool) -> bool:
    """Whether the doctor repairs an interrupted dpkg now: the rollout opted in (`repair`), dpkg
    --audit lists unfinished packages, no package lock is held (a dpkg at work lists its
    packages too, and must not be raced) and no repair ran yet on this pass (`tried`)."""
    return repair and not tried and bool(found.audit) and not found.locks


def _refusal(
    found: Preflight,
    host: str,
    minimum: dict[str, int],
    repaired: CommandResult | None = None,
    would_repair: bool = False,
) -> Refusal | None:
    """Why the doctor's report refuses the host (locks and the OS family aside), or None.
    `repaired`: the repair's result when it ran; `would_repair`: a dry run of a rollout that
    would have repaired (it says so)."""
    if found.audit:
        listed = "; ".join(line.strip() for line in found.audit[:6])
        if repaired is not None:
            return Refusal(
                f"dpkg on {host} was interrupted and left packages unfinished; {REPAIR_DPKG} "
                f"did not finish them (exit {repaired.exit_status}: {repaired.tail()}); dpkg "
                f"--audit still says: {listed}; repair the host by hand, then patch it again",
                "DpkgInterrupted",
            )
        later = (
            f"; the rollout repairs it first ({REPAIR_FIELD}), a dry run changes nothing"
            if would_repair
            else "; run dpkg --configure -a on the host, then patch it again"
        )
        return Refusal(
            f"dpkg on {host} was interrupted and left packages unfinished (dpkg --audit: "
            f"{listed}){later}",
            "DpkgInterrupted",
        )
    low = [
        f"{path} ({mount}) has {free} MiB free, below {minimum[path]} MiB"
        for path, (mount, free) in found.free_mb.items()
        if path in minimum and free < minimum[path]
    ]
    if low:
        return Refusal(
            f"not enough free space on {host} to patch it safely: {'; '.join(low)}",
            "LowDiskSpace",
        )
    return None


async def preflight_problem(
    session: HostSession,
    step: HostStepInput,
    *,
    heartbeat: Callable[[], None] | None = None,
    first: CommandResult | None = None,
    repair: bool = False,
    inspecting: bool = False,
) -> tuple[Refusal | None, list[str]]:
    """Run the doctor on the session's host: (why it must not be patched now or None, notes);
    the session's OS family is set from the host's os-release ("unknown" when none is known).

    `repair` (the rollout's `repairInterruptedDpkg`, never for a dry run): an interrupted dpkg
    is repaired with REPAIR_DPKG (`should_repair`; within the step's per-command time limit)
    and audited again; refused only if still unfinished, with what the repair printed.

    `inspecting`: for a dry run (its read-only commands count for the OS-family refusal).

    `first`: PREFLIGHT's result when it already ran (in the preconditions' one command,
    activities/preconditions.py); PREFLIGHT runs again only to poll a held lock. A held dpkg/apt
    lock is waited for, up to the host's `preflight_lock_wait` seconds, polling; then refused
    with the holder's pid and name. Raises HostValueError for an answer that does not parse,
    ValueError for a malformed `preflight_free_mb`.
    """
    commands = step.host.commands
    minimum = thresholds(commands.preflight_free_mb)
    host = step.host.name
    loop = asyncio.get_running_loop()
    deadline = loop.time() + commands.preflight_lock_wait
    repaired: CommandResult | None = None
    done: list[str] = []  # the repair's note, once it finished what dpkg had left
    while True:
        result = first or await session.run(
            PREFLIGHT, step.timeout_seconds, what="the pre-flight check"
        )
        first = None
        found = parse_preflight(result, host)
        session.family = found.family or "unknown"
        family = _family_refusal(found, step, inspecting)
        if not family and should_repair(found, repair=repair, tried=repaired is not None):
            names = named(unfinished_packages(found.audit)) or "; ".join(found.audit[:3])
            repaired = await session.run(
                REPAIR_DPKG, step.timeout_seconds, what="dpkg --configure -a", heartbeat=heartbeat
            )
            done = [
                f"an interrupted dpkg was repaired ({REPAIR_FIELD}: dpkg --configure -a): {names}"
            ]
            continue  # audit again: refused below only if packages are still unfinished
        # While dpkg holds its lock, dpkg --audit lists the packages it is working on: the lock
        # is waited for first, so a dpkg at work is never taken for an interrupted one.
        held = bool(found.locks)
        would = step.job.repair_interrupted_dpkg and not repair
        refused = family or (
            None if held else _refusal(found, host, minimum, repaired, would_repair=would)
        )
        if refused or not held:
            return refused, ([] if found.audit else done) + found.notes()
        if loop.time() >= deadline:
            holders = "; ".join(
                f"{path} by process {pid} ({name})" for path, pid, name in found.locks
            )
            return Refusal(
                f"the package manager on {host} is busy: {holders}, still held after "
                f"{commands.preflight_lock_wait:g}s; wait for it to finish (or stop it), then "
                "patch the host again",
                "PackageLockHeld",
            ), ([] if found.audit else done) + found.notes()
        if heartbeat:
            heartbeat()
        await asyncio.sleep(min(LOCK_POLL_SECONDS, max(0.0, deadline - loop.time())))
