"""What the labs learn from and do to processes through ``/proc``: mount namespaces, start times,
child processes, CPU time, and killing every process of a namespace or a process tree.

Linux only, like the labs themselves. Pids that vanish half-way are expected everywhere (a lab's
sessions come and go all the time), so every reader here treats a missing process as gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

# A mount namespace is named by (st_dev, st_ino) of its nsfs file.
MountNamespace = tuple[int, int]

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_BOOT_TIME = next(
    (
        float(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime ")
    ),
    0.0,
)


def mount_namespace(pid: int) -> MountNamespace | None:
    """The mount namespace of process ``pid``; None if it is gone (or a zombie)."""
    try:
        st = os.stat(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def pin_mount_namespace(pid: int) -> tuple[MountNamespace, int] | None:
    """The mount namespace of ``pid`` and an open fd on it, if it is not this process's own.

    The fd keeps the namespace alive, so its inode number cannot go to a new namespace (another
    lab's host) while a kill loop still looks for processes by it. The caller closes the fd.
    None (and no fd left open) when ``pid`` is gone or shares this process's namespace.
    """
    try:
        fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
    except OSError:
        return None
    ns = mount_namespace(pid)
    st = os.fstat(fd)
    # Compared with the fd as well: the pid might have been reused between the two looks.
    if ns is not None and ns != mount_namespace(os.getpid()) and ns == (st.st_dev, st.st_ino):
        return ns, fd
    os.close(fd)
    return None


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from field 3 (the state) on; None if the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in field 2 may contain spaces and parentheses, so count from the last ')'.
    return stat[stat.rfind(")") + 2 :].split()


def start_ticks(pid: int) -> str | None:
    """Field 22 of ``/proc/<pid>/stat`` (start time in clock ticks since boot), as the simulators
    record it for a hang; None if the process is gone or a zombie nobody has reaped yet."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def start_time(pid: int) -> float | None:
    """Unix time (seconds) at which a process started; None if it is gone."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return _BOOT_TIME + int(fields[19]) / _CLK_TCK


def proc_cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime+stime of a live process in seconds (plus its reaped children's with ``children``);
    0.0 if it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _CLK_TCK


def children(pid: int) -> list[int]:
    """Pids of the live children of ``pid`` (of all its threads); empty if it is gone."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                found.extend(int(p) for p in text.split())
    return found


def kill_tree(pids: list[int]) -> None:
    """SIGKILL ``pids`` and all their descendants, deepest first, so no child is re-parented
    out of reach before it is found."""
    found: list[int] = []
    queue = list(pids)
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children(pid))
    for pid in reversed(found):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def kill_namespace(
    ns: MountNamespace, *, started_before: float | None = None, timeout: float = 5.0
) -> None:
    """SIGKILL every process in mount namespace ``ns`` until none is left or ``timeout`` (s) ends.

    With ``started_before`` (unix time), processes that started more than a second after it are
    left alone: once a namespace is gone the kernel may hand its number to an unrelated new one,
    and nothing that started after the stop began is ours. Raises RuntimeError for this
    process's own namespace, which would be every process of the machine.
    """
    me = os.getpid()
    if ns == mount_namespace(me):
        raise RuntimeError("refusing to kill the test process's own mount namespace")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = False
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            pid = int(entry)
            if mount_namespace(pid) != ns:
                continue
            if started_before is not None:
                started = start_time(pid)
                if started is None or started > started_before + 1.0:
                    continue
            found = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if not found:
            return
        time.sleep(0.01)
