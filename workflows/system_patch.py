"""SystemPatchWorkflow: resolve the clusters, get approval, check Vault, then per cluster the pilot
hosts first and the rest in a sliding window (or in the batches `waves` lists), then a summary.

`run` reads like the spec (docs/architecture.md, "One rollout"). Each host is patched by its own
HostPatchWorkflow (`workflows.host_patch`); the bookkeeping is `workflows.state.RolloutState`; the
pure rules (pilots, batches, error budget) are in `workflows.planning`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    from workflows import names
    from workflows.approval import ApprovalRules
    from workflows.controls import RolloutAborted
    from workflows.decisions import DecisionUpdates
    from workflows.dry_run import inspect_hosts
    from workflows.gating import GateStopped, RolloutGates
    from workflows.host_notices import HostNotices
    from workflows.models import (
        HOST_WORKFLOW_NAME,
        WORKFLOW_NAME,
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
    )
    from workflows.notices import (
        failure_details,
        listing,
        plan_host_notices,
        rollout_notice,
        send_notice,
        stop_reason,
    )
    from workflows.planning import once_per_machine, stages
    from workflows.policies import (
        HOST_WORKFLOW_PREFIX,
        INVENTORY_LOOKUP,
        TRANSIENT_RETRY,
        failure_reason,
        host_workflow_id,
    )
    from workflows.state import RolloutState
    from workflows.vault_token import check_vault, revoke_rollout_token
    from workflows.windows import describe


# Since engine v7 (issue 16) each run asks once which host notices a channel sends
# (workflows/notices.plan_host_notices). A marker per rollout run, not per host.
HOST_NOTICES_CHANGE = "host-notices-asked"
# Events a host in flight may still add to the run after we stop starting hosts (its child's
# start and end, workflow tasks, a failure alert), so the run ends inside its budget.
EVENTS_PER_HOST_IN_FLIGHT = 10


class RolloutStopped(Exception):
    """Raised inside the workflow to end the rollout early with a reason."""


class HistoryFull(Exception):
    """Raised when this run's history is near its budget: the rollout continues as new."""


@workflow.defn(name=WORKFLOW_NAME)
class SystemPatchWorkflow(DecisionUpdates, RolloutGates):
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
        carried = rollout.continued
        self._vault_accessor = carried.vault_token_accessor if carried else None
        self._vault_used = carried is not None or rollout.dry_run
        self._rules: ApprovalRules | None = None
        self._digest: str | None = None
        self._host_notices = HostNotices()  # every host notice, as before the question

    # ---- the rollout, as the spec tells it -----------------------------------------------------

    @workflow.run
    async def run(self, rollout: RolloutInput) -> RolloutSummary:
        ending = True
        try:
            return await self._run(rollout)
        except workflow.ContinueAsNewError:
            ending = False  # the next run goes on with the same Vault token
            raise
        finally:
            if ending and self._vault_used:
                # Also after a cancel: the cancellation was delivered, this activity still runs.
                await revoke_rollout_token(
                    self._job.rollout_id, rollout.vault_address, self._vault_accessor
                )

    async def _run(self, rollout: RolloutInput) -> RolloutSummary:
        progress = self._state.progress
        try:
            if rollout.continued is None:
                await self._resolve_clusters()
                await self._apply_policy(await self._resolve_rules())
                if rollout.dry_run:
                    # A dry run changes nothing, so it needs no approval.
                    await inspect_hosts(self._state, self._job, rollout.max_concurrency)
                    return await self._finish()
                if not await self._obtain_approval():
                    return await self._finish()
                await self._vault_preflight()
            else:
                await self._apply_policy(
                    await self._resolve_rules() or await self._recheck_carried()
                )
            # Every host step verifies these again, with the worker's own policy and inventory.
            self._job = self._job.model_copy(
                update={"approvals": self._state.approvals, "grants": self._state.grants}
            )
            if workflow.patched(HOST_NOTICES_CHANGE):  # histories from before: every notice
                self._host_notices = await plan_host_notices(self._job, rollout.target_clusters[0])
            progress.phase = Phase.PATCHING
            for cluster in progress.clusters:
                await self._patch_cluster(cluster.name)
            progress.phase = Phase.SUCCEEDED
            progress.message = self._state.success_message(rollout.max_failures)
        except HistoryFull:
            workflow.logger.info(
                "history at %s events: continuing as new (run %s)",
                workflow.info().get_current_history_length(),
                self._state.runs + 1,
            )
            carry = self._state.carry(workflow.now()).model_copy(
                update={"vault_token_accessor": self._vault_accessor}
            )
            workflow.continue_as_new(rollout.model_copy(update={"continued": carry}))
        except (RolloutStopped, GateStopped) as stopped:
            progress.phase = Phase.FAILED
            progress.message = str(stopped)
        except RolloutAborted as aborted:
            progress.phase = Phase.CANCELLED
            progress.message = str(aborted)
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
        machines: dict[tuple[str, int], str] = {}  # (address, port) -> the name that patches it
        for cluster_name in rollout.target_clusters:
            try:
                resolved = await workflow.execute_activity(
                    names.GET_CLUSTER_HOSTS,
                    ClusterHostsRequest(
                        target_cluster=cluster_name, host_pattern=rollout.host_pattern
                    ),
                    result_type=ClusterHosts,
                    start_to_close_timeout=INVENTORY_LOOKUP,
                    retry_policy=TRANSIENT_RETRY,
                )
            except ActivityError as error:
                raise RolloutStopped(
                    f"cannot resolve cluster {cluster_name}: {failure_reason(error)}"
                ) from error
            hosts, notes = once_per_machine(resolved.hosts, machines)
            if hosts and rollout.pilot_host_count >= len(hosts):
                notes.append(
                    f"pilot count {rollout.pilot_host_count} covers all {len(hosts)} "
                    "hosts: the whole cluster is pilot"
                )
            windows = rollout.maintenance_windows or resolved.windows
            self._state.add_cluster(cluster_name, hosts, windows, "; ".join(notes) or None)
            self._settle_gates(cluster_name, resolved.gates)

    async def _apply_policy(self, refusal: str | None) -> None:
        if refusal is not None:
            self._state.skip_pending()
            raise RolloutStopped(f"refused by the approval policy: {refusal}; nothing was touched")

    async def _obtain_approval(self) -> bool:
        rollout, state = self._rollout, self._state
        if await self._standing_approval():
            return True
        state.progress.phase = Phase.AWAITING_APPROVAL
        notes = {c.name: c.note for c in state.progress.clusters if c.note}
        await send_notice(
            names.SEND_APPROVAL_REQUEST, self._notice(with_hosts=True, cluster_notes=notes)
        )
        try:
            await workflow.wait_condition(
                lambda: state.approved is not None or self.aborted_by is not None,
                timeout=rollout.approval_timeout,
            )
        except TimeoutError:
            state.approved = False
            state.progress.phase = Phase.APPROVAL_TIMED_OUT
            state.progress.message = (
                f"no approver decided within {rollout.approval_timeout}; nothing was touched"
            )
            state.skip_pending()
            return False
        self.raise_if_aborted()
        if not state.approved:
            state.progress.phase = Phase.REJECTED
            state.progress.message = f"rejected by {state.progress.decided_by}; nothing was touched"
            state.skip_pending()
            return False
        return True

    async def _vault_preflight(self) -> None:
        self._state.progress.phase = Phase.PREFLIGHT
        self._vault_used = True  # from here on the rollout may hold a child token to revoke
        try:
            self._vault_accessor = await check_vault(self._rollout, self._state.first_host())
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
        for number, stage in enumerate(plan):
            pending = state.pending(stage.hosts)
            if not pending:
                continue  # every host of this stage finished in an earlier run
            await self._gate_before(cluster, first=number == 0)
            await self._await_window(cluster)
            wave = f"{cluster}: {stage.label}: {listing(pending, len(stage.hosts))}"
            await send_notice(
                names.SEND_WAVE_NOTIFICATION, self._notice(cluster=cluster, wave=wave)
            )
            await self._roll(cluster, pending, stage.limit, pilot=stage.pilot)
            await self._gate(cluster, plan, number)  # soak, alerts, queries (workflows/gating.py)

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
                if not self._state.pending([queue[0]]):
                    queue.popleft()  # skipped (the `skip` update) while it waited its turn
                    continue
                status = self._state.window_status(cluster, workflow.now(), rollout.window_cutoff)
                if status is not None and not status.open:
                    if in_flight:
                        break  # let the hosts in flight finish, then wait for the window
                    await self._await_window(cluster)
                self._launch(queue.popleft())
                in_flight += 1
            if in_flight == 0:
                if queue and self.held():
                    await self.hold()
                    continue
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
        self.raise_if_aborted()
        if self._stop_reason is not None:
            self._state.skip_pending()
            raise RolloutStopped(self._stop_reason)
        if queue:
            raise HistoryFull()

    def _may_start(self, in_flight: int) -> bool:
        if self._cancel_requested or self._stop_reason is not None or self._ending_or_paused():
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
                HostPatchInput(
                    job=self._job,
                    host=host,
                    first_looks=True,
                    notices=self._host_notices,
                    local_preconditions=host.commands.knows_own_flag(),
                ),
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
        with contextlib.suppress(asyncio.CancelledError):  # the rollout has ended as it says
            await send_notice(
                names.SEND_ROLLOUT_SUMMARY, self._notice(with_hosts=True, summary=summary)
            )
        return summary

    # ---- progress ----------------------------------------------------------------------------

    @workflow.query(name="progress")
    def progress(self) -> RolloutProgress:
        return self._state.progress

    def _notice(self, *, with_hosts: bool = False, **extra: object) -> RolloutNotice:
        hosts = self._state.hosts_by_cluster() if with_hosts else None
        digest = self._state.progress.digest  # what the approvals sign (None: no policy)
        return rollout_notice(
            self._rollout, self._state.progress.rollout_id, hosts, digest=digest, **extra
        )


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
