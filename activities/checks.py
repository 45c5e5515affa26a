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
"""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from temporalio.exceptions import ApplicationError

from activities.ssh import CommandResult, HostSession

__all__ = ["ANY", "Check", "checks_command", "parse_checks", "run_checks", "unwrap_checks"]

CHECKS_NAME = "patchpilot-checks"
ANY = "*"
CHECKS = """n=$1; shift
while [ $# -ge 2 ]; do
    go=$1; c=$2; shift 2
    printf '%s begin\\n' "$n"; printf '%s begin\\n' "$n" >&2
    sh -c "$c" < /dev/null
    rc=$?
    printf '\\n%s end %s\\n' "$n" "$rc"; printf '\\n%s end %s\\n' "$n" "$rc" >&2
    case ",$go," in *",$rc,"* | ",*,") ;; *) exit 0 ;; esac
done
"""
_NONCE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Check:
    """One command of a batch; the batch goes on after it only for an exit status in `go_on`
    (comma-separated numbers, or ANY)."""

    command: str
    go_on: str = ANY


def checks_command(checks: list[Check], nonce: str) -> str:
    """The one shell line that runs `checks` in order (see the module doc)."""
    words = [CHECKS_NAME, nonce]
    for check in checks:
        words += [check.go_on, check.command]
    return f"sh -c {shlex.quote(CHECKS)} " + " ".join(shlex.quote(word) for word in words)


def unwrap_checks(line: str) -> list[str] | None:
    """The commands inside a `checks_command` line, or None for any other line."""
    if f" {CHECKS_NAME} " not in line or not line.startswith("sh -c "):
        return None
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    if len(words) < 5 or words[:2] != ["sh", "-c"] or words[3] != CHECKS_NAME:
        return None
    return words[6::2]


def _sections(text: str, nonce: str) -> list[tuple[str, int]] | None:
    """[(what one command printed on this stream, its exit status)], or None if `text` is not
    exactly a sequence of sections."""
    begin, end = f"{nonce} begin\n", f"\n{nonce} end "
    found: list[tuple[str, int]] = []
    at = 0
    while at < len(text):
        if not text.startswith(begin, at):
            return None
        start = at + len(begin)
        stop = text.find(end, start)
        if stop < 0:
            return None
        line_end = text.find("\n", stop + len(end))
        status = text[stop + len(end) : line_end if line_end >= 0 else len(text)]
        if line_end < 0 or not status.isdigit():
            return None
        found.append((text[start:stop], int(status)))
        at = line_end + 1
    return found


def parse_checks(
    result: CommandResult, checks: list[Check], nonce: str
) -> list[CommandResult] | None:
    """One CommandResult per command that ran (a prefix of `checks`), or None when the batch's
    output cannot be trusted to say (cut by the output bound, a failed batch, or text outside the
    sections: the caller then runs the commands one at a time)."""
    if not (result.ok and result.stdout_complete and result.stderr_complete):
        return None
    out = _sections(result.stdout, nonce)
    err = _sections(result.stderr, nonce)
    if out is None or err is None or len(out) != len(err) or not 0 < len(out) <= len(checks):
        return None
    results = []
    for check, (stdout, status), (stderr, status_again) in zip(checks, out, err, strict=False):
        if status != status_again:
            return None
        results.append(
            CommandResult(command=check.command, exit_status=status, stdout=stdout, stderr=stderr)
        )
    # The script goes past a command exactly when its status is in GO: anything else is not
    # what this script printed.
    for index, ran in enumerate(results):
        goes_on = _goes_on(checks[index].go_on, ran.exit_status)
        if index < len(results) - 1 and not goes_on:
            return None
        if index == len(results) - 1 and len(results) < len(checks) and goes_on:
            return None
    return results


def _goes_on(go_on: str, status: int) -> bool:
    return go_on == ANY or str(status) in go_on.split(",")


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
    nonce = secrets.token_hex(16)
    assert _NONCE.match(nonce)
    line = checks_command(checks, nonce)
    try:
        result = await session.run(line, timeout, what=what, heartbeat=heartbeat)
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
    return parse_checks(result, checks, nonce)


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
