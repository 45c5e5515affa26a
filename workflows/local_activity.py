"""`run_local`: a local activity that fails the way an activity does.

A failed activity raises ActivityError with the activity's own error as its cause; a failed local
activity raises the activity's error itself (an ApplicationError, or a TimeoutError for its
start-to-close limit). The workflows catch ActivityError around every step and read the reason
from the cause (`policies.failure_reason`), so a local step's failure is wrapped the same way.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

T = TypeVar("T")


async def run_local(
    name: str,
    arg: Any,
    *,
    result_type: type[T],
    start_to_close_timeout: timedelta,
    retry_policy: RetryPolicy,
) -> T:
    """Run the activity `name` as a local activity; raises ActivityError (cause: the activity's
    error) when it fails after `retry_policy`, asyncio.CancelledError when the workflow is."""
    try:
        return await workflow.execute_local_activity(
            name,
            arg,
            result_type=result_type,
            start_to_close_timeout=start_to_close_timeout,
            retry_policy=retry_policy,
        )
    except ActivityError:
        raise
    except FailureError as error:
        raise ActivityError(
            f"local activity {name} failed",
            scheduled_event_id=0,
            started_event_id=0,
            identity="",
            activity_type=name,
            activity_id="",
            retry_state=None,
        ) from error
