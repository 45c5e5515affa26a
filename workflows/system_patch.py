"""SystemPatchWorkflow: approval, Vault preflight, then per cluster pilots first, then waves.

Reads like the spec (DESIGN.md "The rollout"); the per-host steps live in HostPatchWorkflow and the
pure rules (pilots, waves, error budget) in `workflows.planning`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ChildWorkflowHandle

with workflow.unsafe.imports_passed_through():
    from workflows import names
    from workflows.host_patch import (
        TRANSIENT_RETRY,
        VAULT_RETRY,
        failure_reason,
        host_workflow_id,
        send_notice,
    )
    from workflows.models import (
        HOST_WORKFLOW_NAME,
        WORKFLOW_NAME,
        ApprovalDecision,
        ClusterHosts,
        ClusterHostsRequest,
        ClusterProgress,
        HostInspection,
        HostPatchInput,
        HostPatchResult,
        HostProgress,
        HostState,
        HostStepInput,
        HostStepReport,
        HostTarget,
        MaintenanceWindow,
        Phase,
        RolloutCarry,
        RolloutInput,
        RolloutNotice,
        RolloutProgress,
        RolloutSummary,
        VaultPreflightInput,
        pack_targets,
        unpack_targets,
    )
    from workflows.planning import batches, plan_cluster, resolve_amount, should_stop, waves
    from workflows.windows import WindowStatus, describe, window_status


# Set by the server on every run a Temporal Schedule starts.
SCHEDULED_BY = SearchAttributeKey.for_keyword("TemporalScheduledById")


class RolloutStopped(Exception):
    """Raised inside the workflow to end the rollout early with a reason."""


class HistoryFull(Exception):
    """Raised when this run's history is near its budget: the rollout continues as new."""


# Events a host in flight may still add to the run after we stop starting hosts (its child's
# start and end, workflow tasks, a failure alert), so the run ends inside its budget.
EVENTS_PER_HOST_IN_FLIGHT = 10


@workflow.defn(name=WORKFLOW_NAME)
class SystemPatchWorkflow:
    @workflow.init
    def __init__(self, rollout: RolloutInput) -> None:
        carry = rollout.continued
        # State exists before the first update or query arrives, even in the first workflow task.
        self._rollout = rollout
        self._progress = RolloutProgress(
            rollout_id=workflow.info().workflow_id,
            phase=Phase.RESOLVING,
            requester_email=rollout.requester_email,
            approver_emails=rollout.approver_emails,
            started_at=carry.started_at if carry else workflow.now(),
        )
        self._approved: bool | None = None
        self._targets: dict[str, list[HostTarget]] = {}
        self._entries: dict[str, HostProgress] = {}
        self._failures = 0
        self._runs = 1
        self._cancel_requested = False
        self._stop_reason: str | None = None
        self._finished_hosts: list[HostPatchResult] = []  # results the rollout loop has not read
        self._host_tasks: set[asyncio.Task[None]] = set()
        self._inspections: list[HostInspection] = []
        self._windows: dict[str, list[MaintenanceWindow]] = {}
        if carry is not None:
            self._restore(carry)

    # ---- the rollout, as the spec tells it -----------------------------------------------------

    @workflow.run
    async def run(self, rollout: RolloutInput) -> RolloutSummary:
        rollout, progress = self._require()
        try:
            if rollout.continued is None:
                await self._resolve_clusters()
                if rollout.dry_run:
                    # A dry run changes nothing, so it needs no approval.
                    await self._dry_run()
                    return await self._finish()
                if not await self._obtain_approval():
                    return await self._finish()
                await self._vault_preflight()
            progress.phase = Phase.PATCHING
            # Rollouts started before the sliding window replay with waves.
            sliding = workflow.patched("sliding-window")
            for cluster in progress.clusters:
                if sliding:
                    await self._patch_cluster(cluster)
                else:
                    await self._patch_cluster_in_waves(cluster)
            progress.phase = Phase.SUCCEEDED
            progress.message = "every host was patched"
            if self._failures:
                progress.message = (
                    f"{self._failures} host(s) failed, within the error budget (maxFailures "
                    f"{rollout.max_failures}); every other host was patched"
                )
        except HistoryFull:
            workflow.logger.info(
                "history at %s events: continuing as new (run %s)",
                workflow.info().get_current_history_length(),
                self._runs + 1,
            )
            workflow.continue_as_new(rollout.model_copy(update={"continued": self._carry()}))
        except RolloutStopped as stopped:
            progress.phase = Phase.FAILED
            progress.message = str(stopped)
        except asyncio.CancelledError:
            progress.phase = Phase.CANCELLED
            progress.message = "the rollout was cancelled; no further host was started"
            self._skip_pending()
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
        rollout, _ = self._require()
        for cluster_name in rollout.target_clusters:
            try:
                resolved = await workflow.execute_activity(
                    names.GET_CLUSTER_HOSTS,
                    ClusterHostsRequest(target_cluster=cluster_name),
                    result_type=ClusterHosts,
                    start_to_close_timeout=timedelta(seconds=60),
                    retry_policy=TRANSIENT_RETRY,
                )
            except ActivityError as error:
                raise RolloutStopped(
                    f"cannot resolve cluster {cluster_name}: {failure_reason(error)}"
                ) from error
            self._targets[cluster_name] = resolved.hosts
            self._windows[cluster_name] = rollout.maintenance_windows or resolved.windows
            note = None
            if resolved.hosts and rollout.pilot_host_count >= len(resolved.hosts):
                note = (
                    f"pilot count {rollout.pilot_host_count} covers all {len(resolved.hosts)} "
                    "hosts: the whole cluster is pilot"
                )
            self._add_cluster(cluster_name, note)

    def _add_cluster(
        self, cluster_name: str, note: str | None, finished: dict[str, HostProgress] | None = None
    ) -> None:
        rollout, progress = self._require()
        hosts = self._targets[cluster_name]
        pilots = set(plan_cluster([host.name for host in hosts], rollout.pilot_host_count).pilots)
        entries = []
        for host in hosts:
            entry = (finished or {}).get(host.name) or HostProgress(
                name=host.name, cluster=cluster_name
            )
            entry.pilot = host.name in pilots
            self._entries[host.name] = entry
            entries.append(entry)
        progress.clusters.append(ClusterProgress(name=cluster_name, note=note, hosts=entries))

    def _restore(self, carry: RolloutCarry) -> None:
        """Pick the rollout up where the previous run left it: approved, the same hosts, and
        every host it finished kept finished (never started again)."""
        _, progress = self._require()
        self._approved = True
        progress.decided_by = carry.decided_by
        progress.decision_comment = carry.decision_comment
        self._failures = carry.failures
        self._runs = carry.runs
        self._targets = unpack_targets(carry)
        self._windows = carry.windows
        finished = {entry.name: entry for entry in carry.finished}
        for cluster_name, names_done in carry.patched.items():
            rebooted = set(carry.rebooted.get(cluster_name, []))
            for name in names_done:
                finished[name] = HostProgress(
                    name=name,
                    cluster=cluster_name,
                    state=HostState.DONE,
                    step=names.STEP_DONE,
                    rebooted=name in rebooted,
                )
        for cluster_name in carry.targets:
            self._add_cluster(cluster_name, carry.notes.get(cluster_name), finished)

    def _carry(self) -> RolloutCarry:
        _, progress = self._require()
        patched: dict[str, list[str]] = {}
        rebooted: dict[str, list[str]] = {}
        finished: list[HostProgress] = []
        for cluster in progress.clusters:
            for host in cluster.hosts:
                if host.state == HostState.DONE and host.in_maintenance is False:
                    patched.setdefault(cluster.name, []).append(host.name)
                    if host.rebooted:
                        rebooted.setdefault(cluster.name, []).append(host.name)
                elif host.state != HostState.PENDING:
                    finished.append(host)
        targets, command_sets, command_of = pack_targets(self._targets)
        return RolloutCarry(
            started_at=progress.started_at or workflow.now(),
            decided_by=progress.decided_by,
            decision_comment=progress.decision_comment,
            runs=self._runs + 1,
            failures=self._failures,
            targets=targets,
            command_sets=command_sets,
            command_of=command_of,
            windows=self._windows,
            notes={c.name: c.note for c in progress.clusters if c.note},
            patched=patched,
            rebooted=rebooted,
            finished=finished,
        )

    def _standing_approval(self) -> bool:
        """A schedule's pre-approval counts only for runs that schedule started."""
        rollout, progress = self._require()
        decision = rollout.pre_approved_by
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
        self._decide(decision, approved=True)
        progress.decision_comment = f"standing pre-approval in schedule {schedule}" + (
            f": {decision.comment}" if decision.comment else ""
        )
        return True

    async def _obtain_approval(self) -> bool:
        rollout, progress = self._require()
        if self._standing_approval():
            return True
        progress.phase = Phase.AWAITING_APPROVAL
        await self._notify(names.SEND_APPROVAL_REQUEST, self._notice(with_hosts=True))
        try:
            await workflow.wait_condition(
                lambda: self._approved is not None, timeout=rollout.approval_timeout
            )
        except TimeoutError:
            self._approved = False
            progress.phase = Phase.APPROVAL_TIMED_OUT
            progress.message = (
                f"no approver decided within {rollout.approval_timeout}; nothing was touched"
            )
            self._skip_pending()
            return False
        if not self._approved:
            progress.phase = Phase.REJECTED
            progress.message = f"rejected by {progress.decided_by}; nothing was touched"
            self._skip_pending()
            return False
        return True

    async def _dry_run(self) -> None:
        """Every host: preconditions, pending updates, reboot need. Read-only commands only."""
        rollout, progress = self._require()
        progress.phase = Phase.DRY_RUN
        for cluster in progress.clusters:
            targets = self._targets[cluster.name]
            size = resolve_amount(rollout.max_concurrency, len(targets), at_least=1)
            for wave in waves(targets, size):
                for host in wave:
                    entry = self._host(host.name)
                    entry.state, entry.step, entry.started_at = (
                        HostState.RUNNING,
                        "inspect",
                        workflow.now(),
                    )
                found = await asyncio.gather(*(self._inspect(host) for host in wave))
                for inspection in found:
                    entry = self._host(inspection.hostname)
                    entry.state = (
                        HostState.DONE if inspection.preconditions_ok else HostState.FAILED
                    )
                    entry.failure_reason = inspection.reason or None
                    entry.finished_at = workflow.now()
                    self._inspections.append(inspection)
        refused = sum(1 for i in self._inspections if not i.preconditions_ok)
        reboots = sum(1 for i in self._inspections if i.reboot_required)
        updates = sum(len(i.pending_updates) for i in self._inspections)
        progress.phase = Phase.DRY_RUN_DONE
        progress.message = (
            f"dry run: {len(self._inspections)} hosts inspected, {updates} pending updates, "
            f"{reboots} would need a reboot, {refused} would be refused by preconditions; "
            "nothing was changed"
        )

    async def _inspect(self, host: HostTarget) -> HostInspection:
        rollout, progress = self._require()
        try:
            return await workflow.execute_activity(
                names.INSPECT_HOST,
                HostStepInput(
                    rollout_id=progress.rollout_id,
                    host=host,
                    vault_address=rollout.vault_address,
                    vault_token=rollout.vault_token,
                    secret_path_prefix=rollout.secret_path_prefix,
                    service_list=rollout.service_list,
                    timeout_seconds=120,
                ),
                result_type=HostInspection,
                start_to_close_timeout=timedelta(minutes=3),
                retry_policy=TRANSIENT_RETRY,
            )
        except ActivityError as error:
            return HostInspection(
                hostname=host.name,
                cluster=host.cluster,
                preconditions_ok=False,
                reason=failure_reason(error),
            )

    async def _vault_preflight(self) -> None:
        rollout, progress = self._require()
        progress.phase = Phase.PREFLIGHT
        first_host = next((hosts[0].name for hosts in self._targets.values() if hosts), None)
        try:
            await workflow.execute_activity(
                names.VAULT_CLIENT,
                VaultPreflightInput(
                    vault_address=rollout.vault_address,
                    vault_token=rollout.vault_token,
                    secret_path_prefix=rollout.secret_path_prefix,
                    probe_host=first_host,
                ),
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=VAULT_RETRY,
            )
        except ActivityError as error:
            reason = f"Vault preflight failed: {failure_reason(error)}"
            await self._notify(names.SEND_FAILURE_ALERT, self._notice(failure_details=reason))
            self._skip_pending()
            raise RolloutStopped(f"{reason}; no host was touched") from error

    async def _patch_cluster(self, cluster: ClusterProgress) -> None:
        """Pilots first (all of them finish before anything else starts), then the rest: in a
        sliding window of `maxConcurrency` hosts, or in the batches `waves` lists."""
        rollout, _ = self._require()
        targets = self._targets[cluster.name]
        size = len(targets)
        plan = plan_cluster(targets, rollout.pilot_host_count)
        window = resolve_amount(rollout.max_concurrency, size, at_least=1)
        stages: list[tuple[str, list[HostTarget], int, bool]] = []
        if plan.pilots:
            stages.append(("pilot hosts", plan.pilots, window, True))
        if rollout.waves:
            cut = batches(plan.rest, rollout.waves, size)
            offset = 1 if plan.pilots else 0
            for number, batch in enumerate(cut, start=1 + offset):
                stages.append((f"wave {number}/{len(cut) + offset}", batch, len(batch), False))
        elif plan.rest:
            rest = "the rest" if plan.pilots else "all hosts"
            stages.append((f"{rest}, {window} at a time", plan.rest, window, False))
        for label, hosts, limit, is_pilot in stages:
            pending = [
                host for host in hosts if self._entries[host.name].state == HostState.PENDING
            ]
            if not pending:
                continue
            await self._await_window(cluster.name)
            await self._notify(
                names.SEND_WAVE_NOTIFICATION,
                self._notice(
                    cluster=cluster.name,
                    wave=f"{cluster.name}: {label}: {_listing(pending, len(hosts))}",
                ),
            )
            await self._roll(cluster.name, pending, limit, pilot=is_pilot)

    async def _roll(
        self, cluster: str, hosts: list[HostTarget], limit: int, *, pilot: bool
    ) -> None:
        """Keep up to `limit` hosts in flight until every host of `hosts` has run, or a stop.

        A stop (error budget, cancel, a full history) only stops new hosts from starting: the
        hosts in flight always finish every step rather than being abandoned half-patched.
        """
        rollout, _ = self._require()
        queue = deque(hosts)
        in_flight = 0
        while True:
            while queue and in_flight < limit and self._may_start(in_flight):
                if not self._window_open(cluster):
                    if in_flight:
                        break  # let the hosts in flight finish, then wait for the window
                    await self._await_window(cluster)
                host = queue.popleft()
                self._mark_started(host)
                in_flight += 1
                task = asyncio.create_task(self._patch_host(host))
                self._host_tasks.add(task)
                task.add_done_callback(self._host_tasks.discard)
            if in_flight == 0:
                break
            try:
                await workflow.wait_condition(lambda: bool(self._finished_hosts))
            except asyncio.CancelledError:
                workflow.logger.info("rollout cancelled; waiting for hosts in progress")
                self._cancel_requested = True
                continue
            while self._finished_hosts:
                result = self._finished_hosts.pop(0)
                in_flight -= 1
                self._record_result(result)
                if result.ok:
                    continue
                self._failures += 1
                try:
                    await self._alert(cluster, result)
                except asyncio.CancelledError:
                    self._cancel_requested = True
                tolerated = resolve_amount(rollout.max_failures, len(self._targets[cluster]))
                if self._stop_reason is None and should_stop(
                    self._failures, tolerated, pilot_failed=pilot
                ):
                    self._stop_reason = _stop_reason(result, pilot=pilot)
        if self._cancel_requested:
            self._skip_pending()
            raise asyncio.CancelledError()
        if self._stop_reason is not None:
            self._skip_pending()
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

    def _mark_started(self, host: HostTarget) -> None:
        entry = self._host(host.name)
        entry.state = HostState.RUNNING
        entry.started_at = workflow.now()
        entry.step = None  # the host workflow's `host_progress` query knows the step

    async def _patch_host(self, host: HostTarget) -> None:
        started = await self._start_host(host)
        self._finished_hosts.append(await self._host_result(started))

    async def _patch_cluster_in_waves(self, cluster: ClusterProgress) -> None:
        """The engine before the sliding window, kept so that its histories still replay."""
        rollout, _ = self._require()
        plan = plan_cluster(self._targets[cluster.name], rollout.pilot_host_count)
        planned = plan.waves(resolve_amount(rollout.max_concurrency, 0, at_least=1))
        for number, (is_pilot, wave) in enumerate(planned, start=1):
            await self._await_window(cluster.name)
            # Rollouts started before wave notices existed replay without them.
            if workflow.patched("wave-notices"):
                kind = "pilot wave" if is_pilot else "wave"
                hosts = ", ".join(host.name for host in wave)
                await self._notify(
                    names.SEND_WAVE_NOTIFICATION,
                    self._notice(
                        cluster=cluster.name,
                        wave=f"{cluster.name}: {kind} {number}/{len(planned)}: {hosts}",
                    ),
                )
            results = await self._run_wave(wave)
            pilot_failed = False
            for result in results:
                if not result.ok:
                    self._failures += 1
                    pilot_failed = pilot_failed or is_pilot
                    await self._alert(cluster.name, result)
            tolerated = resolve_amount(rollout.max_failures, len(self._targets[cluster.name]))
            if should_stop(self._failures, tolerated, pilot_failed=pilot_failed):
                self._skip_pending()
                first = next(r for r in results if not r.ok)
                raise RolloutStopped(_stop_reason(first, pilot=pilot_failed))

    def _window_status(self, cluster: str) -> WindowStatus | None:
        """Where `cluster`'s maintenance windows stand now; None when it has none (always open)."""
        windows = self._windows.get(cluster) or []
        if not windows:
            return None
        specs = [(window.cron, window.timezone, window.duration) for window in windows]
        return window_status(specs, workflow.now(), self._rollout.window_cutoff)

    def _window_open(self, cluster: str) -> bool:
        status = self._window_status(cluster)
        return status is None or status.open

    async def _await_window(self, cluster: str) -> None:
        """Start hosts only inside a maintenance window with `windowCutoff` to spare."""
        _, progress = self._require()
        while True:
            status = self._window_status(cluster)
            if status is None:
                return
            if status.open:
                progress.waiting_for_window = None
                return
            if status.next_opening is None:
                raise RolloutStopped(f"no maintenance window of {cluster} opens again")
            opening = describe(status.next_opening, self._windows[cluster][0].timezone)
            progress.waiting_for_window = f"{cluster}: waiting for window {opening}"
            workflow.logger.info(progress.waiting_for_window)
            if workflow.patched("window-wait-notices"):
                # Chat shows the wait (thread line, and the card reads `waitingForWindow`).
                await self._notify(
                    names.SEND_WAVE_NOTIFICATION,
                    self._notice(cluster=cluster, waiting=progress.waiting_for_window),
                )
            await workflow.sleep(status.next_opening - workflow.now())

    async def _run_wave(self, wave: list[HostTarget]) -> list[HostPatchResult]:
        started: list[ChildWorkflowHandle[object, HostPatchResult] | HostPatchResult] = []
        for host in wave:
            self._mark_started(host)
            self._host(host.name).step = names.STEP_PRECONDITIONS
            started.append(await self._start_host(host))
        waiting = asyncio.gather(*(self._host_result(item) for item in started))
        while True:
            try:
                # Shielded: a cancelled rollout lets the hosts in flight finish rather than
                # abandoning them half-patched; it only stops new hosts from starting.
                results = await asyncio.shield(waiting)
                break
            except asyncio.CancelledError:
                workflow.logger.info("rollout cancelled; waiting for hosts in progress")
                self._cancel_requested = True
        for result in results:
            self._record_result(result)
        if self._cancel_requested:
            self._skip_pending()
            raise asyncio.CancelledError()
        return results

    async def _start_host(
        self, host: HostTarget
    ) -> ChildWorkflowHandle[object, HostPatchResult] | HostPatchResult:
        rollout, _ = self._require()
        try:
            return await workflow.start_child_workflow(
                HOST_WORKFLOW_NAME,
                HostPatchInput(
                    rollout_id=workflow.info().workflow_id,
                    parent_workflow_id=workflow.info().workflow_id,
                    host=host,
                    requester_email=rollout.requester_email,
                    approver_emails=rollout.approver_emails,
                    vault_address=rollout.vault_address,
                    vault_token=rollout.vault_token,
                    secret_path_prefix=rollout.secret_path_prefix,
                    update_command=rollout.update_command,
                    service_list=rollout.service_list,
                    pre_downtime_scripts=rollout.pre_downtime_scripts,
                    pre_update_scripts=rollout.pre_update_scripts,
                    post_update_scripts=rollout.post_update_scripts,
                    drain_timeout_seconds=rollout.drain_timeout.total_seconds(),
                    health_timeout_seconds=rollout.health_timeout.total_seconds(),
                    update_timeout_seconds=rollout.update_timeout.total_seconds(),
                    script_timeout_seconds=rollout.script_timeout.total_seconds(),
                    slack_channel=rollout.slack_channel,
                    slack_thread_ts=rollout.slack_thread_ts,
                    reboot_policy=rollout.reboot_policy,
                    reboot_timeout_seconds=rollout.reboot_timeout.total_seconds(),
                ),
                id=host_workflow_id(host.name),
                result_type=HostPatchResult,
            )
        except WorkflowAlreadyStartedError:
            return self._busy(host)

    def _busy(self, host: HostTarget) -> HostPatchResult:
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

    @staticmethod
    async def _host_result(
        item: ChildWorkflowHandle[object, HostPatchResult] | HostPatchResult,
    ) -> HostPatchResult:
        if isinstance(item, HostPatchResult):
            return item
        try:
            return await item
        except ChildWorkflowError as error:
            return HostPatchResult(
                hostname=item.id.removeprefix("patch-host-"),
                ok=False,
                step=None,
                failure_reason=f"host workflow ended abnormally: {failure_reason(error)}",
                in_maintenance=None,
            )

    def _record_result(self, result: HostPatchResult) -> None:
        entry = self._host(result.hostname)
        entry.state = HostState.DONE if result.ok else HostState.FAILED
        entry.step = result.step or entry.step
        entry.failure_reason = result.failure_reason
        entry.in_maintenance = result.in_maintenance
        entry.rebooted = result.rebooted
        entry.note = result.reboot_note or None
        entry.finished_at = result.finished_at or workflow.now()
        if result.started_at:
            entry.started_at = result.started_at

    async def _alert(self, cluster: str, result: HostPatchResult) -> None:
        maintenance = {True: "in maintenance", False: "not in maintenance", None: "unknown"}
        details = (
            f"host {result.hostname} (cluster {cluster}) failed at step {result.step}: "
            f"{result.failure_reason}. Maintenance mode: {maintenance[result.in_maintenance]}."
        )
        await self._notify(
            names.SEND_FAILURE_ALERT,
            self._notice(
                hostname=result.hostname,
                cluster=cluster,
                step=result.step,
                failure_details=details,
            ),
        )

    async def _finish(self) -> RolloutSummary:
        _, progress = self._require()
        progress.finished_at = workflow.now()
        hosts = progress.hosts()
        started = progress.started_at or progress.finished_at
        summary = RolloutSummary(
            rollout_id=progress.rollout_id,
            phase=progress.phase,
            patched=sum(1 for host in hosts if host.state == HostState.DONE),
            failed=sum(1 for host in hosts if host.state == HostState.FAILED),
            skipped=sum(1 for host in hosts if host.state == HostState.SKIPPED),
            duration_seconds=(progress.finished_at - started).total_seconds(),
            message=progress.message or progress.phase.value,
            hosts=hosts,
            dry_run=self._inspections if self._rollout.dry_run else None,
        )
        await self._notify(
            names.SEND_ROLLOUT_SUMMARY, self._notice(with_hosts=True, summary=summary)
        )
        return summary

    # ---- approval ----------------------------------------------------------------------------

    @workflow.update(name="approve")
    async def approve(self, decision: ApprovalDecision) -> str:
        self._decide(decision, approved=True)
        return f"approved by {decision.approver}"

    @approve.validator
    def _validate_approve(self, decision: ApprovalDecision) -> None:
        self._validate_decision(decision, approving=True)

    @workflow.update(name="reject")
    async def reject(self, decision: ApprovalDecision) -> str:
        self._decide(decision, approved=False)
        return f"rejected by {decision.approver}"

    @reject.validator
    def _validate_reject(self, decision: ApprovalDecision) -> None:
        self._validate_decision(decision, approving=False)

    def _validate_decision(self, decision: ApprovalDecision, *, approving: bool) -> None:
        rollout, progress = self._require()
        who = decision.approver.lower()
        if self._approved is not None:
            verdict = "approved" if self._approved else "rejected"
            by = f" by {progress.decided_by}" if progress.decided_by else ""
            raise ValueError(f"this rollout was already {verdict}{by}; the decision is final")
        if approving and who == rollout.requester_email:
            raise ValueError(
                f"{who} requested this rollout and cannot approve it; another approver must"
            )
        if who not in rollout.approver_emails:
            raise ValueError(
                f"{who} is not an approver of this rollout (approvers: "
                f"{', '.join(rollout.approver_emails)})"
            )

    def _decide(self, decision: ApprovalDecision, *, approved: bool) -> None:
        _, progress = self._require()
        self._approved = approved
        progress.decided_by = decision.approver.lower()
        progress.decision_comment = decision.comment or None

    # ---- progress ----------------------------------------------------------------------------

    @workflow.query(name="progress")
    def progress(self) -> RolloutProgress:
        _, progress = self._require()
        return progress

    @workflow.signal(name="host_step")
    def host_step(self, report: HostStepReport) -> None:
        entry = self._host(report.hostname)
        if entry.state == HostState.RUNNING:
            entry.step = report.step
            entry.in_maintenance = report.in_maintenance

    # ---- helpers -----------------------------------------------------------------------------

    def _require(self) -> tuple[RolloutInput, RolloutProgress]:
        return self._rollout, self._progress

    def _host(self, hostname: str) -> HostProgress:
        return self._entries[hostname]

    def _skip_pending(self) -> None:
        _, progress = self._require()
        for host in progress.hosts():
            if host.state == HostState.PENDING:
                host.state = HostState.SKIPPED

    def _notice(self, *, with_hosts: bool = False, **extra: object) -> RolloutNotice:
        rollout, progress = self._require()
        # Only the approval request and the summary list the hosts: 10,000 names in every
        # notice would be 100 kB of history each.
        hosts_by_cluster = (
            {name: [host.name for host in hosts] for name, hosts in self._targets.items()}
            if with_hosts
            else {}
        )
        return RolloutNotice.model_validate(
            {
                "rollout_id": progress.rollout_id,
                "requester_email": rollout.requester_email,
                "approver_emails": rollout.approver_emails,
                "target_clusters": rollout.target_clusters,
                "hosts_by_cluster": hosts_by_cluster,
                "pilot_host_count": rollout.pilot_host_count,
                "update_command": rollout.update_command,
                "service_list": rollout.service_list,
                "slack_channel": rollout.slack_channel,
                "slack_thread_ts": rollout.slack_thread_ts,
                **extra,
            }
        )

    async def _notify(self, activity_name: str, notice: RolloutNotice) -> None:
        await send_notice(activity_name, notice)


def _stop_reason(result: HostPatchResult, *, pilot: bool) -> str:
    return (
        f"{'pilot ' if pilot else ''}host {result.hostname} failed at step {result.step}: "
        f"{result.failure_reason}; the rollout stopped and no further host was touched"
    )


def _listing(hosts: list[HostTarget], total: int) -> str:
    shown = ", ".join(host.name for host in hosts[:20])
    more = f" … and {len(hosts) - 20} more" if len(hosts) > 20 else ""
    left = f" ({len(hosts)} of {total} left)" if len(hosts) < total else ""
    return f"{shown}{more}{left}"
