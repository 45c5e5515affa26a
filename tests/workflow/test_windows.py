"""Maintenance windows on Temporal's time-skipping test server: hosts take an hour each (a stand-in
host workflow with a durable timer), so window closes and reopenings happen in virtual time."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.workflow.fake_fleet import FakeFleet
from tests.workflow.test_approval_timeout import test_server_path
from workflows.models import (
    HOST_WORKFLOW_NAME,
    WORKFLOW_NAME,
    ApprovalDecision,
    HostPatchInput,
    HostPatchResult,
    Phase,
    RolloutInput,
    RolloutProgress,
    RolloutSummary,
)
from workflows.sandbox import workflow_runner
from workflows.system_patch import SystemPatchWorkflow
from workflows.windows import describe, trigger


@workflow.defn(name=HOST_WORKFLOW_NAME)
class HourLongHost:
    @workflow.run
    async def run(self, job: HostPatchInput) -> HostPatchResult:
        started = workflow.now()
        await workflow.sleep(timedelta(hours=1))
        return HostPatchResult(
            hostname=job.host.name,
            ok=True,
            step="done",
            started_at=started,
            finished_at=workflow.now(),
        )


async def test_hosts_start_only_inside_windows_with_the_cutoff_to_spare() -> None:
    hosts = [f"w{i}" for i in range(1, 6)]
    fleet = FakeFleet({"cluster-w": hosts})
    async with (
        await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=test_server_path(), data_converter=pydantic_data_converter
        ) as env,
        Worker(
            env.client,
            task_queue="windows-test",
            workflows=[SystemPatchWorkflow, HourLongHost],
            activities=fleet.activities(),
            workflow_runner=workflow_runner(),
        ),
    ):
        rollout = RolloutInput.model_validate(
            {
                "targetClusters": ["cluster-w"],
                "pilotHostCount": 0,
                "approverEmails": ["alice@example.com"],
                "requesterEmail": "bob@example.com",
                "updateCommand": "apt-get -y upgrade",
                "maintenanceWindows": [
                    {"cron": "0 2 * * sat", "duration": "PT4H", "timezone": "UTC"}
                ],
                "windowCutoff": "PT50M",
            }
        )
        handle = await env.client.start_workflow(
            WORKFLOW_NAME,
            rollout,
            id=f"win-{uuid.uuid4().hex[:6]}",
            task_queue="windows-test",
            result_type=RolloutSummary,
        )
        await handle.execute_update(
            "approve", ApprovalDecision(approver="alice@example.com"), result_type=str
        )
        for _ in range(50):
            waiting = await handle.query("progress", result_type=RolloutProgress)
            if waiting.waiting_for_window:
                break
            await asyncio.sleep(0.1)
        started_at = waiting.started_at
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED
    assert started_at is not None
    assert waiting.waiting_for_window is not None
    assert waiting.waiting_for_window.startswith("cluster-w: waiting for window Sat ")
    assert waiting.waiting_for_window.endswith("02:00 UTC")
    cron = trigger("0 2 * * sat", "UTC")
    first_window: datetime = cron.get_next_fire_time(None, started_at)
    second_window: datetime = cron.get_next_fire_time(first_window, first_window + timedelta(1))
    starts = {host.name: host.started_at for host in summary.hosts}

    def at(moment: datetime | None, expected: datetime) -> bool:
        # Real seconds pass while activities run, so the virtual clock drifts a little.
        return moment is not None and abs(moment - expected) < timedelta(minutes=1)

    # 02:00, 03:00, 04:00 and 05:00 leave more than the 50 min cutoff before 06:00; 06:00 does not,
    # so the last host waits a week for the next Saturday.
    for n, host in enumerate(hosts[:4]):
        assert at(starts[host], first_window + timedelta(hours=n)), (host, starts[host])
    assert at(starts["w5"], second_window), starts["w5"]
    # Chat is told about each wait (the Slack card and thread show it).
    waits = [n.waiting for name, n in fleet.notices if name == "SendWaveNotificationActivity"]
    assert [w for w in waits if w] == [
        waiting.waiting_for_window,  # before w1
        f"cluster-w: waiting for window {describe(second_window, 'UTC')}",  # before w5
    ]
