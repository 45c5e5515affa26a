"""Several read-only commands in ONE SSH command, each one's output and exit status kept apart
(issue 16: a command on a host costs a channel, a shell and a round trip; the preconditions and
the reboot decision used to send 2 to 6 of them in a row).

The host is sent `sh -c CHECKS patchpilot-checks NONCE GO1 CMD1 GO2 CMD2 ...`. For each command
the script prints, on stdout AND on stderr,

    NONCE begin
    <what the command printed on that stream>
    NONCE end <exit status>          (after a newline of its own, stripped again when read)

and runs the next one only when the exit status is in GO (a comma list, `*`: any), so a check
that already refuses the host ends the batch exactly where the one-command-each order stopped.
The nonce is random per batch and the script prints it from a variable, so no command's output
can end its section early, not even one that prints the script's own command line.

Parsing is strict: both streams must hold the same sections in the same order with the same
exit statuses, and nothing else. Output that was cut by the worker's bound (activities/output.py)
or does not parse gives None: the caller runs the commands one at a time instead (they are
read-only, so running them again changes nothing). `unwrap_checks` gives the commands of a
logged line back (tests and the bench compare what hosts were sent).

`run_in_order` sends commands that change the host (stopping and starting services) the same way,
named `patchpilot-steps` and each one with a time limit enforced on the host: timeout(1) runs it
in a process group of its own and kills that whole group at the limit, the way HostSession.run
kills an overrunning command; its section then ends `NONCE end killed` (OVERRAN), and the worker
raises the same `CommandTimedOut` as HostSession.run would have.
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from temporalio.exceptions import ApplicationError

from activities.ssh import CommandResult, HostSession

__all__ = [
    "ANY",
    "OVERRAN",
    "Check",
    "checks_command",
    "parse_checks",
    "read_sections",
    "run_checks",
    "run_in_order",
    "shown_ran",
    "unwrap_checks",
]

CHECKS_NAME = "patchpilot-checks"
STEPS_NAME = "patchpilot-steps"  # a batch whose commands have a time limit each (run_in_order)
ANY = "*"
# The exit status given to a command the host killed at its limit: no process exits with it.
OVERRAN = -1
# Seconds a batch of limited commands may take beyond the sum of their limits before the worker
# kills it itself (starting each command; the host's own limits normally end it long before).
BATCH_SLACK = 10.0
_LOOP = """n=$1; shift
while [ $# -ge 2 ]; do
    go=$1; c=$2; shift 2
    printf '%s begin\\n' "$n"; printf '%s begin\\n' "$n" >&2
RUN
    printf '\\n%s end %s\\n' "$n" "$rc"; printf '\\n%s end %s\\n' "$n" "$rc" >&2
    case ",$go," in *",$rc,"* | ",*,") ;; *) exit 0 ;; esac
done
"""
CHECKS = _LOOP.replace(
    "RUN\n",
    """    sh -c "$c" < /dev/null
    rc=$?
""",
)
# The limited run (LIMIT: seconds). timeout(1) puts the command in a process group of its own and
# KILLs that group at the limit (children too, as HostSession.run's kill does); it is waited for in
# the background so that a TERM for this script (the worker's kill on cancellation or its own
# timeout) runs the trap, which takes timeout's group with it. The command's own exit status
# comes back on fd 3 ("N ") only when it finished, so a command that exits 137 by itself is never
# taken for one the limit killed. fd 4 is the script's stdout, where the command's output goes.
# Without timeout(1) the batch prints no section and fails: run_in_order runs the commands one
# at a time instead.
_LIMITED = """command -v timeout > /dev/null || { echo "timeout(1) is missing" >&2; exit 127; }
exec 4>&1
""" + _LOOP.replace(
    "RUN\n",
    """    st=$(trap 'kill -KILL -$! $! 2>/dev/null; exit 143' TERM
        timeout -s KILL LIMIT sh -c 'sh -c "$1" 3>&- < /dev/null; echo "$? " >&3' "$0" "$c" \\
            3>&1 >&4 4>&- &
        wait $!; echo $?)
    case $st in *" "*) rc=${st%% *} ;; 137) rc=killed ;; *) rc=$st ;; esac
""",
)
_NONCE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Check:
    """One command of a batch; the batch goes on after it only for an exit status in `go_on`
    (comma-separated numbers, or ANY). `what`: the command in messages ("stopping nginx")."""

    command: str
    go_on: str = ANY
    what: str = "command"


def _seconds(limit: float) -> str:
    """`limit` as timeout(1) reads it ("2", "2.5"); never 0, which would mean no limit."""
    return f"{max(limit, 0.001):.3f}".rstrip("0").rstrip(".")


def checks_command(checks: list[Check], nonce: str, each: float | None = None) -> str:
    """The one shell line that runs `checks` in order (see the module doc); with `each`, every
    command is killed on the host after that many seconds."""
    script = CHECKS if each is None else _LIMITED.replace("LIMIT", _seconds(each))
    words = [CHECKS_NAME if each is None else STEPS_NAME, nonce]
    for check in checks:
        words += [check.go_on, check.command]
    return f"sh -c {shlex.quote(script)} " + " ".join(shlex.quote(word) for word in words)


def unwrap_checks(line: str) -> list[str] | None:
    """The commands inside a `checks_command` line, or None for any other line."""
    names = (CHECKS_NAME, STEPS_NAME)
    if not any(f" {name} " in line for name in names) or not line.startswith("sh -c "):
        return None
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    if len(words) < 5 or words[:2] != ["sh", "-c"] or words[3] not in names:
        return None
    return words[6::2]


def _status(word: str) -> int | None:
    """An end line's status: a number, or OVERRAN for `killed`; None for anything else."""
    if word == "killed":
        return OVERRAN
    return int(word) if word.isascii() and word.isdigit() else None


def read_sections(text: str, nonce: str) -> tuple[list[tuple[str, int]], bool]:
    """[(what one command printed on this stream, its exit status)] for the whole sections at the
    start of `text`, and whether they are all of `text`."""
    begin, end = f"{nonce} begin\n", f"\n{nonce} end "
    found: list[tuple[str, int]] = []
    at = 0
    while at < len(text):
        if not text.startswith(begin, at):
            return found, False
        start = at + len(begin)
        stop = text.find(end, start)
        if stop < 0:
            return found, False
        line_end = text.find("\n", stop + len(end))
        status = _status(text[stop + len(end) : line_end if line_end >= 0 else len(text)])
        if line_end < 0 or status is None:
            return found, False
        found.append((text[start:stop], status))
        at = line_end + 1
    return found, True


def parse_checks(
    result: CommandResult, checks: list[Check], nonce: str
) -> list[CommandResult] | None:
    """One CommandResult per command that ran (a prefix of `checks`), or None when the batch's
    output cannot be trusted to say (cut by the output bound, a failed batch, or text outside the
    sections: the caller then runs the commands one at a time)."""
    if not (result.ok and result.stdout_complete and result.stderr_complete):
        return None
    out, out_whole = read_sections(result.stdout, nonce)
    err, err_whole = read_sections(result.stderr, nonce)
    if not (out_whole and err_whole) or len(out) != len(err) or not 0 < len(out) <= len(checks):
        return None
    results, agreed = _paired(checks, out, err)
    if not agreed:
        return None
    # The script goes past a command exactly when its status is in GO: anything else is not
    # what this script printed.
    for index, ran in enumerate(results):
        goes_on = _goes_on(checks[index].go_on, ran.exit_status)
        if index < len(results) - 1 and not goes_on:
            return None
        if index == len(results) - 1 and len(results) < len(checks) and goes_on:
            return None
    return results


def shown_ran(result: CommandResult, checks: list[Check], nonce: str) -> list[CommandResult]:
    """The commands a batch's output shows as finished even when it does not parse as a whole (a
    batch that failed or was cut short after some sections): those whose section is whole on both
    streams with the same status, in order, up to the first the script would not go past. Nothing
    from output cut by the worker's bound, where a section could be spliced from two."""
    if not (result.stdout_complete and result.stderr_complete):
        return []
    ran, _ = _paired(
        checks, read_sections(result.stdout, nonce)[0], read_sections(result.stderr, nonce)[0]
    )
    for index, one in enumerate(ran):
        if not _goes_on(checks[index].go_on, one.exit_status):
            return ran[: index + 1]
    return ran


def _paired(
    checks: list[Check], out: list[tuple[str, int]], err: list[tuple[str, int]]
) -> tuple[list[CommandResult], bool]:
    """A CommandResult for each command, in order, while its sections on stdout (`out`) and
    stderr (`err`) agree on its status; and whether every pair agreed."""
    results: list[CommandResult] = []
    for check, (stdout, status), (stderr, status_again) in zip(checks, out, err, strict=False):
        if status != status_again:
            return results, False
        results.append(
            CommandResult(command=check.command, exit_status=status, stdout=stdout, stderr=stderr)
        )
    return results, True


def _goes_on(go_on: str, status: int) -> bool:
    return go_on == ANY or str(status) in go_on.split(",")


async def _send(
    session: HostSession,
    checks: list[Check],
    timeout: float,
    *,
    what: str,
    heartbeat: Callable[[], None] | None,
    each: float | None = None,
) -> tuple[CommandResult, str]:
    """The batch's own result and its nonce; `timeout`: seconds for all of it, `each`: seconds
    for each command, on the host."""
    nonce = secrets.token_hex(16)
    assert _NONCE.match(nonce)
    line = checks_command(checks, nonce, each)
    try:
        return await session.run(line, timeout, what=what, heartbeat=heartbeat), nonce
    except ApplicationError as error:
        if error.type not in ("CommandTimedOut", "CommandWaitsForInput"):
            raise
        # The message quoted the script; the operator knows the commands.
        listed = "; ".join(check.command[:120] for check in checks)
        raise ApplicationError(
            error.message.replace(line[:200], listed[:400]),
            type=error.type,
            non_retryable=True,
        ) from None


async def run_checks(
    session: HostSession,
    checks: list[Check],
    timeout: float,
    *,
    what: str,
    heartbeat: Callable[[], None] | None = None,
) -> list[CommandResult] | None:
    """Run `checks` in one SSH command within `timeout` seconds in all: a CommandResult per
    command that ran, or None when the output cannot be used (run them one at a time then).

    Raises what HostSession.run raises (lost connection, `CommandTimedOut` naming the checks).
    """
    result, nonce = await _send(session, checks, timeout, what=what, heartbeat=heartbeat)
    return parse_checks(result, checks, nonce)


async def run_in_order(
    session: HostSession,
    commands: list[tuple[str, str]],
    each: float,
    *,
    heartbeat: Callable[[], None] | None = None,
) -> list[CommandResult]:
    """`commands` ((command, what it is for messages, "stopping nginx")) in order until one exits
    non-zero, each killed on the host after `each` seconds: two or more in one SSH command, as
    one command each would run them. The results of those that ran, every one a success but
    perhaps the last.

    Only for commands that may run twice (systemctl stop and start are idempotent): when the
    batch's output cannot be read back, the commands it does not show as finished run again one
    SSH command each (one that did run without its section showing it then runs a second time,
    which changes nothing); those it shows as finished are not run again.

    Raises what HostSession.run raises; `CommandTimedOut` named by the command's `what` when one
    overran `each`, the same error HostSession.run gives.
    """
    ran: list[CommandResult] = []
    if len(commands) > 1:
        checks = [Check(command, go_on="0", what=what) for command, what in commands]
        named = " and ".join(what for _, what in commands)
        total = each * len(checks) + BATCH_SLACK
        result, nonce = await _send(
            session, checks, total, what=named, heartbeat=heartbeat, each=each
        )
        ran = parse_checks(result, checks, nonce) or shown_ran(result, checks, nonce)
        for check, one in zip(checks, ran, strict=False):
            if one.exit_status == OVERRAN:
                raise session.overran(check.what, check.command, each)
    rest = commands[len(ran) :] if all(one.ok for one in ran) else []
    for command, what in rest:
        ran.append(await session.run(command, each, what=what, heartbeat=heartbeat))
        if not ran[-1].ok:
            break
    return ran


async def run_all(
    session: HostSession,
    checks: list[tuple[str, str]],
    timeout: float,
    *,
    total: float | None = None,
) -> list[CommandResult]:
    """Each of `checks` ((command, what it is for messages)), every one run whatever the others
    answer, `timeout` seconds each (`total`: for the batch, default the sum): in one SSH
    command, or one command each when the batch's output cannot be read back."""
    if len(checks) < 2:
        return [await session.run(command, timeout, what=what) for command, what in checks]
    batch = [Check(command) for command, _ in checks]
    limit = total if total is not None else timeout * len(batch)
    what = " and ".join(what for _, what in checks)
    ran = await run_checks(session, batch, limit, what=what)
    if ran is not None and len(ran) == len(batch):
        return ran
    return [await session.run(command, timeout, what=what) for command, what in checks]
