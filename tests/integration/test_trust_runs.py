"""Approvals count only in the run of the rollout they were given in (activities/lineage.py):
signed approvals copied out of Temporal's history and sent again, to the same rollout id started
anew or in a host workflow started on its own, get nothing run. Real Temporal dev server, a real
worker under a real policy with real keys, the sshd lab; "nothing ran" is each host's own log.

Found by a reviewer attacking the trust model with a plain Temporal client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from activities.inventory import InventoryActivities
from activities.lineage import SIGNED_BEFORE_START
from bot.settings import Settings
from lab import Lab
from tests.integration import test_trust
from tests.integration.test_trust import ALICE, CAROL, Keys, asking, request, signed, start
from tests.support import FLEET
from workflows.models import (
    HOST_WORKFLOW_NAME,
    WORKFLOW_NAME,
    ApprovalDecision,
    HostJob,
    HostPatchInput,
    HostPatchResult,
    RolloutSummary,
)

keys = test_trust.keys
policy_settings = test_trust.policy_settings
guarded = test_trust.guarded
# A window that opens on 1 January: an approved rollout then waits, with nothing run.
JANUARY = [{"cron": "0 0 1 1 *", "duration": 3600, "timezone": "UTC"}]


async def approvals_in_history(handle: WorkflowHandle) -> list[ApprovalDecision]:
    """The signed decisions the `approve` updates carried, as anyone with read access to the
    workflow's history can copy them."""
    found = []
    async for event in handle.fetch_history_events():
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            continue
        accepted = event.workflow_execution_update_accepted_event_attributes.accepted_request
        if accepted.input.name == "approve":
            found += [
                ApprovalDecision.model_validate(json.loads(payload.data))
                for payload in accepted.input.args.payloads
            ]
    return found


async def approved_and_waiting(
    client: Client, settings: Settings, keys: Keys
) -> WorkflowHandle[Any, RolloutSummary]:
    """A rollout of cluster-a approved by alice and carol, waiting for January's window."""
    handle = await start(
        client,
        settings,
        request(updateProfile="security", approvalTimeout=300, maintenanceWindows=JANUARY),
    )
    digest = await asking(client, handle)
    for who in (ALICE, CAROL):
        await handle.execute_update("approve", signed(keys, handle, who, digest), result_type=str)
    return handle


def untouched(fleet: Lab) -> bool:
    return all(fleet.command_log(host) == [] for host in FLEET["cluster-a"])


async def test_approvals_of_a_cancelled_rollout_do_not_count_for_it_started_again(
    fleet: Lab, guarded: None, temporal_client: Client, policy_settings: Settings, keys: Keys
) -> None:
    first = await approved_and_waiting(temporal_client, policy_settings, keys)
    await asyncio.sleep(SIGNED_BEFORE_START.total_seconds() + 1)  # approved, waiting: then
    await first.cancel()  # an operator stops it before its window: nothing may run
    with contextlib.suppress(Exception):
        await asyncio.wait_for(first.result(), 60)
    stolen = await approvals_in_history(first)
    assert len(stolen) == 2
    # Someone with Temporal access starts it again under the same id, no pilot, all at once,
    # in a window open now, and sends the copied approvals.
    now = [{"cron": "* * * * *", "duration": 86400, "timezone": "UTC"}]
    again: WorkflowHandle[Any, RolloutSummary] = await temporal_client.start_workflow(
        WORKFLOW_NAME,
        request(
            updateProfile="security",
            approvalTimeout=300,
            maintenanceWindows=now,
            pilotHostCount=0,
            maxConcurrency=3,
        ),
        id=first.id,
        task_queue=policy_settings.task_queue,
        result_type=RolloutSummary,
    )
    await asking(temporal_client, again)
    for decision in stolen:
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await again.execute_update("approve", decision, result_type=str)
        said = str(getattr(refused.value.cause, "message", refused.value.cause))
        assert f"{decision.approver}'s approval was signed at" in said
        assert f"before this run of rollout {first.id} began" in said
    await again.terminate(reason="test over")
    assert untouched(fleet)


async def test_a_host_workflow_started_on_its_own_runs_nothing_even_with_copied_approvals(
    fleet: Lab, guarded: None, temporal_client: Client, policy_settings: Settings, keys: Keys
) -> None:
    real = await approved_and_waiting(temporal_client, policy_settings, keys)
    stolen = await approvals_in_history(real)
    assert len(stolen) == 2
    rollout = request(updateProfile="security", approvalTimeout=300, maintenanceWindows=JANUARY)
    job = HostJob.from_rollout(real.id, rollout).model_copy(update={"approvals": stolen})
    host = InventoryActivities(policy_settings.inventory).clusters(None)["cluster-a"][0][2]
    direct = await temporal_client.start_workflow(
        HOST_WORKFLOW_NAME,
        HostPatchInput(job=job, host=host),
        id=f"direct-{uuid.uuid4().hex[:6]}",
        task_queue=policy_settings.task_queue,
        result_type=HostPatchResult,
    )
    result = await asyncio.wait_for(direct.result(), 120)
    assert not result.ok
    assert "its workflow was started by no rollout (it was started on its own)" in (
        result.failure_reason or ""
    ), result.failure_reason
    await real.terminate(reason="test over")
    assert untouched(fleet)
