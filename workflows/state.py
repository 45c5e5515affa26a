"""The rollout's bookkeeping as a plain object: every host's entry, which hosts started and how they
ended, how many failed, and what one run hands to the next when it continues as new.

Nothing here calls Temporal (the workflow passes `workflow.now()` in), so these rules are tested on
their own in tests/unit/test_state.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from workflows import names
from workflows.models import (
    ClusterProgress,
    GateSettings,
    HostInspection,
    HostPatchResult,
    HostProgress,
    HostState,
    HostTarget,
    MaintenanceWindow,
    Phase,
    RolloutCarry,
    RolloutInput,
    RolloutProgress,
    RolloutSummary,
    pack_targets,
    unpack_targets,
)
from workflows.planning import plan_cluster, resolve_amount, should_stop
from workflows.proof import ApprovalDecision, StandingGrant
from workflows.windows import WindowStatus, window_status


class RolloutState:
    """What one rollout knows about its hosts. `progress` is the `progress` query's answer; the
    host entries in it are the same objects as `host(name)` returns."""

    def __init__(self, rollout: RolloutInput, rollout_id: str, now: datetime) -> None:
        carry = rollout.continued
        self.progress = RolloutProgress(
            rollout_id=rollout_id,
            phase=Phase.RESOLVING,
            dry_run=rollout.dry_run,
            requester_email=rollout.requester_email,
            approver_emails=rollout.approver_emails,
            started_at=carry.started_at if carry else now,
        )
        self.targets: dict[str, list[HostTarget]] = {}
        self.windows: dict[str, list[MaintenanceWindow]] = {}
        # Each cluster's health gates, the rollout's fields over its group vars (gating.py).
        self.gate_settings: dict[str, GateSettings] = {}
        self.approved: bool | None = None
        # The signed approvals and standing grants so far (handed to every host step).
        self.approvals: list[ApprovalDecision] = []
        self.grants: list[StandingGrant] = []
        self.failures = 0
        self.runs = 1
        self.inspections: list[HostInspection] = []
        self._pilot_host_count = rollout.pilot_host_count
        self._entries: dict[str, HostProgress] = {}
        if carry is not None:
            self._restore(carry)

    # ---- hosts -------------------------------------------------------------------------------

    def add_cluster(
        self,
        name: str,
        hosts: list[HostTarget],
        windows: list[MaintenanceWindow],
        note: str | None = None,
        finished: dict[str, HostProgress] | None = None,
    ) -> None:
        """A cluster's hosts, pending unless `finished` holds their entry from an earlier run."""
        self.targets[name] = hosts
        self.windows[name] = windows
        pilots = set(plan_cluster([host.name for host in hosts], self._pilot_host_count).pilots)
        entries = []
        for host in hosts:
            entry = (finished or {}).get(host.name) or HostProgress(name=host.name, cluster=name)
            entry.pilot = host.name in pilots
            self._entries[host.name] = entry
            entries.append(entry)
        self.progress.clusters.append(ClusterProgress(name=name, note=note, hosts=entries))

    def host(self, name: str) -> HostProgress:
        return self._entries[name]

    def pending(self, hosts: list[HostTarget]) -> list[HostTarget]:
        """Those of `hosts` not started yet, in this run or an earlier one."""
        return [host for host in hosts if self._entries[host.name].state == HostState.PENDING]

    def hosts_by_cluster(self) -> dict[str, list[str]]:
        return {name: [host.name for host in hosts] for name, hosts in self.targets.items()}

    def first_host(self) -> str | None:
        return next((hosts[0].name for hosts in self.targets.values() if hosts), None)

    def window_status(self, cluster: str, now: datetime, cutoff: timedelta) -> WindowStatus | None:
        """Where `cluster`'s maintenance windows stand at `now`; None when it has none (always
        open)."""
        windows = self.windows.get(cluster) or []
        if not windows:
            return None
        specs = [(window.cron, window.timezone, window.duration) for window in windows]
        return window_status(specs, now, cutoff)

    def mark_started(self, name: str, now: datetime, step: str | None = None) -> None:
        # A running host's step comes from its own workflow's `host_progress` query.
        entry = self._entries[name]
        entry.state = HostState.RUNNING
        entry.started_at = now
        entry.step = step

    def record_result(self, result: HostPatchResult, now: datetime) -> None:
        """A host workflow's outcome; a failure counts against the error budget."""
        entry = self._entries[result.hostname]
        entry.state = HostState.DONE if result.ok else HostState.FAILED
        entry.step = result.step or entry.step
        entry.failure_reason = result.failure_reason
        entry.in_maintenance = result.in_maintenance
        entry.rebooted = result.rebooted
        entry.note = result.reboot_note or None
        entry.packages = result.packages.summary_line() if result.packages else None
        entry.notes = list(result.notes)
        entry.finished_at = result.finished_at or now
        if result.started_at:
            entry.started_at = result.started_at
        if not result.ok:
            self.failures += 1

    def record_inspection(self, inspection: HostInspection, now: datetime) -> None:
        """A dry run's finding: done when the preconditions hold, failed when they do not."""
        entry = self._entries[inspection.hostname]
        entry.state = HostState.DONE if inspection.preconditions_ok else HostState.FAILED
        entry.failure_reason = inspection.reason or None
        entry.finished_at = now
        self.inspections.append(inspection)

    def over_budget(self, cluster: str, max_failures: int | str, *, pilot: bool) -> bool:
        """Failures exceed `max_failures` (a number, or a share of `cluster`), or a pilot failed."""
        tolerated = resolve_amount(max_failures, len(self.targets[cluster]))
        return should_stop(self.failures, tolerated, pilot_failed=pilot)

    def skip_pending(self, note: str | None = None) -> None:
        """The rollout ends: every host not started is skipped, never touched (with `note`, e.g.
        who aborted, for the summary)."""
        for host in self.progress.hosts():
            if host.state == HostState.PENDING:
                host.state = HostState.SKIPPED
                host.note = note

    # ---- the decision and the end ------------------------------------------------------------

    def decide(self, approver: str, comment: str, *, approved: bool) -> None:
        self.approved = approved
        self.progress.decided_by = approver.lower()
        self.progress.decision_comment = comment or None

    def add_approval(self, decision: ApprovalDecision, missing: list[str]) -> None:
        """One more approval; `missing` is what the rules still need after it (empty: the
        rollout is approved, "by" everyone who approved)."""
        self.approvals.append(decision)
        self.progress.approved_by.append(decision.approver.lower())
        self.progress.approvals_missing = missing
        if not missing:
            self.decide(", ".join(self.progress.approved_by), decision.comment, approved=True)

    def success_message(self, max_failures: int | str) -> str:
        """What a rollout that succeeded says: every host patched, or which were not (failed
        within the error budget `max_failures`, or skipped by a person)."""
        skipped = sum(1 for host in self.progress.hosts() if host.state == HostState.SKIPPED)
        others = "every other host" if self.failures else "every host"
        said = f"{others} was patched" if not skipped else f"{others} not skipped was patched"
        if skipped:
            said += f" ({skipped} skipped)"
        if self.failures:
            return (
                f"{self.failures} host(s) failed, within the error budget (maxFailures "
                f"{max_failures}); {said}"
            )
        return said

    def summary(self, now: datetime, *, dry_run: bool) -> RolloutSummary:
        progress = self.progress
        progress.finished_at = now
        hosts = progress.hosts()
        started = progress.started_at or now
        return RolloutSummary(
            rollout_id=progress.rollout_id,
            phase=progress.phase,
            # A dry run's inspected hosts are done, and none of them was patched.
            patched=0 if dry_run else sum(1 for host in hosts if host.state == HostState.DONE),
            failed=sum(1 for host in hosts if host.state == HostState.FAILED),
            skipped=sum(1 for host in hosts if host.state == HostState.SKIPPED),
            duration_seconds=(now - started).total_seconds(),
            message=progress.message or progress.phase.value,
            hosts=hosts,
            dry_run=self.inspections if dry_run else None,
            controls=list(progress.controls),
            gates=list(progress.gates),
        )

    # ---- continue-as-new ---------------------------------------------------------------------

    def carry(self, now: datetime) -> RolloutCarry:
        """Everything the next run needs, small: hosts patched cleanly by name only, every other
        host that started in full, pending hosts not at all (they are pending by default)."""
        patched: dict[str, list[str]] = {}
        rebooted: dict[str, list[str]] = {}
        finished: list[HostProgress] = []
        for cluster in self.progress.clusters:
            for host in cluster.hosts:
                if host.state == HostState.DONE and host.in_maintenance is False:
                    patched.setdefault(cluster.name, []).append(host.name)
                    if host.rebooted:
                        rebooted.setdefault(cluster.name, []).append(host.name)
                elif host.state != HostState.PENDING:
                    finished.append(host)
        targets, command_sets, command_of = pack_targets(self.targets)
        return RolloutCarry(
            started_at=self.progress.started_at or now,
            decided_by=self.progress.decided_by,
            decision_comment=self.progress.decision_comment,
            runs=self.runs + 1,
            failures=self.failures,
            targets=targets,
            command_sets=command_sets,
            command_of=command_of,
            windows=self.windows,
            notes={c.name: c.note for c in self.progress.clusters if c.note},
            patched=patched,
            rebooted=rebooted,
            finished=finished,
            paused_by=self.progress.paused_by,
            paused_since=self.progress.paused_since,
            controls=list(self.progress.controls),
            gate_settings=self.gate_settings,
            gates=list(self.progress.gates),
            approvals=self.approvals,
            grants=self.grants,
        )

    def _restore(self, carry: RolloutCarry) -> None:
        """Pick the rollout up where the previous run left it: approved, the same hosts, and
        every host it started kept as it ended (never started again)."""
        self.approved = True
        self.progress.decided_by = carry.decided_by
        self.progress.decision_comment = carry.decision_comment
        self.approvals, self.grants = list(carry.approvals), list(carry.grants)
        self.progress.approved_by = [decision.approver for decision in carry.approvals]
        self.failures = carry.failures
        self.runs = carry.runs
        self.progress.paused_by, self.progress.paused_since = carry.paused_by, carry.paused_since
        self.progress.controls = list(carry.controls)
        self.gate_settings = dict(carry.gate_settings)
        self.progress.gates = list(carry.gates)
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
        targets = unpack_targets(carry)
        for name, hosts in targets.items():
            windows = carry.windows.get(name, [])
            self.add_cluster(name, hosts, windows, carry.notes.get(name), finished)
