"""The update command, run detached on the host so that it survives a dropped connection or a
dead worker, and attached to again instead of being started twice (issue 15, item 5).

Each run has a directory on the host, `<run_dir>/<rollout id>.<host workflow run>`, holding:

    claim/    made (mkdir, atomic) by the one runner that runs the command; its existence is the
              host's proof that the command was started. No claim: it never started.
    command   the command, as the operator wrote it
    pid       the runner's pid (a session leader: its process group is the whole update)
    lock      locked (flock(1)) by the runner for as long as it runs, where the host has flock
              and the run directory is on a local filesystem
    stdout    the command's output, the first 8 MiB and the last 64 KiB of each stream
    stderr
    before, after, packages.before, report
              optional scripts run around the command and what they printed (the package report)
    exit      the command's exit status, written (atomically, by rename) when it has ended
    look      what the last attach's look commands printed (below)

Every attempt of the update step sends one SSH command (`attach_command`, the same but for the time
it may take): it starts the runner (`systemd-run` where systemd runs, else `setsid -f`) only when
nobody has claimed the run, then follows the run's output with `tail -f` until the run has its exit
status or the runner is gone, prints the run's package report (framed, so no second command reads
it), and exits with the command's own status. After a run that succeeded, while time is left, the
same command also runs a few read-only look commands (the reboot decision's boot id and
reboot-required check, workflows/reboots.py) as a batch of checks (activities/checks.py) under
timeout(1), framed on stderr, so that no session of its own is needed for them; anything amiss with
them (no timeout(1), no time left, killed, output that does not parse) leaves them unread, and the
caller reads them as it always did. A retry after a dropped connection or a dead worker therefore
waits for the same run; two runners started at once (a retry racing a slow start) still run the
command once, since only one of them can claim it. The last line of stderr says how the attach
ended (`patchpilot-run=finished|vanished|unstarted`); a runner gone without an exit status (killed,
or the host restarted) is reported as such, never retried: dpkg may be half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from temporalio.exceptions import ApplicationError

from activities.checks import ANY, CHECKS, CHECKS_NAME, read_sections
from activities.remote_shell import NONINTERACTIVE_ENV
from activities.ssh import CommandResult, HostSession
from workflows.families import FAMILY_VAR

__all__ = [
    "Detached",
    "attach_command",
    "finish_detached",
    "kill_run_command",
    "run_directory",
    "unwrap_attach",
    "unwrap_attach_all",
]

ATTACH_NAME = "patchpilot-attach"
RUNNER_NAME = "patchpilot-run"
# What each stream keeps on the host's disk: enough for any package manager's output, bounded
# whatever the command prints (the worker keeps a smaller head and tail of it, activities/output).
HOST_HEAD_BYTES = 8 * 1024 * 1024
HOST_TAIL_BYTES = 64 * 1024
# Runs older than this are removed when a new run starts beside them.
KEEP_DAYS = 30
# Errors of an attach that mean "the connection, not the command": attach again.
_REATTACH = ("SshConnectionLost", "SshChannelFailed", "HostUnreachable")
REATTACH_PAUSE = 2.0
_STATUS = re.compile(r"(?:^|\n)patchpilot-run=(\w+)[^\n]*\n?$")
# A finished run's package report (activities/package_report.py) closes the attach's stderr,
# before the status line: no command of its own to read it (issue 16).
REPORT_BEGIN = "patchpilot-report-begin"
REPORT_END = "patchpilot-report-end"
REPORT_NONE = "patchpilot-report=none"
# The look commands' sections close the attach's stderr after the report (module doc).
LOOK_BEGIN = "patchpilot-look-begin"
LOOK_END = "patchpilot-look-end"
# The look's limit on the host (seconds); it runs only while this much and 2 more are left of
# the attach's time, which is what the worker has left less LOOK_RESERVE (sudo and the shell's
# start before the attach's clock starts, the answer's way back after it).
LOOK_SECONDS = 10
LOOK_RESERVE = 5.0
# How often a follower checks that the runner still runs: the delay between the update's end
# and the attach's answer is at most this (tail(1) --pid with inotify, -s).
FOLLOW_SECONDS = 0.05

# $1: the run directory. Claims the run (or leaves: another runner has it), records its pid,
# runs the command with stdin closed, each stream through a keeper that holds a bounded head
# and tail, and records the exit status by rename, so a reader never sees half a number. The
# non-interactive environment and the OS family (the attach leaves it in "$d/family") are set
# again: systemd-run does not pass the caller's on. Where flock(1) exists and the run
# directory is on a local filesystem (a lock on NFS can block, or be let go late), the runner
# holds an exclusive lock on "$d/lock" from before its pid is known until after the exit status
# is written, and nothing else holds it: the work runs in a subshell that closes the lock's fd
# (a daemon the update leaves behind, or a pipeline's subshell outliving a killed runner, must
# not keep it; nor may a daemon keep the pipe on fd 3, which would keep the stdout keeper from
# its end). An attach waits on that lock instead of looking every FOLLOW_SECONDS with a new
# `sleep` process (20 a second for as long as the update runs).
# stdbuf -o0: head writes each chunk as it reads it (stdio would hold up to 4 KiB back from the
# followers, and lose it when the run is killed); a few bytes at the cut itself may be lost.
_KEEP = f"{{ stdbuf -o0 head -c {HOST_HEAD_BYTES}; tail -c {HOST_TAIL_BYTES}; }}"
RUNNER = f"""d=$1
mkdir "$d/claim" 2>/dev/null || exit 0
case $(stat -f -c %T "$d" 2> /dev/null) in
    nfs* | cifs | smb* | fuse* | 9p | ceph | afs | gfs* | ocfs* | "") ;;
    *)
        if command -v flock > /dev/null 2>&1; then
            exec 9> "$d/lock"
            flock -n 9 || rm -f "$d/lock"
        fi ;;
esac
export {NONINTERACTIVE_ENV}
[ -s "$d/family" ] && read -r {FAMILY_VAR} < "$d/family" && export {FAMILY_VAR}
: > "$d/stdout"; : > "$d/stderr"
echo $$ > "$d/pid.new" && mv "$d/pid.new" "$d/pid"
(
exec 9>&-
find "${{d%/*}}" -mindepth 1 -maxdepth 1 -type d -mtime +{KEEP_DAYS} -exec rm -rf {{}} + \\
    > /dev/null 2>&1 &
[ -e "$d/before" ] && sh "$d/before" "$d" > "$d/packages.before" 2> /dev/null < /dev/null
{{ {{ sh "$d/command" 3>&- < /dev/null; echo $? > "$d/rc"; }} 2>&1 1>&3 \\
    | {_KEEP} >> "$d/stderr"; }} 3>&1 | {_KEEP} >> "$d/stdout"
[ -e "$d/after" ] && sh "$d/after" "$d" > "$d/report" 2> /dev/null < /dev/null
)
mv "$d/rc" "$d/exit"
"""

# $1: the run directory, $2: the command, $3 and $4: the before and after scripts, $5: the look's
# nonce (empty: no look), $6: the seconds this attach may take, then the look's commands, each
# after its go-on word (activities/checks.py). Starts the runner unless the run is claimed, then
# follows it (see the module doc). /proc/uptime, read by the shell itself, tells how long the
# attach has taken without a `date` process. The look writes to a file, read back by the shell:
# a process it leaves behind must not hold the SSH channel open past the attach's end.
ATTACH = f"""d=$1
t0=; read -r t0 _ 2> /dev/null < /proc/uptime
mkdir -p "$d" || exit 125
if [ ! -e "$d/claim" ]; then
    [ -e "$d/command" ] || printf '%s\\n' "$2" > "$d/command"
    [ -z "$3" ] || [ -e "$d/before" ] || printf '%s\\n' "$3" > "$d/before"
    [ -z "$4" ] || [ -e "$d/after" ] || printf '%s\\n' "$4" > "$d/after"
    [ -z "${FAMILY_VAR}" ] || printf '%s\\n' "${FAMILY_VAR}" > "$d/family"
    if [ -d /run/systemd/system ] && command -v systemd-run > /dev/null 2>&1; then
        systemd-run --quiet --collect --unit="patchpilot-${{d##*/}}" \\
            sh -c {shlex.quote(RUNNER)} {RUNNER_NAME} "$d" > /dev/null 2>&1
    else
        setsid -f sh -c {shlex.quote(RUNNER)} {RUNNER_NAME} "$d" < /dev/null > /dev/null 2>&1
    fi
fi
i=0
while [ ! -s "$d/pid" ] && [ ! -e "$d/exit" ] && [ $i -lt 1000 ]; do sleep 0.01; i=$((i + 1)); done
pid=
read -r pid 2> /dev/null < "$d/pid"
if [ -z "$pid" ]; then
    echo "{RUNNER_NAME}=unstarted" >&2
    exit 254
fi
if [ ! -e "$d/exit" ] && grep -qaF -- "$d" "/proc/$pid/cmdline" 2> /dev/null; then
    # Not tail --pid="$pid": a runner whose parent is gone stays a zombie until init reaps it,
    # seconds on some hosts. This child ends once the run has its exit status or the runner
    # is gone, and the shell reaps it at once: flock waits on the runner's lock, let go when
    # the runner exits (before any reaping), then the loop looks once (the exit status is
    # written before the lock is let go); without flock(1), for a runner without a lock, or
    # when the wait on the lock fails, the loop looks every FOLLOW_SECONDS.
    {{
        [ -e "$d/lock" ] && command -v flock > /dev/null 2>&1 &&
            flock -s 8 2> /dev/null 8< "$d/lock"
        while [ ! -e "$d/exit" ] && read -r s 2>/dev/null < "/proc/$pid/stat"; do
            case $s in *") Z "*) break ;; esac
            sleep {FOLLOW_SECONDS}
        done
    }} &
    w=$!
    tail -s {FOLLOW_SECONDS} -c +1 -f --pid="$w" "$d/stdout" &
    out=$!
    tail -s {FOLLOW_SECONDS} -c +1 -f --pid="$w" "$d/stderr" >&2 &
    wait $out $!
else
    cat "$d/stdout"; cat "$d/stderr" >&2
fi
if [ -e "$d/exit" ]; then
    if [ -e "$d/report" ]; then
        echo "{REPORT_BEGIN}" >&2; cat "$d/report" >&2; printf '\\n%s\\n' "{REPORT_END}" >&2
    else
        echo "{REPORT_NONE}" >&2
    fi
    read -r rc < "$d/exit"
    if [ "$rc" = 0 ] && [ -n "$5" ] && [ $# -gt 6 ] && command -v timeout > /dev/null 2>&1; then
        t1=; read -r t1 _ 2> /dev/null < /proc/uptime
        case "$t0:$t1" in *[!0-9.:]* | :* | *:) t1= ;; esac
        if [ -n "$t1" ] &&
            [ $((${{t1%.*}} - ${{t0%.*}} + {LOOK_SECONDS} + 2)) -lt "$6" ] 2> /dev/null; then
            n=$5; shift 6
            timeout -s KILL {LOOK_SECONDS} sh -c {shlex.quote(CHECKS)} {CHECKS_NAME} "$n" "$@" \\
                > "$d/look" 2> /dev/null < /dev/null
            echo "{LOOK_BEGIN}" >&2
            while IFS= read -r l || [ -n "$l" ]; do printf '%s\\n' "$l" >&2; done < "$d/look"
            printf '\\n%s\\n' "{LOOK_END}" >&2
        fi
    fi
    echo "{RUNNER_NAME}=finished" >&2
    exit "$rc"
fi
echo "{RUNNER_NAME}=vanished pid=$pid" >&2
exit 255
"""


def run_directory(run_dir: str, rollout_id: str, run_key: str) -> str:
    """The host path of one run: `run_dir` (HostCommands.run_dir) / `<rollout id>.<run key>`,
    with anything but letters, digits, `.`, `_` and `-` replaced, so it is one path segment."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{rollout_id}.{run_key}")
    return f"{run_dir.rstrip('/')}/{name}"


def attach_command(
    command: str,
    directory: str,
    before: str = "",
    after: str = "",
    *,
    look: list[str] | None = None,
    nonce: str = "",
    seconds: float = 0,
) -> str:
    """The one shell line every attempt sends: start `command` detached in `directory` unless
    it was started there already, then follow it to its end (see the module doc). `before` and
    `after` are scripts the runner runs around the command (with the run directory as $1): the
    first's output is kept as `packages.before`, the second's as `report`, written before the
    exit status (activities/package_report.py). `look`: read-only commands run after a run that
    succeeded, their sections marked with `nonce`, while LOOK_SECONDS + 2 are left of the
    `seconds` this attach may take."""
    words = [ATTACH_NAME, directory, command, before, after]
    if look:
        words += [nonce, str(int(seconds))]
        for each in look:
            words += [ANY, each]
    return f"sh -c {shlex.quote(ATTACH)} " + " ".join(shlex.quote(word) for word in words)


def unwrap_attach_all(line: str) -> list[str] | None:
    """The operator's command inside an `attach_command` line followed by its look commands, or
    None for any other line."""
    if f" {ATTACH_NAME} " not in line or not line.startswith("sh -c "):
        return None
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    if words[:2] != ["sh", "-c"] or len(words) < 8 or words[3] != ATTACH_NAME:
        return None
    if len(words) == 8:
        return [words[5]]
    if len(words) >= 12 and len(words) % 2 == 0:
        return [words[5], *words[11::2]]
    return None


def unwrap_attach(line: str) -> str | None:
    """The operator's command inside an `attach_command` line, or None for any other line."""
    found = unwrap_attach_all(line)
    return found[0] if found else None


def kill_run_command(directory: str) -> str:
    """Kills the run's whole process group (its runner is a session leader): TERM, a second,
    then KILL; nothing when it has ended."""
    d = shlex.quote(directory)
    return (
        f'[ -e {d}/exit ] && exit 0; p=$(cat {d}/pid 2>/dev/null); [ -n "$p" ] || exit 0; '
        f'kill -TERM -"$p" 2>/dev/null; sleep 1; kill -KILL -"$p" 2>/dev/null; true'
    )


@dataclass(frozen=True)
class Detached:
    """A finished run: the command's result and its package report as the attach printed it
    (`report`: None when the run has none; `report_known` False when the output bound cut it
    off, so it must be read with a command of its own), and the look commands' results (None:
    not read, see the module doc)."""

    result: CommandResult
    report: str | None = None
    report_known: bool = False
    look: list[CommandResult] | None = None


def _look(
    stderr: str, complete: bool, look: list[str] | None, nonce: str
) -> tuple[list[CommandResult] | None, str]:
    """(the look commands' results, one per command, or None; stderr without their frame)."""
    end = f"\n{LOOK_END}\n"
    begin = stderr.rfind(f"{LOOK_BEGIN}\n")
    if not stderr.endswith(end) or begin < 0 or (begin and stderr[begin - 1] != "\n"):
        return None, stderr
    text, rest = stderr[begin + len(LOOK_BEGIN) + 1 : -len(end)], stderr[:begin]
    if not (look and complete):
        return None, rest
    sections, whole = read_sections(text, nonce)
    if not whole or len(sections) != len(look):
        return None, rest
    return [
        CommandResult(command=command, exit_status=status, stdout=out, stderr="")
        for command, (out, status) in zip(look, sections, strict=True)
    ], rest


def _report(stderr: str) -> tuple[str | None, bool, str]:
    """(the report, whether the attach printed one or said there is none, stderr without it)."""
    if stderr.endswith(f"\n{REPORT_NONE}\n") or stderr == f"{REPORT_NONE}\n":
        return None, True, stderr[: -len(REPORT_NONE) - 1]
    end = f"\n{REPORT_END}\n"
    begin = stderr.rfind(f"{REPORT_BEGIN}\n")
    if not stderr.endswith(end) or begin < 0 or (begin and stderr[begin - 1] != "\n"):
        return None, False, stderr
    text = stderr[begin + len(REPORT_BEGIN) + 1 : -len(end)]
    return text, True, stderr[:begin]


def _status(result: CommandResult) -> tuple[str | None, CommandResult]:
    """The attach's status word, and the result without its status line."""
    found = _STATUS.search(result.stderr)
    if not found:
        return None, result
    stderr = result.stderr[: found.start()] + ("\n" if found.group(0).startswith("\n") else "")
    return found.group(1), CommandResult(
        command=result.command,
        exit_status=result.exit_status,
        stdout=result.stdout,
        stderr=stderr,
        stdout_complete=result.stdout_complete,
        stderr_complete=result.stderr_complete,
    )


async def finish_detached(
    session: HostSession,
    command: str,
    directory: str,
    timeout: float,
    *,
    what: str,
    limit: float | None = None,
    heartbeat: Callable[[], None] | None = None,
    before: str = "",
    after: str = "",
    look: list[str] | None = None,
) -> Detached:
    """Run `command` detached in `directory` on the session's host (or attach to the run that is
    there) and return its result once it has ended, with the package report the run left
    (`after`'s output) from the same command; within `timeout` seconds in all. `limit`: the
    step's whole time limit, which a timeout names (default `timeout`; a retry has only what
    its first attempt left). `look`: read-only commands to run after a run that succeeded, in
    the same command (Detached.look; see the module doc).

    A connection lost while following is reconnected and the run followed again until the
    deadline. Raises ApplicationError: `CommandTimedOut` / `CommandWaitsForInput` (the run is
    killed on the host, non-retryable), `UpdateVanished` (the runner is gone without an exit
    status: killed or the host restarted; non-retryable), `UpdateNotStarted` (the host shows no
    run after the start; retryable, nothing ran), and the last connection error when the host
    could not be reached again before the deadline (`SshConnectionLost`: outcome unknown).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    nonce = secrets.token_hex(16)
    host = session.host
    while True:
        remaining = deadline - loop.time()
        seconds = remaining - LOOK_RESERVE
        line = attach_command(
            command, directory, before, after, look=look, nonce=nonce, seconds=seconds
        )
        try:
            result = await session.run(line, max(1.0, remaining), what=what, heartbeat=heartbeat)
        except ApplicationError as error:
            if error.type in ("CommandTimedOut", "CommandWaitsForInput"):
                await _kill(session, directory)
                # The message quotes what was sent; the operator knows their own command, and
                # their own limit (a reattached follower had only what was left of it).
                message = error.message.replace(line[:200], command[:200])
                if error.type == "CommandTimedOut":
                    message = (
                        f"{what} on {host.name} ({host.address}:{host.port}) did not finish "
                        f"within {limit or timeout:g}s and was killed on the host: {command[:200]}"
                    )
                raise ApplicationError(message, type=error.type, non_retryable=True) from None
            if error.type not in _REATTACH or loop.time() + REATTACH_PAUSE >= deadline:
                if error.type in _REATTACH:
                    raise ApplicationError(
                        f"{what} on {host.name} runs detached in {directory}, but the host could "
                        f"not be reached again within {timeout:g}s ({error.message}); its outcome "
                        "is unknown until the host answers",
                        type="SshConnectionLost",
                    ) from None
                raise
            # The connection, not the command: the run goes on; follow it again.
            if heartbeat:
                heartbeat()
            await asyncio.sleep(REATTACH_PAUSE)
            continue
        status, result = _status(result)
        if status == "vanished":
            raise ApplicationError(
                f"{what} on {host.name} ended without an exit status (its process was killed, or "
                f"the host restarted); it was not started again, since it may have changed "
                f"packages half-way (for dpkg: run dpkg --audit, then dpkg --configure -a). Its "
                f"output is in {directory} on the host: {result.tail()}",
                type="UpdateVanished",
                non_retryable=True,
            )
        if status == "unstarted":
            raise ApplicationError(
                f"{what} on {host.name} did not start: no runner claimed {directory} "
                "(setsid or systemd-run failed?)",
                type="UpdateNotStarted",
            )
        looked: list[CommandResult] | None = None
        if status == "finished":
            looked, stderr = _look(result.stderr, result.stderr_complete, look, nonce)
            result = dataclasses.replace(result, stderr=stderr)
        report, known, stderr = (
            _report(result.stderr) if status == "finished" else (None, False, "")
        )
        if known:
            result = dataclasses.replace(result, stderr=stderr)
        return Detached(result, report, known, looked)


async def _kill(session: HostSession, directory: str) -> None:
    """Kill the run (a timed-out or prompting update must not go on behind PatchPilot's back);
    best effort: the error being raised says what happened."""
    with contextlib.suppress(ApplicationError):
        await session.run(kill_run_command(directory), 30, what="killing the update")
