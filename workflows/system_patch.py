"""SystemPatchWorkflow: resolve the clusters, get approval, check Vault, then per cluster the pilot
hosts first and the rest in a sliding window (or in the batches `waves` lists), then a summary.

`run` reads like the spec (DESIGN.md "The rollout"). Each host is patched by its own
HostPatchWorkflow (`workflows.host_patch`); the bookkeeping is `workflows.state.RolloutState`; the
pure rules (pilots, batches, error budget) are in `workflows.planning`.
"""

from __future__ import annotations

import asyncio
from collections import deque

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    from workflows import names
    from workflows.approval import check_decision, standing_comment
    from workflows.dry_run import inspect_hosts
    from workflows.models import (
        HOST_WORKFLOW_NAME,
        WORKFLOW_NAME,
        ApprovalDecision,
        ClusterHosts,
        ClusterHostsRequest,
        HostJob,
        HostPatchInput,
        HostPatchResult,
        HostTarget,
        Phase,
        RolloutInput,
        RolloutNotice,
        RolloutProgress,
        RolloutSummary,
        VaultPreflightInput,
    )
    from workflows.notices import failure_details, listing, rollout_notice, send_notice, stop_reason
    from workflows.planning import stages
    from workflows.policies import (
        HOST_WORKFLOW_PREFIX,
        LOOKUP,
        TRANSIENT_RETRY,
        VAULT_RETRY,
        failure_reason,
        host_workflow_id,
    )
    from workflows.state import RolloutState
    from workflows.windows import describe


# Set by the server on every run a Temporal Schedule starts.
SCHEDULED_BY = SearchAttributeKey.for_keyword("TemporalScheduledById")

# Events a host in flight may still add to the run after we stop starting hosts (its child's
# start and end, workflow tasks, a failure alert), so the run ends inside its budget.
EVENTS_PER_HOST_IN_FLIGHT = 10


class RolloutStopped(Exception):
    """Raised inside the workflow to end the rollout early with a reason."""


class HistoryFull(Exception):
    """Raised when this run's history is near its budget: the rollout continues as new."""


@workflow.defn(name=WORKFLOW_NAME)
class SystemPatchWorkflow:
    @workflow.init
    def __init__(self, rollout: RolloutInput) -> None:
        # State exists before the first update or query arrives, even in the first workflow task.
        rollout_id = workflow.info().workflow_id
        self._rollout = rollout
        self._state = RolloutState(rollout, rollout_id, workflow.now())
        self._job = HostJob.from_rollout(rollout_id, rollout)
        self._cancel_requested = False
        self._stop_reason: str | None = None
        self._finished_hosts: list[HostPatchResult] = []  # results the rollout loop has not read
        self._host_tasks: set[asyncio.Task[None]] = set()

    # ---- the rollout, as the spec tells it -----------------------------------------------------

    @workflow.run
    async def run(self, rollout: RolloutInput) -> RolloutSummary:
        progress = self._state.progress
        try:
            if rollout.continued is None:
                await self._resolve_clusters()
                if rollout.dry_run:
                    # A dry run changes nothing, so it needs no approval.
                    await inspect_hosts(self._state, self._job, rollout.max_concurrency)
                    return await self._finish()
                if not await self._obtain_approval():
                    return await self._finish()
                await self._vault_preflight()
            progress.phase = Phase.PATCHING
            for cluster in progress.clusters:
                await self._patch_cluster(cluster.name)
            progress.phase = Phase.SUCCEEDED
            progress.message = "every host was patched"
            if self._state.failures:
                progress.message = (
                    f"{self._state.failures} host(s) failed, within the error budget (maxFailures "
                    f"{rollout.max_failures}); every other host was patched"
                )
        except HistoryFull:
            workflow.logger.info(
                "history at %s events: continuing as new (run %s)",
                workflow.info().get_current_history_length(),
                self._state.runs + 1,
            )
            carry = self._state.carry(workflow.now())
            workflow.continue_as_new(rollout.model_copy(update={"continued": carry}))
        except RolloutStopped as stopped:
            progress.phase = Phase.FAILED
            progress.message = str(stopped)
        except asyncio.CancelledError:
            progress.phase = Phase.CANCELLED
            progress.message = "the rollout was cancelled; no further host was started"
            self._state.skip_pending()
            await self._finish()
            raise
        summary = await self._finish()
        if summary.phase == Phase.FAILED:
            raise ApplicationError(
                summary.message, summary, type="RolloutFailed", non_retryable=True
            )
        return summary

    async def _resolve_clusters(self) -> None:
        """Resolve every cluster before asking for approval: what is approved is what is patched."""
        rollout = self._rollout
        for cluster_name in rollout.target_clusters:
            try:
                resolved = await workflow.execute_activity(
                    names.GET_CLUSTER_HOSTS,
                    ClusterHostsRequest(target_cluster=cluster_name),
                    result_type=ClusterHosts,
                    start_to_close_timeout=LOOKUP,
                    retry_policy=TRANSIENT_RETRY,
                )
            except ActivityError as error:
                raise RolloutStopped(
                    f"cannot resolve cluster {cluster_name}: {failure_reason(error)}"
                ) from error
            note = None
            if resolved.hosts and rollout.pilot_host_count >= len(resolved.hosts):
                note = (
                    f"pilot count {rollout.pilot_host_count} covers all {len(resolved.hosts)} "
                    "hosts: the whole cluster is pilot"
                )
            windows = rollout.maintenance_windows or resolved.windows
            self._state.add_cluster(cluster_name, resolved.hosts, windows, note)

    def _standing_approval(self) -> bool:
        """A schedule's pre-approval counts only for runs that schedule started."""
        decision = self._rollout.pre_approved_by
        if decision is None:
            return False
        schedule = workflow.info().typed_search_attributes.get(SCHEDULED_BY)
        if not schedule:
            workflow.logger.warning("preApprovedBy ignored: this run was not started by a schedule")
            return False
        try:
            self._validate_decision(decision, approving=True)
        except ValueError as refused:
            workflow.logger.warning("standing pre-approval refused: %s", refused)
            return False
        self._state.decide(decision.approver, decision.comment, approved=True)
        self._state.progress.decision_comment = standing_comment(decision, schedule)
        return True

    async def _obtain_approval(self) -> bool:
        rollout, state = self._rollout, self._state
        if self._standing_approval():
            return True
        state.progress.phase = Phase.AWAITING_APPROVAL
        await send_notice(names.SEND_APPROVAL_REQUEST, self._notice(with_hosts=True))
        try:
            await workflow.wait_condition(
                lambda: state.approved is not None, timeout=rollout.approval_timeout
            )
        except TimeoutError:
            state.approved = False
            state.progress.phase = Phase.APPROVAL_TIMED_OUT
            state.progress.message = (
                f"no approver decided within {rollout.approval_timeout}; nothing was touched"
            )
            state.skip_pending()
            return False
        if not state.approved:
            state.progress.phase = Phase.REJECTED
            state.progress.message = f"rejected by {state.progress.decided_by}; nothing was touched"
            state.skip_pending()
            return False
        return True

    async def _vault_preflight(self) -> None:
        rollout = self._rollout
        self._state.progress.phase = Phase.PREFLIGHT
        try:
            await workflow.execute_activity(
                names.VAULT_CLIENT,
                VaultPreflightInput(
                    vault_address=rollout.vault_address,
                    vault_token=rollout.vault_token,
                    secret_path_prefix=rollout.secret_path_prefix,
                    probe_host=self._state.first_host(),
                ),
                start_to_close_timeout=LOOKUP,
                retry_policy=VAULT_RETRY,
            )
        except ActivityError as error:
            reason = f"Vault preflight failed: {failure_reason(error)}"
            await send_notice(names.SEND_FAILURE_ALERT, self._notice(failure_details=reason))
            self._state.skip_pending()
            raise RolloutStopped(f"{reason}; no host was touched") from error

    async def _patch_cluster(self, cluster: str) -> None:
        """Pilots first, then the rest (see `planning.stages`)."""
        rollout, state = self._rollout, self._state
        targets = state.targets[cluster]
        plan = stages(targets, rollout.pilot_host_count, rollout.max_concurrency, rollout.waves)
        for stage in plan:
            pending = state.pending(stage.hosts)
            if not pending:
                continue  # every host of this stage finished in an earlier run
            await self._await_window(cluster)
            wave = f"{cluster}: {stage.label}: {listing(pending, len(stage.hosts))}"
            await send_notice(
                names.SEND_WAVE_NOTIFICATION, self._notice(cluster=cluster, wave=wave)
            )
            await self._roll(cluster, pending, stage.limit, pilot=stage.pilot)

    async def _roll(
        self, cluster: str, hosts: list[HostTarget], limit: int, *, pilot: bool
    ) -> None:
        """Keep up to `limit` hosts in flight until every host of `hosts` has run, or a stop.

        A stop (error budget, cancel, a full history) only stops new hosts from starting: the
        hosts in flight always finish every step rather than being abandoned half-patched.
        """
        rollout = self._rollout
        queue = deque(hosts)
        in_flight = 0
        while True:
            while queue and in_flight < limit and self._may_start(in_flight):
                status = self._state.window_status(cluster, workflow.now(), rollout.window_cutoff)
                if status is not None and not status.open:
                    if in_flight:
                        break  # let the hosts in flight finish, then wait for the window
                    await self._await_window(cluster)
                self._launch(queue.popleft())
                in_flight += 1
            if in_flight == 0:
                break
            try:
                await workflow.wait_condition(lambda: bool(self._finished_hosts))
            except asyncio.CancelledError:
                workflow.logger.info("rollout cancelled; waiting for hosts in progress")
                self._cancel_requested = True
                continue
            while self._finished_hosts:
                in_flight -= 1
                await self._host_finished(cluster, self._finished_hosts.pop(0), pilot=pilot)
        if self._cancel_requested:
            self._state.skip_pending()
            raise asyncio.CancelledError()
        if self._stop_reason is not None:
            self._state.skip_pending()
            raise RolloutStopped(self._stop_reason)
        if queue:
            raise HistoryFull()

    def _may_start(self, in_flight: int) -> bool:
        if self._cancel_requested or self._stop_reason is not None:
            return False
        info = workflow.info()
        reserve = (in_flight + 1) * EVENTS_PER_HOST_IN_FLIGHT + 50
        if info.get_current_history_length() + reserve >= self._rollout.history_event_budget:
            return False
        return not info.is_continue_as_new_suggested()

    def _launch(self, host: HostTarget) -> None:
        self._state.mark_started(host.name, workflow.now())
        task = asyncio.create_task(self._patch_host(host))
        self._host_tasks.add(task)
        task.add_done_callback(self._host_tasks.discard)

    async def _host_finished(self, cluster: str, result: HostPatchResult, *, pilot: bool) -> None:
        self._state.record_result(result, workflow.now())
        if result.ok:
            return
        try:
            await send_notice(
                names.SEND_FAILURE_ALERT,
                self._notice(
                    hostname=result.hostname,
                    cluster=cluster,
                    step=result.step,
                    failure_details=failure_details(cluster, result),
                ),
            )
        except asyncio.CancelledError:
            self._cancel_requested = True
        over = self._state.over_budget(cluster, self._rollout.max_failures, pilot=pilot)
        if self._stop_reason is None and over:
            self._stop_reason = stop_reason(result, pilot=pilot)

    async def _patch_host(self, host: HostTarget) -> None:
        try:
            child = await workflow.start_child_workflow(
                HOST_WORKFLOW_NAME,
                HostPatchInput(job=self._job, host=host),
                id=host_workflow_id(host.name),
                result_type=HostPatchResult,
            )
        except WorkflowAlreadyStartedError:
            self._finished_hosts.append(_busy(host))
            return
        try:
            result = await child
        except ChildWorkflowError as error:
            result = HostPatchResult(
                hostname=child.id.removeprefix(HOST_WORKFLOW_PREFIX),
                ok=False,
                step=None,
                failure_reason=f"host workflow ended abnormally: {failure_reason(error)}",
                in_maintenance=None,
            )
        self._finished_hosts.append(result)

    # ---- maintenance windows -----------------------------------------------------------------

    async def _await_window(self, cluster: str) -> None:
        """Start hosts only inside a maintenance window with `windowCutoff` to spare."""
        state, progress = self._state, self._state.progress
        while True:
            status = state.window_status(cluster, workflow.now(), self._rollout.window_cutoff)
            if status is None:
                return
            if status.open:
                progress.waiting_for_window = None
                return
            if status.next_opening is None:
                raise RolloutStopped(f"no maintenance window of {cluster} opens again")
            opening = describe(status.next_opening, state.windows[cluster][0].timezone)
            progress.waiting_for_window = f"{cluster}: waiting for window {opening}"
            workflow.logger.info(progress.waiting_for_window)
            # Chat shows the wait (thread line, and the card reads `waitingForWindow`).
            await send_notice(
                names.SEND_WAVE_NOTIFICATION,
                self._notice(cluster=cluster, waiting=progress.waiting_for_window),
            )
            await workflow.sleep(status.next_opening - workflow.now())

    async def _finish(self) -> RolloutSummary:
        summary = self._state.summary(workflow.now(), dry_run=self._rollout.dry_run)
        await send_notice(
            names.SEND_ROLLOUT_SUMMARY, self._notice(with_hosts=True, summary=summary)
        )
        return summary

    # ---- approval ----------------------------------------------------------------------------

    @workflow.update(name="approve")
    def approve(self, decision: ApprovalDecision) -> str:
        self._state.decide(decision.approver, decision.comment, approved=True)
        return f"approved by {decision.approver}"

    @approve.validator
    def _validate_approve(self, decision: ApprovalDecision) -> None:
        self._validate_decision(decision, approving=True)

    @workflow.update(name="reject")
    def reject(self, decision: ApprovalDecision) -> str:
        self._state.decide(decision.approver, decision.comment, approved=False)
        return f"rejected by {decision.approver}"

    @reject.validator
    def _validate_reject(self, decision: ApprovalDecision) -> None:
        self._validate_decision(decision, approving=False)

    def _validate_decision(self, decision: ApprovalDecision, *, approving: bool) -> None:
        state = self._state
        check_decision(
            decision,
            self._rollout,
            approved=state.approved,
            decided_by=state.progress.decided_by,
            approving=approving,
        )

    # ---- progress ----------------------------------------------------------------------------

    @workflow.query(name="progress")
    def progress(self) -> RolloutProgress:
        return self._state.progress

    def _notice(self, *, with_hosts: bool = False, **extra: object) -> RolloutNotice:
        hosts = self._state.hosts_by_cluster() if with_hosts else None
        return rollout_notice(self._rollout, self._state.progress.rollout_id, hosts, **extra)


def _busy(host: HostTarget) -> HostPatchResult:
    return HostPatchResult(
        hostname=host.name,
        ok=False,
        step=names.STEP_PRECONDITIONS,
        failure_reason=(
            f"host {host.name} is already being patched by another rollout (workflow "
            f"{host_workflow_id(host.name)} is running); this rollout did not touch it"
        ),
        in_maintenance=None,
    )
