"""Under a policy, on the workflow's own terms: two signed approvals where the policy wants two,
carried through continue-as-new and verified again by each run (the worker's real approval
activities with a real policy and real SSH signatures; the fleet's host steps are fakes)."""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncssh
from temporalio.client import Client
from temporalio.worker import Worker

from activities.inventory import InventoryActivities
from activities.policy import load_policy
from activities.trust import Trust
from bot.signing import Signer
from tests.workflow.fake_fleet import FakeFleet
from workflows import names
from workflows.host_patch import HostPatchWorkflow
from workflows.models import (
    WORKFLOW_NAME,
    ApprovalDecision,
    Phase,
    RolloutInput,
    RolloutProgress,
    RolloutSummary,
)
from workflows.sandbox import workflow_runner
from workflows.system_patch import SystemPatchWorkflow

UPDATE = "apt-get update && apt-get -y upgrade"
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"


def policy_and_signers(tmp: Path) -> tuple[Path, dict[str, Signer]]:
    signers, lines = {}, []
    for name in ("alice", "bob", "carol"):
        key = asyncssh.generate_private_key("ssh-ed25519")
        (tmp / name).write_bytes(key.export_private_key())
        signers[name] = Signer(tmp / name, name)
        public = key.export_public_key().decode().strip()
        lines.append(f'  {name}: {{email: {name}@example.com, keys: ["{public}"]}}')
    policy = tmp / "policy.yml"
    policy.write_text(
        "people:\n" + "\n".join(lines) + "\nclusters:\n  '*':\n    requesters: [bob]\n"
        f"    approvers: [alice, carol]\n    minApprovals: 2\n"
        f'    updateProfiles: {{security: "{UPDATE}"}}\n'
    )
    return policy, signers


async def test_two_signed_approvals_survive_continue_as_new(
    temporal_client: Client, tmp_path: Path
) -> None:
    policy, signers = policy_and_signers(tmp_path)
    prefix = uuid.uuid4().hex[:6]
    hosts = [f"{prefix}-h{i:02}" for i in range(1, 25)]
    fleet = FakeFleet({f"{prefix}-c": hosts[:12], f"{prefix}-d": hosts[12:]})
    dev_mode = set(names.TRUST_ACTIVITIES)
    activities = [
        a
        for a in fleet.activities()
        if getattr(a, "__temporal_activity_definition").name not in dev_mode
    ]
    queue = f"wf-policy-{uuid.uuid4().hex[:8]}"
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": [f"{prefix}-c", f"{prefix}-d"],
            "pilotHostCount": 1,
            "requesterEmail": BOB,
            "updateCommand": UPDATE,
            "maxConcurrency": 3,
            "historyEventBudget": 200,
        }
    )
    async with Worker(
        temporal_client,
        task_queue=queue,
        workflows=[SystemPatchWorkflow, HostPatchWorkflow],
        activities=[*activities, *Trust(load_policy(policy), InventoryActivities(None)).all()],
        workflow_runner=workflow_runner(),
    ):
        handle = await temporal_client.start_workflow(
            WORKFLOW_NAME,
            rollout,
            id=f"rollout-{prefix}",
            task_queue=queue,
            result_type=RolloutSummary,
        )
        progress = await handle.query("progress", result_type=RolloutProgress)
        while progress.digest is None:
            progress = await handle.query("progress", result_type=RolloutProgress)
        for who in ("alice", "carol"):
            proof = signers[who].proof(handle.id, "approve", f"{who}@example.com", progress.digest)
            decision = ApprovalDecision(approver=f"{who}@example.com", proof=proof)
            await handle.execute_update("approve", decision, result_type=str)
        summary = await handle.result()
        final = await handle.query("progress", result_type=RolloutProgress)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 24, summary
    assert sorted(fleet.host_calls(names.PERFORM_UPDATE)) == hosts
    assert final.approved_by == [ALICE, CAROL]
    runs = [run async for run in temporal_client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) >= 2, "a 24-host rollout with a 200-event budget continues as new"
