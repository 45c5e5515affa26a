"""The one client facade every front end uses to talk to Temporal about rollouts.

The CLI, the Slack app, the approval link pages and the demo start, decide, cancel, list and read
rollouts only through `Rollouts`, so each rule (rollout ids, typed update references, how a
Temporal error reads to a person) exists once. Workflow code never imports this module.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from workflows.host_patch import HostPatchWorkflow
from workflows.models import (
    DEFAULT_TASK_QUEUE,
    HOST_WORKFLOW_NAME,
    WORKFLOW_NAME,
    ApprovalDecision,
    HostPatchResult,
    HostProgress,
    HostState,
    HostStepReport,
    RolloutControl,
    RolloutInput,
    RolloutProgress,
    RolloutSummary,
)
from workflows.policies import failure_reason, host_workflow_id
from workflows.system_patch import SystemPatchWorkflow

log = logging.getLogger("patchpilot.rollouts")

# The updates that control a running rollout (workflows.controls), as front ends name them.
CONTROLS = ("pause", "resume", "skip", "abort", "gate")
# Hosts in flight are at most maxConcurrency (≤ 1000): ask at most this many at once.
MAX_PARALLEL_QUERIES = 50
# Explaining a refusal must not hang when no worker is up to answer the query of a closed rollout.
ENDING_QUERY_TIMEOUT = timedelta(seconds=5)


def new_rollout_id(clusters: list[str], *, prefix: str = "patch") -> str:
    """A workflow id like `patch-cluster-a-cluster-b-20261130-210200-9f3c1a2b`.

    The clusters (cut at 40 characters) make it readable in the Web UI; the UTC time orders it;
    8 random hex digits keep ids unique when a busy channel starts several rollouts a second.
    Without clusters the label is left out: `demo-20261130-210200-9f3c1a2b`.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    label = "-".join(clusters)[:40]
    return "-".join(part for part in (prefix, label, stamp, secrets.token_hex(4)) if part)


class Problem(StrEnum):
    """Why a request about a rollout did not go through; front ends choose their wording by it."""

    REFUSED = "refused"  # the workflow's rules said no (not an approver, already decided, id taken)
    ENDED = "ended"  # the rollout exists but has finished
    NOT_FOUND = "not-found"  # no rollout with that id
    UNAVAILABLE = "unavailable"  # Temporal did not answer; trying again may work


class RolloutError(Exception):
    """A request about a rollout that did not go through; `str()` is a sentence for people."""

    def __init__(self, message: str, problem: Problem) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class RolloutStatus:
    """A rollout's progress with its workflow's execution status (e.g. "RUNNING", "FAILED")."""

    progress: RolloutProgress
    status: str

    @property
    def running(self) -> bool:
        """True while the workflow runs (it may still be waiting for its approval)."""
        return self.status == WorkflowExecutionStatus.RUNNING.name


@dataclass(frozen=True)
class RolloutRow:
    """One rollout in a listing: its id, execution status in lower case, and start time (UTC)."""

    rollout_id: str
    status: str
    started_at: datetime


def _rpc_error(rollout_id: str, error: RPCError) -> RolloutError:
    """How a Temporal RPC error about `rollout_id` reads to a person (no status codes)."""
    if error.status == RPCStatusCode.NOT_FOUND:
        return RolloutError(f"no rollout with id {rollout_id}", Problem.NOT_FOUND)
    if "completed" in error.message.lower():
        return RolloutError(f"rollout {rollout_id} has already finished", Problem.ENDED)
    return RolloutError(
        f"Temporal refused the request for {rollout_id}: {error.message}", Problem.UNAVAILABLE
    )


class Rollouts:
    """Start, decide, cancel, list and read rollouts on one Temporal client and task queue.

    Every method raises `RolloutError` (never a raw Temporal error) when the request did not go
    through, with a message that says what happened in words a person can act on.
    """

    def __init__(self, client: Client, task_queue: str = DEFAULT_TASK_QUEUE) -> None:
        self.client = client
        self.task_queue = task_queue

    def handle(self, rollout_id: str) -> WorkflowHandle[SystemPatchWorkflow, RolloutSummary]:
        """The typed handle of rollout `rollout_id` (its latest run)."""
        return self.client.get_workflow_handle_for(SystemPatchWorkflow.run, rollout_id)

    async def start(
        self, rollout: RolloutInput, rollout_id: str | None = None
    ) -> WorkflowHandle[SystemPatchWorkflow, RolloutSummary]:
        """Start SystemPatchWorkflow with `rollout` (validated by the caller at the edge).

        The id defaults to `new_rollout_id(rollout.target_clusters)`; an id already in use
        raises `RolloutError` with `Problem.REFUSED`.
        """
        workflow_id = rollout_id or new_rollout_id(rollout.target_clusters)
        try:
            return await self.client.start_workflow(
                SystemPatchWorkflow.run, rollout, id=workflow_id, task_queue=self.task_queue
            )
        except WorkflowAlreadyStartedError:
            raise RolloutError(
                f"a rollout with id {workflow_id} already exists", Problem.REFUSED
            ) from None
        except RPCError as error:
            raise RolloutError(
                f"the rollout could not be started: {error.message}", Problem.UNAVAILABLE
            ) from None

    async def decide(
        self,
        rollout_id: str,
        decision: ApprovalDecision,
        *,
        approve: bool,
        first_run: str | None = None,
    ) -> str:
        """Send the `approve` or `reject` update; returns the workflow's answer
        ("approved by alice@example.com"). With `first_run`, only to a run of that chain
        (Temporal refuses another: the id started anew). A refusal by the update's validator
        raises `RolloutError` with `Problem.REFUSED` and the validator's reason."""
        handle = self.client.get_workflow_handle_for(
            SystemPatchWorkflow.run, rollout_id, first_execution_run_id=first_run
        )
        try:
            name = "approve" if approve else "reject"  # async updates: the SDK types them loosely
            return await handle.execute_update(name, decision, result_type=str)
        except WorkflowUpdateFailedError as error:
            raise RolloutError(failure_reason(error), Problem.REFUSED) from None
        except RPCError as error:
            raise await self._explain(rollout_id, error, "nothing to decide") from None

    async def control(self, rollout_id: str, action: str, control: RolloutControl) -> str:
        """Send the `pause`, `resume`, `skip`, `abort` or `gate` (a `workflows.gating.GateControl`:
        cut or extend the soak) update (`action`, one of CONTROLS);
        returns the workflow's answer ("paused by bob@example.com"). A refusal by the update's
        validator raises `RolloutError` with `Problem.REFUSED` and the validator's reason."""
        if action not in CONTROLS:
            raise ValueError(f"unknown control {action!r} (one of {', '.join(CONTROLS)})")
        try:
            answer = await self.handle(rollout_id).execute_update(action, control, result_type=str)
        except WorkflowUpdateFailedError as error:
            raise RolloutError(failure_reason(error), Problem.REFUSED) from None
        except RPCError as error:
            raise await self._explain(rollout_id, error, "nothing to control") from None
        return str(answer)

    async def cancel(self, rollout_id: str) -> None:
        """Ask the rollout to stop: no new host starts; hosts in flight finish their steps.

        Temporal accepts a cancel for a workflow that already ended and changes nothing, so an
        ended rollout is refused here with how it ended (`Problem.ENDED`).
        """
        handle = self.handle(rollout_id)
        try:
            description = await handle.describe()
            if description.status == WorkflowExecutionStatus.RUNNING:
                await handle.cancel()
                return
        except RPCError as error:
            raise await self._explain(rollout_id, error, "nothing to cancel") from None
        ending = await self._ending(rollout_id, description)
        raise RolloutError(
            f"rollout {rollout_id} has already finished ({ending}); nothing to cancel",
            Problem.ENDED,
        )

    async def progress(
        self, rollout_id: str, *, steps: bool = True, timeout: float | None = None
    ) -> RolloutProgress:
        """The rollout's `progress` query; `steps` also asks every running host its step.
        `timeout` (seconds) bounds the query, which otherwise waits for Temporal's own query
        timeout (30 s) while no worker polls the rollout's task queue (RolloutError then)."""
        rpc_timeout = None if timeout is None else timedelta(seconds=timeout)
        try:
            progress = await self.handle(rollout_id).query(
                SystemPatchWorkflow.progress, rpc_timeout=rpc_timeout
            )
        except RPCError as error:
            raise _rpc_error(rollout_id, error) from None
        if steps:
            await self.fill_running_steps(progress)
        return progress

    async def request(self, rollout_id: str) -> RolloutInput:
        """What was asked of the rollout (its latest run's input: clusters, pilot count, services,
        update command, people), read from the run's first history event; it never changes, so
        a caller may keep it. Raises RolloutError when Temporal cannot say."""
        try:
            async for event in self.handle(rollout_id).fetch_history_events(page_size=1):
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                decoded = await self.client.data_converter.decode(payloads[:1], [RolloutInput])
                return RolloutInput.model_validate(decoded[0])
        except RPCError as error:
            raise _rpc_error(rollout_id, error) from None
        raise RolloutError(f"no history for rollout {rollout_id}", Problem.NOT_FOUND)

    async def first_run(self, rollout_id: str) -> str:
        """The id of the first run of the rollout's latest chain (kept by continue-as-new,
        another when the id was started anew), from its latest run's first history event.
        Raises RolloutError when Temporal cannot say."""
        try:
            async for event in self.handle(rollout_id).fetch_history_events(page_size=1):
                started = event.workflow_execution_started_event_attributes
                return started.first_execution_run_id or ""
        except RPCError as error:
            raise _rpc_error(rollout_id, error) from None
        raise RolloutError(f"no history for rollout {rollout_id}", Problem.NOT_FOUND)

    async def status(self, rollout_id: str) -> RolloutStatus:
        """The rollout's progress (with running hosts' steps) and its execution status."""
        try:
            description = await self.handle(rollout_id).describe()
        except RPCError as error:
            raise _rpc_error(rollout_id, error) from None
        progress = await self.progress(rollout_id)
        status = description.status.name if description.status else "UNKNOWN"
        return RolloutStatus(progress=progress, status=status)

    async def result(self, rollout_id: str) -> RolloutSummary:
        """Wait for the rollout to end and return its summary, also when it ended as failed
        (a failed rollout carries its summary in the failure's details)."""
        try:
            return await self.handle(rollout_id).result()
        except WorkflowFailureError as error:
            details = getattr(error.cause, "details", None)
            if details:
                return RolloutSummary.model_validate(details[0])
            raise RolloutError(
                f"rollout {rollout_id} failed: {failure_reason(error)}", Problem.ENDED
            ) from None
        except RPCError as error:
            raise _rpc_error(rollout_id, error) from None

    async def host_results(self, rollout_id: str) -> list[HostPatchResult]:
        """The results of the rollout's ended host workflows (their package reports among them),
        found by their parent, sorted by host name; hosts still running are left out.
        RolloutError (NOT_FOUND) when there is no such rollout."""
        query = f"WorkflowType='{HOST_WORKFLOW_NAME}' AND ParentWorkflowId='{_quoted(rollout_id)}'"
        found: list[HostPatchResult] = []
        try:
            async for execution in self.client.list_workflows(query=query):
                if execution.status != WorkflowExecutionStatus.COMPLETED:
                    continue
                handle = self.client.get_workflow_handle(
                    execution.id, run_id=execution.run_id, result_type=HostPatchResult
                )
                found.append(await handle.result())
            if not found:  # none ended yet, or no such rollout: say which
                await self.client.get_workflow_handle(rollout_id).describe()
        except RPCError as error:
            raise _rpc_error(rollout_id, error) from None
        return sorted(found, key=lambda result: result.hostname)

    async def host_result(self, rollout_id: str, hostname: str) -> HostPatchResult | None:
        """`hostname`'s result in `rollout_id`, read by workflow id (no wait for visibility, as
        `host_results` has): None while it runs, or when the id is since another rollout's."""
        handle = self.client.get_workflow_handle(host_workflow_id(hostname))
        try:
            described = await handle.describe()
            if (
                described.parent_id != rollout_id
                or described.status != WorkflowExecutionStatus.COMPLETED
            ):
                return None
            ended = self.client.get_workflow_handle(
                described.id, run_id=described.run_id, result_type=HostPatchResult
            )
            return await ended.result()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:  # the host was never started
                return None
            raise _rpc_error(rollout_id, error) from None

    async def list(self, condition: str = "", limit: int = 10) -> list[RolloutRow]:
        """Rollouts matching a Temporal visibility `condition` (e.g. "ExecutionStatus='Running'"),
        newest first, at most `limit`."""
        query = f"WorkflowType='{WORKFLOW_NAME}'" + (f" AND {condition}" if condition else "")
        rows: list[RolloutRow] = []
        try:
            async for execution in self.client.list_workflows(query=query, limit=limit):
                status = execution.status.name.lower() if execution.status else "unknown"
                rows.append(RolloutRow(execution.id, status, execution.start_time))
        except RPCError as error:
            raise RolloutError(
                f"Temporal refused to list rollouts: {error.message}", Problem.UNAVAILABLE
            ) from None
        return rows

    async def fill_running_steps(self, progress: RolloutProgress) -> None:
        """Fill in each running host's step from its own host workflow's `host_progress` query.

        The rollout does not hear of every step (that cost a workflow task per step in both
        workflows), so readers ask the hosts in flight; a host that just finished keeps no step.
        """
        running = [h for h in progress.hosts() if h.state == HostState.RUNNING and h.step is None]
        gate = asyncio.Semaphore(MAX_PARALLEL_QUERIES)

        async def ask(host: HostProgress) -> None:
            async with gate:
                try:
                    report: HostStepReport = await self.client.get_workflow_handle_for(
                        HostPatchWorkflow.run, host_workflow_id(host.name)
                    ).query(HostPatchWorkflow.host_progress)
                except Exception as error:  # a host that just finished, or a worker restarting
                    log.debug("no step for %s: %s", host.name, error)
                    return
            if host.state == HostState.RUNNING and report.hostname == host.name:
                host.step = report.step
                host.in_maintenance = report.in_maintenance

        await asyncio.gather(*(ask(host) for host in running))

    async def _explain(self, rollout_id: str, error: RPCError, consequence: str) -> RolloutError:
        """Temporal answers NOT_FOUND both for an unknown id and for an update to a finished
        workflow: tell which, and for a finished one how it ended."""
        plain = _rpc_error(rollout_id, error)
        if (
            plain.problem == Problem.UNAVAILABLE
            and error.status != RPCStatusCode.FAILED_PRECONDITION
        ):
            return plain
        try:
            description = await self.handle(rollout_id).describe()
        except RPCError:
            return plain
        if description.status == WorkflowExecutionStatus.RUNNING:
            return plain
        ending = await self._ending(rollout_id, description)
        return RolloutError(
            f"rollout {rollout_id} has already finished ({ending}); {consequence}", Problem.ENDED
        )

    async def _ending(self, rollout_id: str, description: Any) -> str:
        """How a finished rollout ended, e.g. "failed: cannot resolve cluster x: …"."""
        try:
            progress = await self.handle(rollout_id).query(
                SystemPatchWorkflow.progress, rpc_timeout=ENDING_QUERY_TIMEOUT
            )
        except Exception:  # no worker to answer the query: the execution status must do
            return description.status.name.lower() if description.status else "ended"
        return (
            f"{progress.phase.value}: {progress.message}"
            if progress.message
            else progress.phase.value
        )


def _quoted(value: str) -> str:
    """`value` inside a single-quoted visibility string (rollout ids have no quote, but a typed
    one might)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
