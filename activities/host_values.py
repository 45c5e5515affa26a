"""Values read from a host, validated before PatchPilot acts on them.

A host's answer is data from outside: a command that printed nothing, printed something else, or
exited with a code that means neither yes nor no must stop the step with a message that says what
was read, never be taken for an answer (ansible/ansible#72629: a boot id that was never read).
"""

from __future__ import annotations

import re

from temporalio.exceptions import ApplicationError

from activities.ssh import CommandResult
from workflows.reboots import RebootLook

# Linux's /proc/sys/kernel/random/boot_id is a UUID (random(4)); an overridden `boot_id` command
# (another OS) may print any one short printable token.
_BOOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9:._-]{3,127}$")
# A line of `apt list --upgradable` ("name/suite version arch [upgradable from: v]") or of
# `dnf check-update` ("name.arch version repo"): a package name (Debian Policy 5.6.1: at least
# two of lowercase letters, digits, + - .; RPM names also use _ and capitals), then "/suite" or
# ".arch ". An error line ("E: Could not get lock …") is neither.
_PACKAGE_LINE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._~-]+(/|\.[A-Za-z0-9_]+\s)")
_SHOWN = 200


class HostValueError(ApplicationError):
    """A value read from a host cannot be used; non-retryable (the host would answer the same)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, type="UnusableHostValue", non_retryable=True)


def shown(text: str) -> str:
    """`text` as a message quotes it: repr (control characters visible), at most 200 chars."""
    return repr(text[:_SHOWN]) + ("…" if len(text) > _SHOWN else "")


def boot_id(result: CommandResult, host: str) -> str:
    """The boot id printed by `result` (one token, stripped), or HostValueError saying what was
    printed: without a real boot id a reboot's return cannot be told from no reboot."""
    if not result.ok:
        raise HostValueError(
            f"reading the boot id on {host} exited {result.exit_status}: {result.tail()}"
        )
    value = result.stdout.strip()
    if not _BOOT_ID.fullmatch(value):
        printed = "nothing" if not value else shown(value)
        raise HostValueError(
            f"reading the boot id on {host} ({result.command[:120]}) printed {printed}, not a "
            "boot id; without one a reboot cannot be verified"
        )
    return value


def yes_no(result: CommandResult, host: str, what: str) -> bool:
    """A check's answer from its exit status, as test(1) gives it: 0 yes, 1 no; any other status
    (127 command not found, 126 not executable, 255 lost) is no answer and a HostValueError."""
    if result.exit_status in (0, 1):
        return result.exit_status == 0
    raise HostValueError(
        f"{what} on {host} ({result.command[:120]}) exited {result.exit_status}, which means "
        f"neither yes (0) nor no (1): {result.tail()}"
    )


def package_lines(result: CommandResult, host: str, what: str) -> list[str]:
    """The non-empty lines of a package list, each checked to start with a package name; a list
    cut by the output bound, or a line that is not a package, is a HostValueError."""
    if result.exit_status == 1 and not (result.stdout.strip() or result.stderr.strip()):
        return []  # grep(1) selected no line: nothing is pending
    if not result.ok:
        raise HostValueError(f"{what} on {host} exited {result.exit_status}: {result.tail()}")
    if not result.stdout_complete:
        raise HostValueError(
            f"{what} on {host} printed more than PatchPilot keeps of a command's output; the "
            "list would be incomplete"
        )
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    for line in lines:
        if "\ufffd" in line or not _PACKAGE_LINE.match(line):
            raise HostValueError(
                f"{what} on {host} printed a line that is not a package: {shown(line)}"
            )
    return lines


def read_look(looked: list[CommandResult], host: str) -> RebootLook:
    """The boot id and the reboot-required answer from the results of the boot-id command and
    the reboot-required check, in that order; HostValueError when either cannot be used (the
    boot id is judged first)."""
    read, checked = looked
    return RebootLook(
        boot_id=boot_id(read, host),
        reboot_required=yes_no(checked, host, "the reboot-required check"),
    )


def reboot_look(looked: list[CommandResult] | None, host: str) -> RebootLook | None:
    """`read_look` of what the update's command brought back, or None when it was not read or
    cannot be used: the reboot step then reads the host itself and says what is wrong."""
    if looked is None:
        return None
    try:
        return read_look(looked, host)
    except (HostValueError, ValueError):
        return None
