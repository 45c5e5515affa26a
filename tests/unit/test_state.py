"""RolloutState: the rollout's bookkeeping, without Temporal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workflows import names
from workflows.models import (
    HostCommands,
    HostInspection,
    HostPatchResult,
    HostState,
    HostTarget,
    MaintenanceWindow,
    Phase,
    RolloutInput,
)
from workflows.state import RolloutState

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
CUSTOM = HostCommands(health_check="curl -fsS localhost/health")


def rollout(**extra: object) -> RolloutInput:
    return RolloutInput.model_validate(
        {
            "targetClusters": ["ca", "cb"],
            "pilotHostCount": 1,
            "approverEmails": ["alice@example.com"],
            "requesterEmail": "bob@example.com",
            "updateCommand": "apt-get -y upgrade",
            **extra,
        }
    )


def hosts(cluster: str, count: int, commands: HostCommands | None = None) -> list[HostTarget]:
    return [
        HostTarget(
            name=f"{cluster}{i}",
            cluster=cluster,
            address=f"10.0.0.{i}",
            commands=commands or HostCommands(),
        )
        for i in range(1, count + 1)
    ]


def state_with_two_clusters(**extra: object) -> RolloutState:
    state = RolloutState(rollout(**extra), "rollout-1", NOW)
    state.add_cluster("ca", hosts("ca", 3, CUSTOM), [], note="a note")
    window = MaintenanceWindow(cron="0 2 * * sat", duration=timedelta(hours=4))
    state.add_cluster("cb", hosts("cb", 3), [window])
    return state


def result(name: str, *, ok: bool = True, **extra: object) -> HostPatchResult:
    return HostPatchResult.model_validate(
        {"hostname": name, "ok": ok, "step": names.STEP_DONE if ok else "update", **extra}
    )


def test_new_clusters_are_pending_with_their_pilots_marked() -> None:
    state = state_with_two_clusters()
    assert state.progress.phase == Phase.RESOLVING and state.progress.started_at == NOW
    assert [h.state for h in state.progress.hosts()] == [HostState.PENDING] * 6
    assert [h.name for h in state.progress.hosts() if h.pilot] == ["ca1", "cb1"]
    assert state.progress.clusters[0].note == "a note"
    assert state.hosts_by_cluster() == {"ca": ["ca1", "ca2", "ca3"], "cb": ["cb1", "cb2", "cb3"]}
    assert state.first_host() == "ca1"
    assert state.host("cb2") is state.progress.clusters[1].hosts[1]


def test_a_started_host_is_running_and_no_longer_pending() -> None:
    state = state_with_two_clusters()
    state.mark_started("ca1", NOW)
    entry = state.host("ca1")
    assert (entry.state, entry.started_at, entry.step) == (HostState.RUNNING, NOW, None)
    assert [h.name for h in state.pending(state.targets["ca"])] == ["ca2", "ca3"]


def test_a_result_ends_the_host_and_only_a_failure_counts() -> None:
    state = state_with_two_clusters()
    state.mark_started("ca1", NOW)
    state.record_result(result("ca1", rebooted=True, reboot_note="reboot required"), LATER)
    done = state.host("ca1")
    assert done.state == HostState.DONE and done.step == names.STEP_DONE
    assert done.rebooted and done.note == "reboot required" and done.finished_at == LATER
    assert done.in_maintenance is False and state.failures == 0

    state.mark_started("ca2", NOW)
    state.record_result(
        result(
            "ca2",
            ok=False,
            failure_reason="E: broken",
            in_maintenance=True,
            started_at=NOW - timedelta(seconds=1),
            finished_at=LATER + timedelta(seconds=1),
        ),
        LATER,
    )
    failed = state.host("ca2")
    assert failed.state == HostState.FAILED and failed.step == "update"
    assert failed.failure_reason == "E: broken" and failed.in_maintenance is True
    assert failed.started_at == NOW - timedelta(seconds=1)
    assert failed.finished_at == LATER + timedelta(seconds=1)
    assert state.failures == 1


def test_a_result_without_a_step_keeps_the_last_known_one() -> None:
    state = state_with_two_clusters()
    state.mark_started("ca1", NOW, step="update")
    state.record_result(result("ca1", ok=False, step=None, in_maintenance=None), LATER)
    assert state.host("ca1").step == "update" and state.host("ca1").in_maintenance is None


def test_skip_pending_touches_only_hosts_that_never_started() -> None:
    state = state_with_two_clusters()
    state.mark_started("ca1", NOW)
    state.record_result(result("ca1"), LATER)
    state.mark_started("ca2", NOW)
    state.record_result(result("ca2", ok=False), LATER)
    state.mark_started("ca3", NOW)
    state.skip_pending()
    assert [h.state for h in state.progress.hosts()] == [
        HostState.DONE,
        HostState.FAILED,
        HostState.RUNNING,
        HostState.SKIPPED,
        HostState.SKIPPED,
        HostState.SKIPPED,
    ]


def test_the_error_budget_is_per_cluster_and_a_pilot_failure_always_stops() -> None:
    state = state_with_two_clusters()
    state.record_result(result("ca2", ok=False), LATER)
    assert state.over_budget("ca", 0, pilot=False)
    assert not state.over_budget("ca", 1, pilot=False)
    assert not state.over_budget("ca", "34%", pilot=False)  # 34% of 3 hosts = 1 tolerated
    assert state.over_budget("ca", "33%", pilot=False)  # 0.99 hosts: none tolerated
    assert state.over_budget("ca", 5, pilot=True)


def test_the_summary_counts_every_state_and_the_duration() -> None:
    state = state_with_two_clusters()
    state.record_result(result("ca1"), LATER)
    state.record_result(result("ca2", ok=False), LATER)
    state.progress.phase = Phase.FAILED
    state.skip_pending()
    summary = state.summary(LATER, dry_run=False)
    assert (summary.patched, summary.failed, summary.skipped) == (1, 1, 4)
    assert summary.duration_seconds == 300 and summary.message == "failed"
    assert summary.dry_run is None and len(summary.hosts) == 6
    assert state.progress.finished_at == LATER


def test_a_rollout_that_succeeded_says_which_hosts_were_not_patched() -> None:
    state = state_with_two_clusters()
    for name in ("ca1", "ca2", "ca3", "cb1", "cb2", "cb3"):
        state.record_result(result(name), LATER)
    assert state.success_message(0) == "every host was patched"
    state.host("cb3").state = HostState.SKIPPED  # skipped by a person before it started
    assert state.success_message(0) == "every host not skipped was patched (1 skipped)"
    state.record_result(result("ca2", ok=False), LATER)
    assert state.success_message("20%") == (
        "1 host(s) failed, within the error budget (maxFailures 20%); every other host not "
        "skipped was patched (1 skipped)"
    )


def test_a_dry_run_records_inspections_and_its_summary_lists_them() -> None:
    state = state_with_two_clusters(dryRun=True)
    state.mark_started("ca1", NOW, step="inspect")
    assert state.host("ca1").step == "inspect"
    state.record_inspection(
        HostInspection(hostname="ca1", cluster="ca", preconditions_ok=True), LATER
    )
    refused = HostInspection(hostname="ca2", cluster="ca", preconditions_ok=False, reason="sick")
    state.record_inspection(refused, LATER)
    assert state.host("ca1").state == HostState.DONE
    assert state.host("ca2").state == HostState.FAILED
    assert state.host("ca2").failure_reason == "sick"
    assert state.failures == 0
    assert state.summary(LATER, dry_run=True).dry_run == state.inspections
    assert [i.hostname for i in state.inspections] == ["ca1", "ca2"]


def test_a_decision_is_kept_with_the_approver_in_lower_case() -> None:
    state = state_with_two_clusters()
    assert state.approved is None
    state.decide("Alice@Example.com", "", approved=True)
    assert state.approved is True
    assert state.progress.decided_by == "alice@example.com"
    assert state.progress.decision_comment is None
    state.decide("carol@example.com", "not now", approved=False)
    assert state.approved is False and state.progress.decision_comment == "not now"


def test_a_cluster_without_windows_is_always_open() -> None:
    state = state_with_two_clusters()
    assert state.window_status("ca", NOW, timedelta(minutes=15)) is None
    saturday = datetime(2026, 11, 28, 2, 30, tzinfo=UTC)
    status = state.window_status("cb", saturday, timedelta(minutes=15))
    assert status is not None and status.open
    assert status.closes_at == datetime(2026, 11, 28, 6, 0, tzinfo=UTC)


def continued(state: RolloutState, now: datetime, **extra: object) -> RolloutState:
    """The next run's state, after the carry went through JSON as continue-as-new sends it."""
    carry = state.carry(now)
    wire = rollout(**extra).model_copy(update={"continued": carry}).model_dump_json()
    return RolloutState(RolloutInput.model_validate_json(wire), "rollout-1", now)


def test_carry_and_restore_keep_finished_hosts_finished_and_never_restart_them() -> None:
    state = state_with_two_clusters(maxFailures=5)
    state.decide("alice@example.com", "go", approved=True)
    state.record_result(result("ca1"), LATER)
    state.record_result(result("ca2", ok=False, failure_reason="E: broken"), LATER)
    state.record_result(result("cb1", rebooted=True), LATER)
    state.record_result(result("cb2", in_maintenance=True), LATER)  # done, flag still set

    after = continued(state, LATER + timedelta(hours=1), maxFailures=5)

    assert after.approved is True
    assert (after.progress.decided_by, after.progress.decision_comment) == (
        "alice@example.com",
        "go",
    )
    assert after.progress.started_at == NOW
    assert after.failures == 1 and after.runs == 2
    states = {h.name: h.state for h in after.progress.hosts()}
    assert states == {
        "ca1": HostState.DONE,
        "ca2": HostState.FAILED,
        "ca3": HostState.PENDING,
        "cb1": HostState.DONE,
        "cb2": HostState.DONE,
        "cb3": HostState.PENDING,
    }
    # Only the hosts that never started are left to start: no host is patched twice.
    pending = [h.name for cluster in ("ca", "cb") for h in after.pending(after.targets[cluster])]
    assert pending == ["ca3", "cb3"]
    assert after.host("ca2").failure_reason == "E: broken"
    assert after.host("cb1").rebooted and not after.host("ca1").rebooted
    assert after.host("cb2").in_maintenance is True
    assert [h.name for h in after.progress.hosts() if h.pilot] == ["ca1", "cb1"]
    # The hosts, their commands, windows and notes come back as they were.
    assert after.targets == state.targets
    assert after.targets["ca"][0].commands == CUSTOM
    assert after.windows == state.windows
    assert after.progress.clusters[0].note == "a note"
    assert after.progress.phase == Phase.RESOLVING  # the workflow sets the phase it resumes in


def test_a_second_continue_as_new_keeps_counting_runs_and_finished_hosts() -> None:
    state = state_with_two_clusters()
    state.decide("alice@example.com", "", approved=True)
    state.record_result(result("ca1"), LATER)
    second = continued(state, LATER)
    second.record_result(result("ca2"), LATER)
    third = continued(second, LATER)
    assert third.runs == 3
    assert [h.name for h in third.pending(third.targets["ca"])] == ["ca3"]
    assert third.host("ca1").state == third.host("ca2").state == HostState.DONE


def test_the_carry_names_cleanly_patched_hosts_only_and_holds_each_command_set_once() -> None:
    state = state_with_two_clusters()
    state.record_result(result("ca1"), LATER)
    state.record_result(result("cb1", rebooted=True), LATER)
    state.record_result(result("cb2", ok=False), LATER)
    carry = state.carry(LATER)
    assert carry.patched == {"ca": ["ca1"], "cb": ["cb1"]}
    assert carry.rebooted == {"cb": ["cb1"]}
    assert [h.name for h in carry.finished] == ["cb2"]
    assert carry.command_sets == [CUSTOM] and carry.command_of["ca"] == [0, 0, 0]
    assert carry.started_at == NOW and carry.runs == 2


def test_a_pause_a_skipped_host_and_the_controls_carry_into_the_next_run() -> None:
    state = state_with_two_clusters()
    state.decide("alice@example.com", "", approved=True)
    state.progress.paused_by, state.progress.paused_since = "bob@example.com", NOW
    state.progress.controls = ["2026-11-27 02:00:00 UTC paused by bob@example.com"]
    skipped = state.host("cb2")
    skipped.state, skipped.note = HostState.SKIPPED, "skipped by bob@example.com: disk"
    carry = state.carry(LATER)
    after = RolloutState(rollout(continued=carry.model_dump(by_alias=True)), "rollout-1", LATER)
    assert after.progress.paused_by == "bob@example.com" and after.progress.paused_since == NOW
    assert after.progress.controls == state.progress.controls
    assert after.host("cb2").state == HostState.SKIPPED
    assert after.host("cb2").note == "skipped by bob@example.com: disk"
    assert after.summary(LATER, dry_run=False).controls == state.progress.controls
