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
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from workflows.models import ApprovalDecision, HostJob

__all__ = [
    "FirstRunGone",
    "Lineage",
    "Lineages",
    "NoClient",
    "approvals_problem",
    "decision_problem",
    "signed_before_start",
]

T = TypeVar("T")

# A signer's clock may run behind Temporal's by this much, when a decision is compared with the
# start of the rollout it was given in. Every real decision is signed after the start (the
# signer read the rollout first), so only clock error needs room; the room is also how soon
# after its approvals a rollout would have to be started again for them to count.
SIGNED_BEFORE_START = timedelta(seconds=10)

# Runs remembered; past this the memory starts again (a run is then described once more).
REMEMBERED_RUNS = 20_000
# One question to Temporal, and the whole of finding one answer (a few questions), at most.
RPC_TIMEOUT = timedelta(seconds=10)
FIND_SECONDS = 30.0


@dataclass(frozen=True)
class Lineage:
    """The rollout a host workflow run was started by (`rollout_id`, None: it has no parent)
    and when that rollout's first run started (None with no parent)."""

    rollout_id: str | None
    rollout_started_at: datetime | None


class NoClient(Exception):
    """This worker has no Temporal client to ask (`activity.client()`): nothing can be checked."""


class FirstRunGone(Exception):
    """The first run of a rollout's chain is no longer kept by Temporal (a chain that outlived
    the namespace's retention), so nothing can tie an approval to that rollout's run."""


class Lineages:
    """Lineage of the workflow run the current activity belongs to. Each answer is kept per run
    (a run's parent and its chain's first run never change), and while it is being found, the
    many steps of a wave that ask at once share that one question to Temporal."""

    def __init__(self) -> None:
        self._hosts = _Shared[str, Lineage]()
        self._starts = _Shared[tuple[str, str], datetime]()

    async def of_current_activity(self) -> Lineage:
        """The current activity's workflow run's Lineage. Raises NoClient outside a worker with
        a Temporal client, Temporal's RPCError or TimeoutError when it cannot say, and
        FirstRunGone when the rollout's first run is no longer kept."""
        info = activity.info()
        if not info.workflow_id or not info.workflow_run_id:  # an activity outside a workflow
            return Lineage(None, None)
        client = _client()
        workflow_id, run_id = info.workflow_id, info.workflow_run_id
        return await self._hosts.get(run_id, lambda: self._find(client, workflow_id, run_id))

    async def _find(self, client: Client, workflow_id: str, run_id: str) -> Lineage:
        described = await client.get_workflow_handle(workflow_id, run_id=run_id).describe(
            rpc_timeout=RPC_TIMEOUT
        )
        if not described.parent_id:
            return Lineage(None, None)
        started = await self._first_start(client, described.parent_id, described.parent_run_id)
        return Lineage(described.parent_id, started)

    async def own_first_start(self) -> datetime:
        """When the first run of the current activity's own workflow chain started (for a
        rollout's own local activities). Raises as `of_current_activity`."""
        info = activity.info()
        if not info.workflow_id:
            raise NoClient("not an activity of a workflow")
        return await self._first_start(_client(), info.workflow_id, info.workflow_run_id)

    async def _first_start(self, client: Client, workflow_id: str, run_id: str | None) -> datetime:
        key = (workflow_id, run_id or "")
        return await self._starts.get(key, lambda: _first_start(client, workflow_id, run_id))


def _client() -> Client:
    try:
        return activity.client()
    except RuntimeError as error:
        raise NoClient(str(error)) from None


K = TypeVar("K")


class _Shared(Generic[K, T]):
    """Answers by key, found once: concurrent callers await the one task finding it (created
    in an empty context, so it keeps no activity's context alive, and given at most
    FIND_SECONDS); a finished answer is kept as a value; a failure is not kept."""

    def __init__(self) -> None:
        self._found: dict[K, T] = {}
        self._finding: dict[K, asyncio.Task[T]] = {}

    async def get(self, key: K, find: Callable[[], Awaitable[T]]) -> T:
        if key in self._found:
            return self._found[key]
        task = self._finding.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self._find(key, find), context=contextvars.Context()
            )
            self._finding[key] = task
        return await asyncio.shield(task)

    async def _find(self, key: K, find: Callable[[], Awaitable[T]]) -> T:
        try:
            found = await asyncio.wait_for(find(), FIND_SECONDS)
        finally:
            self._finding.pop(key, None)
        if len(self._found) >= REMEMBERED_RUNS:
            self._found.clear()
        self._found[key] = found
        return found


async def _first_start(client: Client, workflow_id: str, run_id: str | None) -> datetime:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    described = await handle.describe(rpc_timeout=RPC_TIMEOUT)
    first = described.raw_description.workflow_execution_info.first_run_id
    if not first:  # a server that does not describe it: the run's first event says it
        async for event in handle.fetch_history_events(page_size=1, rpc_timeout=RPC_TIMEOUT):
            started = event.workflow_execution_started_event_attributes
            first = started.first_execution_run_id or described.run_id
            break
    if not first or first == described.run_id:
        return described.start_time
    try:
        first_run = client.get_workflow_handle(workflow_id, run_id=first)
        return (await first_run.describe(rpc_timeout=RPC_TIMEOUT)).start_time
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
        lineage = await _asked(
            lineages.of_current_activity(), "which rollout started this host's workflow"
        )
    except NoClient:  # nothing to check the lineage with
        return "this worker cannot ask Temporal which rollout the host's workflow belongs to"
    except FirstRunGone as gone:
        return str(gone)
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


async def decision_problem(
    lineages: Lineages, approval: ApprovalDecision, rollout_id: str
) -> str | None:
    """Why `approval`, sent to the current activity's own rollout (`rollout_id`), does not
    count for this run of it: signed before its first run began, or no way to tell (fails
    closed, as approvals_problem does). Raises as approvals_problem."""
    try:
        began = await _asked(lineages.own_first_start(), "when this rollout began")
    except (NoClient, FirstRunGone) as error:
        return f"cannot tie {approval.approver}'s decision to this rollout's run: {error}"
    return signed_before_start([approval], rollout_id, began)


async def _asked(question: Awaitable[T], what: str) -> T:
    """`question`'s answer; a retryable ApplicationError (TemporalUnavailable) when Temporal
    does not give one."""
    try:
        return await question
    except (RPCError, TimeoutError) as error:
        raise ApplicationError(
            f"cannot ask Temporal {what}: {error}", type="TemporalUnavailable"
        ) from None


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
