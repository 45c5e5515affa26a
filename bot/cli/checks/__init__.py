"""The checks of `patchpilot config check`, one module per component, and their result type.

Each check tries one configured dependency for real (bounded by the caller's timeout) and returns
`CheckResult`s: what it found and, for a problem, the fix. `bot.cli.config_check` runs them at once
and prints the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    """ok; fail (the exit code becomes 1); warn (worth knowing, not fatal); skip (not configured,
    and that is allowed)."""

    OK = "ok"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


@dataclass
class CheckResult:
    """One line of the report: which check, its status, what was found, and how to fix it."""

    check: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        """True for a failed check: the command exits with 1."""
        return self.status == Status.FAIL


def ok(check: str, detail: str) -> CheckResult:
    """A check that passed."""
    return CheckResult(check, Status.OK, detail)


def fail(check: str, detail: str, fix: str = "") -> CheckResult:
    """A check that failed, with the fix."""
    return CheckResult(check, Status.FAIL, detail, fix)


def warn(check: str, detail: str, fix: str = "") -> CheckResult:
    """Worth knowing, not fatal."""
    return CheckResult(check, Status.WARN, detail, fix)


def skip(check: str, detail: str, fix: str = "") -> CheckResult:
    """Not configured (allowed), or not checkable because an earlier check failed."""
    return CheckResult(check, Status.SKIP, detail, fix)


def short(error: BaseException, limit: int = 200) -> str:
    """An error as one line of at most `limit` characters (its type name when it has no text)."""
    text = str(error).strip().replace("\n", " ") or type(error).__name__
    return text[:limit]
