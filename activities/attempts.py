"""What one attempt of a host step has: its heartbeat, its share of the step's time limit, and
whether an earlier attempt (of the same activity, retried by Temporal) may already have acted."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

__all__ = [
    "HEARTBEAT_SECONDS",
    "RETRY_FLOOR_SECONDS",
    "heartbeat",
    "is_retry",
    "keep_heartbeating",
    "time_left",
    "unreachable_on_retry",
]

HEARTBEAT_SECONDS = 5.0
RETRY_FLOOR_SECONDS = 30.0


def heartbeat() -> None:
    """Tell Temporal the attempt is alive (a no-op outside an activity and in a local one)."""
    # A local activity has no heartbeat (the workflow task's timeout covers a lost worker); Core
    # would answer each one with an "UnknownActivity" warning.
    if activity.in_activity() and not activity.info().is_local:
        activity.heartbeat()


def is_retry() -> bool:
    """Whether this is not the activity's first attempt (`activity.Info.attempt` > 1): an
    earlier attempt may have started something on the host before its worker was lost."""
    return activity.in_activity() and activity.info().attempt > 1


def time_left(limit: float) -> float:
    """Seconds left of a step's `limit` (seconds) for this attempt: all of it on a first
    attempt; on a retry, what its first attempt left, counted from when Temporal scheduled it
    (`activity.Info.scheduled_time`, the first attempt's), so a step retried after heartbeat
    timeouts does not get its whole limit again on every attempt. At least
    RETRY_FLOOR_SECONDS: enough for a retry to collect a run that has ended, or to kill one
    that overran."""
    if not is_retry():
        return limit
    spent = (datetime.now(UTC) - activity.info().scheduled_time).total_seconds()
    return max(RETRY_FLOOR_SECONDS, limit - spent)


async def keep_heartbeating() -> None:
    """Heartbeat every HEARTBEAT_SECONDS until cancelled."""
    # "The worker is alive" while a step fetches credentials and connects (up to the SSH connect
    # timeout, longer than HEARTBEAT): a slow connect is then reported as itself, not as a
    # heartbeat timeout.
    while True:
        heartbeat()
        await asyncio.sleep(HEARTBEAT_SECONDS)


def unreachable_on_retry(
    error: ApplicationError, what: str, host: str, directory: str
) -> ApplicationError:
    """The error for a retried detached step (activities/detached.py) whose host cannot be
    reached (`error`: HostUnreachable from the connect): an earlier attempt may have started
    the run in `directory`, so its outcome is not known, and "cannot connect" alone would read
    as nothing having run. Retryable, with the same type: the next attempt may reach it."""
    return ApplicationError(
        f"{error.message}; {what} may already be running on {host}: an earlier attempt of "
        f"this step may have started it detached in {directory}, so its outcome is unknown "
        "until the host answers",
        type=error.type,
    )
