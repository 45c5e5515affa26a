"""The host workflow's shape (issue 16): what a host costs in Temporal round trips, and that the
cheaper shape keeps what people see — the wait steps still wait, the thread still reads
"started" before "patched"."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.service import RPCError

from tests.support import decoded_history
from tests.workflow.fake_fleet import FakeFleet
from tests.workflow.test_system_patch import ALICE, decide, rollout, running, running_on, start
from workflows import names
from workflows.host_notices import HostNotices
from workflows.models import HostCommands, Phase
from workflows.policies import host_workflow_id


async def _host_events(client: Client, host: str) -> tuple[list[str], int, list[str]]:
    """(activity types scheduled, workflow tasks completed, local-activity markers) of the
    host's workflow."""
    history = await client.get_workflow_handle(host_workflow_id(host)).fetch_history()
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    tasks = sum(
        e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED for e in history.events
    )
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
    ]
    return scheduled, tasks, markers


async def test_a_ready_host_waits_for_nothing_and_a_host_not_ready_still_waits(
    temporal_client: Client,
) -> None:
    prefix = uuid.uuid4().hex[:6]
    ready, slow = f"{prefix}-h1", f"{prefix}-h2"
    clusters = {f"{prefix}-c": [ready, slow]}
    fleet = FakeFleet(
        clusters,
        not_ready={(slow, names.WAIT_FOR_WORKLOAD_DRAIN), (slow, names.CHECK_SERVICE_HEALTH)},
    )
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters), pilotHostCount=0))
        await decide(handle, "approve", ALICE)
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2

    # A ready host: preconditions, drain and health answered by local activities in the
    # workflow tasks that were running anyway; the activities left are the update and notices.
    scheduled, tasks, _ = await _host_events(temporal_client, ready)
    assert sorted(scheduled) == sorted(
        [names.SEND_START_NOTIFICATION, names.PERFORM_UPDATE, names.SEND_SUCCESS_NOTIFICATION]
    )
    assert tasks <= 4, f"{tasks} workflow tasks for one host (6-7 before the first looks)"
    assert fleet.host_calls(names.CHECK_HOST_PRECONDITIONS).count(ready) == 1
    assert fleet.host_calls(names.WAIT_FOR_WORKLOAD_DRAIN).count(ready) == 1
    # A host not drained (nor healthy) at the first look gets the activity that waits.
    scheduled, _, _ = await _host_events(temporal_client, slow)
    assert scheduled.count(names.WAIT_FOR_WORKLOAD_DRAIN) == 1
    assert scheduled.count(names.CHECK_SERVICE_HEALTH) == 1
    assert fleet.host_calls(names.WAIT_FOR_WORKLOAD_DRAIN).count(slow) == 2
    assert fleet.host_calls(names.CHECK_SERVICE_HEALTH).count(slow) == 2
    # The update still ran after the drain and before the health check on both hosts.
    for host in (ready, slow):
        order = [name for h, name in fleet.calls if h == host]
        drained = len(order) - 1 - order[::-1].index(names.WAIT_FOR_WORKLOAD_DRAIN)
        assert drained < order.index(names.PERFORM_UPDATE) < order.index(names.CHECK_SERVICE_HEALTH)


async def test_a_held_start_notice_does_not_hold_the_host_and_still_comes_first(
    temporal_client: Client,
) -> None:
    prefix = uuid.uuid4().hex[:6]
    host = f"{prefix}-h1"
    clusters = {f"{prefix}-c": [host]}
    held = asyncio.Event()  # as Slack's pacing holds a message (bot/slack/pacing.py)
    fleet = FakeFleet(clusters, block={(host, names.SEND_START_NOTIFICATION): held})
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters), pilotHostCount=0))
        await decide(handle, "approve", ALICE)
        # The host is patched up to maintenance off while its start notice is still held...
        done = fleet.started.setdefault((host, names.CLEAR_MAINTENANCE_MODE), asyncio.Event())
        await asyncio.wait_for(done.wait(), 30)
        await asyncio.sleep(0.5)
        sent = [name for name, n in fleet.notices if n.hostname == host]
        assert sent == [], "the success notice went out before the start notice"
        held.set()
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 1
    sent = [name for name, n in fleet.notices if n.hostname == host]
    assert sent == [names.SEND_START_NOTIFICATION, names.SEND_SUCCESS_NOTIFICATION]


async def test_host_notices_no_channel_sends_are_not_scheduled(temporal_client: Client) -> None:
    prefix = uuid.uuid4().hex[:6]
    quiet, told = f"{prefix}-h1", f"{prefix}-h2"
    tasks_of: dict[str, int] = {}
    for host, notices, expected in (
        (quiet, HostNotices(start=False, success=False), []),
        (told, HostNotices(start=False, success=True), [names.SEND_SUCCESS_NOTIFICATION]),
    ):
        clusters = {f"{prefix}-{host}": [host]}
        fleet = FakeFleet(clusters, host_notices=notices)
        async with running(temporal_client, fleet) as queue:
            handle = await start(temporal_client, queue, rollout(list(clusters), pilotHostCount=0))
            await decide(handle, "approve", ALICE)
            summary = await handle.result()
        assert summary.phase == Phase.SUCCEEDED and summary.patched == 1
        scheduled, tasks_of[host], _ = await _host_events(temporal_client, host)
        assert sorted(scheduled) == sorted([names.PERFORM_UPDATE, *expected])
        assert [name for name, n in fleet.notices if n.hostname == host] == expected
        # Asked once for the rollout run, as a local activity, not per host.
        history = await handle.fetch_history()
        asked = [
            e
            for e in history.events
            if e.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
            and names.PLAN_HOST_NOTICES.encode() in e.SerializeToString()
        ]
        assert len(asked) == 1
    # Two workflow tasks for a quiet host (up to the update, after it); the success notice the
    # host waits for costs one of its own.
    assert tasks_of[quiet] == 2 and tasks_of[told] == 3, tasks_of


async def test_preconditions_are_an_activity_where_patchpilot_cannot_tell_its_own_flag(
    temporal_client: Client,
) -> None:
    # A local activity runs again after a lost worker: only where the preconditions can tell the
    # maintenance this rollout set (the default check and setter) may they be one.
    prefix = uuid.uuid4().hex[:6]
    default, own_check, own_setter = f"{prefix}-h1", f"{prefix}-h2", f"{prefix}-h3"
    clusters = {f"{prefix}-c": [default, own_check, own_setter]}
    fleet = FakeFleet(
        clusters,
        commands={
            own_check: HostCommands(maintenance_check="test -e /etc/in-maintenance"),
            own_setter: HostCommands(maintenance_on="touch /var/lib/patchpilot/maintenance"),
        },
    )
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters), pilotHostCount=0))
        await decide(handle, "approve", ALICE)
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    for host, as_activity in ((default, False), (own_check, True), (own_setter, True)):
        scheduled, _, _ = await _host_events(temporal_client, host)
        assert (names.CHECK_HOST_PRECONDITIONS in scheduled) is as_activity, host
        assert fleet.host_calls(names.CHECK_HOST_PRECONDITIONS).count(host) == 1


# A worker whose host checks never end: `python -c LOST_WORKER <address> <queue> <host>`.
LOST_WORKER = """
import asyncio, sys
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker
from tests.support import decoded_history
from tests.workflow.fake_fleet import FakeFleet
from workflows import names
from workflows.host_patch import HostPatchWorkflow
from workflows.sandbox import workflow_runner
from workflows.system_patch import SystemPatchWorkflow

async def main(address, queue, host):
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    never = asyncio.Event()
    fleet = FakeFleet({"c": [host]}, block={(host, names.CHECK_HOST_PRECONDITIONS): never})
    async with Worker(client, task_queue=queue, workflows=[SystemPatchWorkflow, HostPatchWorkflow],
                      activities=fleet.activities(), workflow_runner=workflow_runner()):
        await never.wait()

asyncio.run(main(*sys.argv[1:]))
"""


async def test_preconditions_that_outlast_their_first_task_know_they_may_run_again(
    temporal_client: Client, temporal_dev_server: Any
) -> None:
    # Local activities still running at ~80 % of the task's 10 s timeout: the SDK completes the
    # task without their marker. A worker lost after that (SIGKILL) leaves the next one to replay
    # the task, and the checks run again: they must know it (HostStepInput.resumed), or they
    # would refuse the host for the maintenance the first run may have set.
    prefix = uuid.uuid4().hex[:6]
    host = f"{prefix}-h1"
    clusters = {"c": [host]}
    queue = f"wf-test-{uuid.uuid4().hex[:8]}"
    lost = subprocess.Popen(
        [sys.executable, "-c", LOST_WORKER, temporal_dev_server.address, queue, host],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        handle = await start(temporal_client, queue, rollout(list(clusters), pilotHostCount=0))
        await decide(handle, "approve", ALICE)
        for _ in range(150):  # the host's first task completed while its checks still ran
            with contextlib.suppress(RPCError):
                if (await _host_events(temporal_client, host))[1] >= 1:
                    break
            await asyncio.sleep(0.2)
    finally:
        lost.kill()
        lost.wait()
    fleet = FakeFleet(clusters)
    async with running_on(temporal_client, fleet, queue):
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 1
    checks = [step for name, step in fleet.inputs if name == names.CHECK_HOST_PRECONDITIONS]
    assert [step.resumed for step in checks] == [True]


async def test_the_updates_reboot_answer_decides_when_no_reboot_is_due(
    temporal_client: Client,
) -> None:
    """engine v10: the update's own SSH command brings back the host's boot id and reboot answer
    (StepResult.reboot_look); when no reboot is due that is the decision, with no reboot step;
    a reboot is still decided, and done, by RebootHostActivity, which reads the boot id it will
    wait to see change."""
    prefix = uuid.uuid4().hex[:6]
    for policy, pending, reboots, note in (
        ("if-required", False, False, "no reboot required"),
        ("never", True, False, "a reboot is pending but the policy is never"),
        ("if-required", True, True, "fake"),
        ("always", False, True, "fake"),
    ):
        host = f"{prefix}-{policy}-{pending}".lower()
        clusters = {f"{host}-c": [host]}
        fleet = FakeFleet(clusters, looks=True, needs_reboot={host} if pending else set())
        async with running(temporal_client, fleet) as queue:
            handle = await start(
                temporal_client,
                queue,
                rollout(list(clusters), pilotHostCount=0, rebootPolicy=policy),
            )
            await decide(handle, "approve", ALICE)
            summary = await handle.result()
        assert summary.phase == Phase.SUCCEEDED and summary.patched == 1, policy
        (result,) = summary.hosts
        assert (result.rebooted, result.note) == (reboots, note), (policy, pending)
        decided = fleet.host_calls(names.REBOOT_HOST).count(host)
        waited = fleet.host_calls(names.WAIT_FOR_HOST_BOOT).count(host)
        assert (decided, waited) == ((1, 1) if reboots else (0, 0)), (policy, pending)
        # Nor is a reboot step the host did not need in its history (as a marker or activity).
        history = await temporal_client.get_workflow_handle(host_workflow_id(host)).fetch_history()
        assert (names.REBOOT_HOST in decoded_history(history.to_json())) == reboots, policy
