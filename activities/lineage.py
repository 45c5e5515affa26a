"""Which rollout, and which run of it, a host step belongs to, as Temporal itself records it.

A signed approval names a rollout id and a digest (workflows/proof.py), not a run: without this,
approvals copied out of a cancelled rollout's history would count again for a new workflow
started under the same id, and approvals copied out of a running rollout's history would count
for a host workflow someone started on their own, outside the rollout's pilots, waves and
windows. The host gate (activities/trust.py) therefore asks Temporal, not the step's input (a
fake worker can write anything there), two facts about the workflow the step's activity was
scheduled by (`activity.Info.workflow_id`/`workflow_run_id`, set by the server):

- its parent (DescribeWorkflowExecution's `parent_execution`): the rollout that started it;
- when that rollout's first run began (the `start_time` of its chain's `first_run_id`; a
  continued run keeps its first run's approvals).

Both are fixed once a run exists, so each run is described once per worker process. When the
first run is no longer kept (retention shorter than the rollout), approvals do not count: the
check fails closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from workflows.models import ApprovalDecision, HostJob

__all__ = ["FirstRunGone", "Lineage", "Lineages", "approvals_problem", "signed_before_start"]

T = TypeVar("T")

# A signer's clock may run behind Temporal's by this much, when a decision is compared with the
# start of the rollout it was given in. Every real decision is signed after the start (the
# signer read the rollout first), so only clock error needs room; the room is also how soon
# after its approvals a rollout would have to be started again for them to count.
SIGNED_BEFORE_START = timedelta(seconds=10)

# Runs remembered; past this the memory starts again (a run is then described once more).
REMEMBERED_RUNS = 20_000


@dataclass(frozen=True)
class Lineage:
    """The rollout a host workflow run was started by (`rollout_id`, None: it has no parent)
    and when that rollout's first run started (None with no parent)."""

    rollout_id: str | None
    rollout_started_at: datetime | None


class Lineages:
    """Lineage of the workflow run the current activity belongs to. Each answer is kept per run
    (a run's parent and its chain's first run never change) as the task that finds it, so the
    many steps of a wave that ask at once share one question to Temporal."""

    def __init__(self) -> None:
        self._hosts: dict[str, asyncio.Task[Lineage]] = {}
        self._starts: dict[tuple[str, str], asyncio.Task[datetime]] = {}

    async def of_current_activity(self) -> Lineage:
        """The current activity's workflow run's Lineage. Raises RuntimeError outside a worker
        that has a client (`activity.client()`), Temporal's RPCError when it cannot say, and
        FirstRunGone when the rollout's first run is no longer kept."""
        info = activity.info()
        if not info.workflow_id or not info.workflow_run_id:  # an activity outside a workflow
            return Lineage(None, None)
        client = activity.client()
        return await _shared(
            self._hosts, info.workflow_run_id, lambda: self._find(client, info.workflow_id or "")
        )

    async def _find(self, client: Client, workflow_id: str) -> Lineage:
        info = activity.info()
        described = await client.get_workflow_handle(
            workflow_id, run_id=info.workflow_run_id
        ).describe()
        if not described.parent_id:
            return Lineage(None, None)
        started = await self._first_start(client, described.parent_id, described.parent_run_id)
        return Lineage(described.parent_id, started)

    async def own_first_start(self) -> datetime:
        """When the first run of the current activity's own workflow chain started (for a
        rollout's own local activities). Raises as `of_current_activity`."""
        info = activity.info()
        if not info.workflow_id:
            raise RuntimeError("not an activity of a workflow")
        return await self._first_start(activity.client(), info.workflow_id, info.workflow_run_id)

    async def _first_start(self, client: Client, workflow_id: str, run_id: str | None) -> datetime:
        key = (workflow_id, run_id or "")
        return await _shared(self._starts, key, lambda: _first_start(client, workflow_id, run_id))


class FirstRunGone(Exception):
    """The first run of a rollout's chain is no longer kept by Temporal (a chain that outlived
    the namespace's retention), so nothing can tie an approval to that rollout's run."""


async def _shared(
    tasks: dict[Any, asyncio.Task[T]], key: Any, find: Callable[[], Awaitable[T]]
) -> T:
    """`find()`'s answer for `key`, found once: later and concurrent callers await the same
    task; a failed one is forgotten, so the next caller asks again."""
    task = tasks.get(key)
    if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
        if len(tasks) > REMEMBERED_RUNS:
            tasks.clear()
        task = asyncio.ensure_future(find())
        tasks[key] = task
    return await asyncio.shield(task)


async def _first_start(client: Client, workflow_id: str, run_id: str | None) -> datetime:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    described = await handle.describe()
    first = described.raw_description.workflow_execution_info.first_run_id
    if not first:  # a server that does not describe it: the run's first event says it
        async for event in handle.fetch_history_events(page_size=1):
            started = event.workflow_execution_started_event_attributes
            first = started.first_execution_run_id or described.run_id
            break
    if not first or first == described.run_id:
        return described.start_time
    try:
        return (await client.get_workflow_handle(workflow_id, run_id=first).describe()).start_time
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise FirstRunGone(
                f"the first run ({first}) of {workflow_id} is no longer kept by Temporal (the "
                "namespace's retention is shorter than the rollout has lasted), so its "
                "approvals cannot be tied to this rollout"
            ) from None
        raise


async def approvals_problem(lineages: Lineages, job: HostJob) -> str | None:
    """Why the approvals `job` carries do not count for the current host step, as Temporal
    records the step's workflow: it was not started by the rollout they were given in, or one
    was signed before that rollout's (first) run began. Raises a retryable ApplicationError
    (TemporalUnavailable) when Temporal cannot be asked."""
    try:
        lineage = await lineages.of_current_activity()
    except RuntimeError:  # no Temporal client here: nothing to check the lineage with
        return "this worker cannot ask Temporal which rollout the host's workflow belongs to"
    except FirstRunGone as gone:
        return str(gone)
    except RPCError as error:
        raise ApplicationError(
            f"cannot ask Temporal which rollout started this host's workflow: {error}",
            type="TemporalUnavailable",
        ) from None
    if lineage.rollout_id != job.rollout_id:
        started = (
            f"rollout {lineage.rollout_id}"
            if lineage.rollout_id
            else "no rollout (it was started on its own)"
        )
        return (
            f"its workflow was started by {started}, not by rollout {job.rollout_id}, whose "
            "approvals it carries; approvals count only in the rollout they were given in"
        )
    began = lineage.rollout_started_at
    return signed_before_start(job.approvals, job.rollout_id, began) if began else None


def signed_before_start(
    approvals: list[ApprovalDecision], rollout_id: str, began: datetime
) -> str | None:
    """Why the first of `approvals` signed before `began` (the first run of `rollout_id`
    started; less SIGNED_BEFORE_START) does not count, or None."""
    for approval in approvals:
        if approval.proof is None:
            continue
        signed = approval.proof.decided_at.replace(tzinfo=approval.proof.decided_at.tzinfo or UTC)
        if signed < began - SIGNED_BEFORE_START:
            return (
                f"{approval.approver}'s approval was signed at {signed:%Y-%m-%d %H:%M:%S} UTC, "
                f"before this run of rollout {rollout_id} began ({began:%Y-%m-%d %H:%M:%S} "
                "UTC): approvals do not carry over to a rollout started again under its id"
            )
    return None
