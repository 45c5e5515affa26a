"""SystemPatchWorkflow's decisions on a real Temporal dev server, stand-in activities."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import CancelledError
from temporalio.worker import Worker

from tests.workflow.fake_fleet import FakeFleet
from workflows import names
from workflows.host_patch import HostPatchWorkflow
from workflows.models import (
    WORKFLOW_NAME,
    ApprovalDecision,
    HostState,
    Phase,
    RolloutInput,
    RolloutProgress,
    RolloutSummary,
)
from workflows.sandbox import workflow_runner
from workflows.system_patch import SystemPatchWorkflow

ALICE = "alice@example.com"
BOB = "bob@example.com"


def fleet_names(prefix: str) -> dict[str, list[str]]:
    return {
        f"{prefix}-ca": [f"{prefix}-a1", f"{prefix}-a2", f"{prefix}-a3"],
        f"{prefix}-cb": [f"{prefix}-b1", f"{prefix}-b2", f"{prefix}-b3"],
    }


def rollout(clusters: list[str], **extra: object) -> RolloutInput:
    return RolloutInput.model_validate(
        {
            "targetClusters": clusters,
            "pilotHostCount": 1,
            "approverEmails": [ALICE, BOB],
            "requesterEmail": BOB,
            "updateCommand": "apt-get update && apt-get -y upgrade",
            "serviceList": ["nginx"],
            **extra,
        }
    )


@asynccontextmanager
async def running(client: Client, fleet: FakeFleet) -> AsyncIterator[str]:
    async with running_on(client, fleet, f"wf-test-{uuid.uuid4().hex[:8]}") as queue:
        yield queue


@asynccontextmanager
async def running_on(client: Client, fleet: FakeFleet, queue: str) -> AsyncIterator[str]:
    async with Worker(
        client,
        task_queue=queue,
        workflows=[SystemPatchWorkflow, HostPatchWorkflow],
        activities=fleet.activities(),
        workflow_runner=workflow_runner(),
    ):
        yield queue


async def start(client: Client, queue: str, rollout_input: RolloutInput) -> WorkflowHandle:
    return await client.start_workflow(
        WORKFLOW_NAME,
        rollout_input,
        id=f"rollout-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        result_type=RolloutSummary,
    )


async def decide(handle: WorkflowHandle, kind: str, who: str) -> str:
    return await handle.execute_update(kind, ApprovalDecision(approver=who), result_type=str)


async def test_approved_rollout_patches_pilots_first_then_the_rest(temporal_client: Client) -> None:
    prefix = uuid.uuid4().hex[:6]
    clusters = fleet_names(prefix)
    fleet = FakeFleet(clusters)
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters), maxConcurrency=2))
        assert await decide(handle, "approve", ALICE) == f"approved by {ALICE}"
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED
    assert (summary.patched, summary.failed, summary.skipped) == (6, 0, 0)
    updates = fleet.host_calls(names.PERFORM_UPDATE)
    a, b = list(clusters.values())
    # Cluster order holds; each cluster's pilot is patched before the others of its cluster start.
    assert updates[0] == a[0] and set(updates[1:3]) == set(a[1:])
    assert updates[3] == b[0] and set(updates[4:6]) == set(b[1:])
    a1_steps = [name for host, name in fleet.calls if host == a[0]]
    assert a1_steps == [
        names.CHECK_HOST_PRECONDITIONS,
        names.SET_MAINTENANCE_MODE,
        names.STOP_SERVICES,
        names.WAIT_FOR_WORKLOAD_DRAIN,
        names.PERFORM_UPDATE,
        names.REBOOT_HOST,
        names.START_SERVICES,
        names.CHECK_SERVICE_HEALTH,
        names.CLEAR_MAINTENANCE_MODE,
    ]
    sent = [name for name, _ in fleet.notices]
    assert sent[0] == names.SEND_APPROVAL_REQUEST and sent[-1] == names.SEND_ROLLOUT_SUMMARY
    assert sent.count(names.SEND_SUCCESS_NOTIFICATION) == 6


async def test_approval_rules_are_enforced_by_the_update_validator(temporal_client: Client) -> None:
    prefix = uuid.uuid4().hex[:6]
    clusters = fleet_names(prefix)
    fleet = FakeFleet(clusters)
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters)[:1], pilotHostCount=0))
        with pytest.raises(WorkflowUpdateFailedError) as stranger:
            await decide(handle, "approve", "mallory@example.com")
        assert "mallory@example.com is not an approver" in str(stranger.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as own:
            await decide(handle, "approve", BOB)
        assert "requested this rollout and cannot approve it" in str(own.value.cause)
        progress = await handle.query("progress", result_type=RolloutProgress)
        assert progress.phase == Phase.AWAITING_APPROVAL
        assert fleet.host_calls(names.CHECK_HOST_PRECONDITIONS) == []
        await decide(handle, "approve", ALICE)
        with pytest.raises(WorkflowUpdateFailedError) as late:
            await decide(handle, "reject", ALICE)
        assert "already approved by alice@example.com" in str(late.value.cause)
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED


async def test_reject_touches_no_host(temporal_client: Client) -> None:
    prefix = uuid.uuid4().hex[:6]
    clusters = fleet_names(prefix)
    fleet = FakeFleet(clusters)
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters)))
        await decide(handle, "reject", ALICE)
        summary = await handle.result()
    assert summary.phase == Phase.REJECTED
    assert fleet.calls == []
    assert summary.skipped == 6 and "rejected by alice@example.com" in summary.message


async def test_failed_pilot_stops_the_rollout_and_alerts_with_host_and_step(
    temporal_client: Client,
) -> None:
    prefix = uuid.uuid4().hex[:6]
    clusters = fleet_names(prefix)
    pilot = clusters[f"{prefix}-ca"][0]
    fleet = FakeFleet(
        clusters, fail={(pilot, names.PERFORM_UPDATE): "update exited 100: E: broken"}
    )
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters), maxFailures=5))
        await decide(handle, "approve", ALICE)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        progress = await handle.query("progress", result_type=RolloutProgress)
    assert f"pilot host {pilot} failed at step update" in str(failed.value.cause)
    assert fleet.host_calls(names.PERFORM_UPDATE) == [pilot]
    assert fleet.host_calls(names.CLEAR_MAINTENANCE_MODE) == []
    states = {host.name: host.state for host in progress.hosts()}
    assert states[pilot] == HostState.FAILED
    assert [s for h, s in states.items() if h != pilot] == [HostState.SKIPPED] * 5
    failed_host = next(host for host in progress.hosts() if host.name == pilot)
    assert failed_host.in_maintenance is True and failed_host.step == "update"
    alerts = [notice for name, notice in fleet.notices if name == names.SEND_FAILURE_ALERT]
    assert len(alerts) == 1 and alerts[0].hostname == pilot and alerts[0].step == "update"
    assert "E: broken" in (alerts[0].failure_details or "")


async def test_error_budget_allows_max_failures_then_stops(temporal_client: Client) -> None:
    prefix = uuid.uuid4().hex[:6]
    clusters = {f"{prefix}-c": [f"{prefix}-h{i}" for i in range(1, 6)]}
    hosts = clusters[f"{prefix}-c"]
    fleet = FakeFleet(
        clusters,
        fail={
            (hosts[1], names.CHECK_SERVICE_HEALTH): "unhealthy",
            (hosts[2], names.PERFORM_UPDATE): "x",
        },
    )
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters), maxFailures=1))
        await decide(handle, "approve", ALICE)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
        progress = await handle.query("progress", result_type=RolloutProgress)
    states = [host.state for host in progress.hosts()]
    assert states == [
        HostState.DONE,
        HostState.FAILED,
        HostState.FAILED,
        HostState.SKIPPED,
        HostState.SKIPPED,
    ]


async def test_second_rollout_on_a_busy_host_is_refused_and_the_first_is_unaffected(
    temporal_client: Client,
) -> None:
    prefix = uuid.uuid4().hex[:6]
    clusters = {f"{prefix}-c": [f"{prefix}-h1"]}
    host = f"{prefix}-h1"
    release = asyncio.Event()
    fleet = FakeFleet(clusters, block={(host, names.PERFORM_UPDATE): release})
    async with running(temporal_client, fleet) as queue:
        first = await start(temporal_client, queue, rollout(list(clusters)))
        await decide(first, "approve", ALICE)
        started = fleet.started.setdefault((host, names.PERFORM_UPDATE), asyncio.Event())
        await asyncio.wait_for(started.wait(), 30)
        second = await start(temporal_client, queue, rollout(list(clusters)))
        await decide(second, "approve", ALICE)
        with pytest.raises(WorkflowFailureError) as refused:
            await second.result()
        release.set()
        summary = await first.result()
    assert f"host {host} is already being patched by another rollout" in str(refused.value.cause)
    assert summary.phase == Phase.SUCCEEDED
    assert fleet.host_calls(names.PERFORM_UPDATE) == [host]


async def test_cancel_lets_the_host_in_progress_finish_and_starts_no_other(
    temporal_client: Client,
) -> None:
    prefix = uuid.uuid4().hex[:6]
    clusters = {f"{prefix}-c": [f"{prefix}-h1", f"{prefix}-h2", f"{prefix}-h3"]}
    first = f"{prefix}-h1"
    release = asyncio.Event()
    fleet = FakeFleet(clusters, block={(first, names.PERFORM_UPDATE): release})
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters)))
        await decide(handle, "approve", ALICE)
        started = fleet.started.setdefault((first, names.PERFORM_UPDATE), asyncio.Event())
        await asyncio.wait_for(started.wait(), 30)
        await handle.cancel()
        await asyncio.sleep(0.5)
        release.set()
        with pytest.raises(WorkflowFailureError) as cancelled:
            await handle.result()
        progress = await handle.query("progress", result_type=RolloutProgress)
    assert isinstance(cancelled.value.cause, CancelledError)
    assert progress.phase == Phase.CANCELLED
    assert [h.state for h in progress.hosts()] == [
        HostState.DONE,
        HostState.SKIPPED,
        HostState.SKIPPED,
    ]
    assert fleet.host_calls(names.CLEAR_MAINTENANCE_MODE) == [first]
    summaries = [n for name, n in fleet.notices if name == names.SEND_ROLLOUT_SUMMARY]
    assert summaries and summaries[-1].summary and summaries[-1].summary.phase == Phase.CANCELLED


async def test_a_cancel_while_a_wave_is_announced_starts_no_host_of_it(
    temporal_client: Client,
) -> None:
    # The SDK hands a workflow's cancel to the activity it awaits; the wave notice's error
    # used to swallow it, and the wave it announced then started.
    prefix = uuid.uuid4().hex[:6]
    clusters = {f"{prefix}-c": [f"{prefix}-h1", f"{prefix}-h2"]}
    told = asyncio.Event()
    fleet = FakeFleet(clusters, block={("", names.SEND_WAVE_NOTIFICATION): told})
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters)))
        await decide(handle, "approve", ALICE)
        announcing = fleet.started.setdefault(("", names.SEND_WAVE_NOTIFICATION), asyncio.Event())
        await asyncio.wait_for(announcing.wait(), 30)
        await handle.cancel()
        try:
            with pytest.raises(WorkflowFailureError) as cancelled:
                await asyncio.wait_for(handle.result(), 30)
        finally:
            told.set()
        progress = await handle.query("progress", result_type=RolloutProgress)
    assert isinstance(cancelled.value.cause, CancelledError)
    assert progress.phase == Phase.CANCELLED
    assert [h.state for h in progress.hosts()] == [HostState.SKIPPED, HostState.SKIPPED]
    assert fleet.host_calls(names.CHECK_HOST_PRECONDITIONS) == []


async def test_unknown_cluster_fails_before_approval_is_requested(temporal_client: Client) -> None:
    fleet = FakeFleet({})
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(["nowhere"]))
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert "cannot resolve cluster nowhere" in str(failed.value.cause)
    assert names.SEND_APPROVAL_REQUEST not in [name for name, _ in fleet.notices]


async def test_pilot_count_above_cluster_size_is_said_in_progress(temporal_client: Client) -> None:
    prefix = uuid.uuid4().hex[:6]
    clusters = {f"{prefix}-c": [f"{prefix}-h1", f"{prefix}-h2"]}
    fleet = FakeFleet(clusters)
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters), pilotHostCount=5))
        await asyncio.sleep(0.5)
        progress = await handle.query("progress", result_type=RolloutProgress)
        await decide(handle, "reject", ALICE)
        await handle.result()
    assert progress.clusters[0].note and "whole cluster is pilot" in progress.clusters[0].note
    assert all(host.pilot for host in progress.hosts())


async def test_dry_run_needs_no_approval_and_only_inspects(temporal_client: Client) -> None:
    prefix = uuid.uuid4().hex[:6]
    clusters = fleet_names(prefix)
    fleet = FakeFleet(clusters, needs_reboot={clusters[f"{prefix}-ca"][1]})
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters), dryRun=True))
        summary = await handle.result()
    assert summary.phase == Phase.DRY_RUN_DONE
    assert {name for _, name in fleet.calls} == {names.INSPECT_HOST}
    assert summary.dry_run is not None and len(summary.dry_run) == 6
    assert [i.hostname for i in summary.dry_run if i.reboot_required] == [
        clusters[f"{prefix}-ca"][1]
    ]
    assert "nothing was changed" in summary.message
    assert names.SEND_APPROVAL_REQUEST not in [name for name, _ in fleet.notices]


async def test_reboot_is_waited_for_before_services_start(temporal_client: Client) -> None:
    prefix = uuid.uuid4().hex[:6]
    clusters = {f"{prefix}-c": [f"{prefix}-h1", f"{prefix}-h2"]}
    first, second = clusters[f"{prefix}-c"]
    fleet = FakeFleet(clusters, needs_reboot={first})
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters)))
        await decide(handle, "approve", ALICE)
        summary = await handle.result()
    steps = [name for host, name in fleet.calls if host == first]
    assert steps[steps.index(names.PERFORM_UPDATE) :][:4] == [
        names.PERFORM_UPDATE,
        names.REBOOT_HOST,
        names.WAIT_FOR_HOST_BOOT,
        names.START_SERVICES,
    ]
    assert names.WAIT_FOR_HOST_BOOT not in [n for h, n in fleet.calls if h == second]
    rebooted = {host.name: host.rebooted for host in summary.hosts}
    assert rebooted == {first: True, second: False}


async def test_sliding_window_starts_the_next_host_as_soon_as_one_finishes(
    temporal_client: Client,
) -> None:
    prefix = uuid.uuid4().hex[:6]
    hosts = [f"{prefix}-h{i}" for i in range(1, 6)]
    clusters = {f"{prefix}-c": hosts}
    release = asyncio.Event()
    fleet = FakeFleet(clusters, block={(hosts[0], names.PERFORM_UPDATE): release})
    async with running(temporal_client, fleet) as queue:
        handle = await start(
            temporal_client, queue, rollout(list(clusters), pilotHostCount=0, maxConcurrency=2)
        )
        await decide(handle, "approve", ALICE)
        # h1 is stuck in its update; in waves of 2, h3 would wait for it. In a window of 2 the
        # other slot keeps going: h2, h3, h4 and h5 all finish while h1 is still updating.
        for host in hosts[1:]:
            done = fleet.started.setdefault((host, names.CLEAR_MAINTENANCE_MODE), asyncio.Event())
            await asyncio.wait_for(done.wait(), 30)
        running_now: list[str] = []
        for _ in range(100):
            progress = await handle.query("progress", result_type=RolloutProgress)
            running_now = [h.name for h in progress.hosts() if h.state != HostState.DONE]
            if running_now == [hosts[0]]:
                break
            await asyncio.sleep(0.1)
        assert running_now == [hosts[0]]
        release.set()
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 5
    waves = [n.wave for name, n in fleet.notices if name == names.SEND_WAVE_NOTIFICATION]
    assert waves == [f"{prefix}-c: all hosts, 2 at a time: {', '.join(hosts)}"]


async def test_waves_list_runs_batches_like_ansible_serial(temporal_client: Client) -> None:
    prefix = uuid.uuid4().hex[:6]
    hosts = [f"{prefix}-h{i}" for i in range(1, 7)]
    clusters = {f"{prefix}-c": hosts}
    release = asyncio.Event()
    fleet = FakeFleet(clusters, block={(hosts[1], names.PERFORM_UPDATE): release})
    async with running(temporal_client, fleet) as queue:
        handle = await start(
            temporal_client, queue, rollout(list(clusters), pilotHostCount=1, waves=[2, "50%"])
        )
        await decide(handle, "approve", ALICE)
        blocked = fleet.started.setdefault((hosts[1], names.PERFORM_UPDATE), asyncio.Event())
        await asyncio.wait_for(blocked.wait(), 30)
        await asyncio.sleep(1.0)
        # The batch [h2, h3] must finish before the next batch starts.
        assert hosts[3] not in fleet.host_calls(names.CHECK_HOST_PRECONDITIONS)
        release.set()
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 6
    waves = [n.wave for name, n in fleet.notices if name == names.SEND_WAVE_NOTIFICATION]
    # Pilot h1, then 2 hosts, then batches of 50% of the 6-host cluster (3), the last cut short.
    assert waves == [
        f"{prefix}-c: pilot hosts: {hosts[0]}",
        f"{prefix}-c: wave 2/3: {hosts[1]}, {hosts[2]}",
        f"{prefix}-c: wave 3/3: {hosts[3]}, {hosts[4]}, {hosts[5]}",
    ]


@pytest.mark.parametrize(("failing", "stops"), [(2, False), (3, True)])
async def test_percentage_error_budget_tolerates_exactly_its_share(
    temporal_client: Client, failing: int, stops: bool
) -> None:
    prefix = uuid.uuid4().hex[:6]
    hosts = [f"{prefix}-h{i}" for i in range(1, 9)]
    clusters = {f"{prefix}-c": hosts}
    # 25% of 8 hosts = 2 failures tolerated: the rollout stops when failures EXCEED 2.
    fleet = FakeFleet(
        clusters, fail={(host, names.PERFORM_UPDATE): "broken" for host in hosts[1 : 1 + failing]}
    )
    async with running(temporal_client, fleet) as queue:
        handle = await start(
            temporal_client, queue, rollout(list(clusters), pilotHostCount=1, maxFailures="25%")
        )
        await decide(handle, "approve", ALICE)
        if stops:
            with pytest.raises(WorkflowFailureError):
                await handle.result()
        else:
            summary = await handle.result()
            assert summary.phase == Phase.SUCCEEDED
            assert "2 host(s) failed, within the error budget" in summary.message
        progress = await handle.query("progress", result_type=RolloutProgress)
    states = [host.state for host in progress.hosts()]
    assert states.count(HostState.FAILED) == failing
    if stops:
        assert states[1 + failing :] == [HostState.SKIPPED] * (8 - 1 - failing)
    else:
        assert states.count(HostState.DONE) == 8 - failing


async def test_continue_as_new_keeps_every_host_patched_once_and_each_run_small(
    temporal_client: Client,
) -> None:
    prefix = uuid.uuid4().hex[:6]
    hosts = [f"{prefix}-h{i:02}" for i in range(1, 25)]
    clusters = {f"{prefix}-c": hosts[:12], f"{prefix}-d": hosts[12:]}
    fleet = FakeFleet(clusters)
    budget = 200
    async with running(temporal_client, fleet) as queue:
        handle = await start(
            temporal_client,
            queue,
            rollout(list(clusters), maxConcurrency=3, historyEventBudget=budget),
        )
        await decide(handle, "approve", ALICE)
        summary = await handle.result()
        progress = await handle.query("progress", result_type=RolloutProgress)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 24
    assert sorted(fleet.host_calls(names.PERFORM_UPDATE)) == hosts  # each host exactly once
    assert progress.phase == Phase.SUCCEEDED and progress.decided_by == ALICE
    assert [h.state for h in progress.hosts()] == [HostState.DONE] * 24
    runs = [run async for run in temporal_client.list_workflows(f"WorkflowId = '{handle.id}'")]
    sizes = []
    for run in runs:
        run_handle = temporal_client.get_workflow_handle(handle.id, run_id=run.run_id)
        sizes.append(len((await run_handle.fetch_history()).events))
    print("events per run", sizes)
    assert len(runs) >= 2, "a 24-host rollout with a 200-event budget continues as new"
    assert max(sizes) <= budget, sizes
    sent = [name for name, _ in fleet.notices]
    assert sent.count(names.SEND_APPROVAL_REQUEST) == 1
    assert sent.count(names.SEND_ROLLOUT_SUMMARY) == 1
