"""The rollout facade (`bot.rollouts.Rollouts`) that every front end uses, on the real Temporal dev
server with a real worker, OpenBao and the sshd lab: what it answers, and how its refusals read."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable

import pytest
from temporalio.client import Client

from bot.rollouts import Problem, RolloutError, Rollouts, new_rollout_id
from bot.settings import Settings
from bot.worker import WorkerParts
from lab import Lab
from tests.integration.test_rollout import ALICE, BOB, acli, commands, rollout
from workflows.models import ApprovalDecision, HostProgress, HostState, Phase

EVE = "eve@example.com"


def test_rollout_ids_are_readable_ordered_and_unique() -> None:
    made = new_rollout_id(["cluster-a", "cluster-b"])
    assert re.fullmatch(r"patch-cluster-a-cluster-b-\d{8}-\d{6}-[0-9a-f]{8}", made), made
    assert re.fullmatch(r"demo-\d{8}-\d{6}-[0-9a-f]{8}", new_rollout_id([], prefix="demo"))
    assert len(new_rollout_id(["x" * 60])) == len("patch-") + 40 + len("-20261130-210200-") + 8
    assert len({new_rollout_id(["c"]) for _ in range(200)}) == 200


async def until(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Ask `probe` every 0.1 s until it says yes; AssertionError naming `what` after `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await probe():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        await asyncio.sleep(0.1)


async def awaiting_approval(rollouts: Rollouts, rollout_id: str) -> None:
    async def waits() -> bool:
        try:
            progress = await rollouts.progress(rollout_id, steps=False)
        except RolloutError:
            return False  # its first workflow task has not run yet
        return progress.phase == Phase.AWAITING_APPROVAL

    await until(waits, f"{rollout_id} waits for its approval")


async def test_a_rollout_that_failed_before_its_approval_says_how_it_ended(
    fleet: Lab, worker: WorkerParts, temporal_client: Client, worker_settings: Settings
) -> None:
    rollouts = Rollouts(temporal_client, worker_settings.task_queue)
    handle = await rollouts.start(rollout(["cluster-z"]))
    summary = await rollouts.result(handle.id)
    assert summary.phase == Phase.FAILED
    assert "cannot resolve cluster cluster-z" in summary.message

    # Temporal says NOT_FOUND for an update to a finished workflow; the facade tells the truth.
    with pytest.raises(RolloutError) as ended:
        await rollouts.decide(handle.id, ApprovalDecision(approver=ALICE), approve=True)
    assert ended.value.problem == Problem.ENDED
    message = str(ended.value)
    assert message.startswith(f"rollout {handle.id} has already finished (failed: cannot resolve")
    assert message.endswith("; nothing to decide"), message
    assert "no rollout with id" not in message
    # Temporal would accept a cancel of the ended rollout and change nothing: the facade says so.
    with pytest.raises(RolloutError) as too_late:
        await rollouts.cancel(handle.id)
    assert too_late.value.problem == Problem.ENDED
    assert str(too_late.value).startswith(f"rollout {handle.id} has already finished (failed: ")
    assert str(too_late.value).endswith("; nothing to cancel")
    # The CLI says the same, where it said "no rollout with id" before the facade.
    late = await acli(worker_settings, "approve", handle.id, "--as", ALICE)
    assert late.returncode == 2
    said = " ".join(late.stderr.split())
    assert f"rollout {handle.id} has already finished (failed: cannot resolve" in said, said

    status = await rollouts.status(handle.id)
    assert status.status == "FAILED" and not status.running
    assert status.progress.phase == Phase.FAILED
    assert all(commands(fleet, h.name) == [] for h in fleet.hosts)


async def test_an_unknown_id_is_not_found_by_every_request(
    worker: WorkerParts, temporal_client: Client, worker_settings: Settings
) -> None:
    rollouts = Rollouts(temporal_client, worker_settings.task_queue)
    missing = f"no-such-rollout-{uuid.uuid4().hex[:6]}"
    requests = {
        "decide": rollouts.decide(missing, ApprovalDecision(approver=ALICE), approve=False),
        "cancel": rollouts.cancel(missing),
        "progress": rollouts.progress(missing),
        "status": rollouts.status(missing),
        "result": rollouts.result(missing),
    }
    for name, request in requests.items():
        with pytest.raises(RolloutError) as refused:
            await request
        assert refused.value.problem == Problem.NOT_FOUND, name
        assert str(refused.value) == f"no rollout with id {missing}", name


async def test_refused_decisions_carry_the_validators_reason_and_the_rollout_waits(
    fleet: Lab, worker: WorkerParts, temporal_client: Client, worker_settings: Settings
) -> None:
    rollouts = Rollouts(temporal_client, worker_settings.task_queue)
    rollout_id = new_rollout_id(["cluster-a"], prefix="it-facade")
    handle = await rollouts.start(rollout(["cluster-a"]), rollout_id)
    assert handle.id == rollout_id
    with pytest.raises(RolloutError) as taken:
        await rollouts.start(rollout(["cluster-a"]), rollout_id)
    assert taken.value.problem == Problem.REFUSED
    assert str(taken.value) == f"a rollout with id {rollout_id} already exists"

    await awaiting_approval(rollouts, rollout_id)
    for who, reason in ((EVE, "is not an approver"), (BOB, "cannot approve it")):
        with pytest.raises(RolloutError) as refused:
            await rollouts.decide(rollout_id, ApprovalDecision(approver=who), approve=True)
        assert refused.value.problem == Problem.REFUSED, who
        assert reason in str(refused.value), str(refused.value)
    assert (await rollouts.status(rollout_id)).running

    answer = await rollouts.decide(
        rollout_id, ApprovalDecision(approver=ALICE, comment="not today"), approve=False
    )
    assert answer == f"rejected by {ALICE}"
    summary = await rollouts.result(rollout_id)
    assert summary.phase == Phase.REJECTED
    assert all(commands(fleet, h.name) == [] for h in fleet.hosts)

    async def listed() -> bool:  # once visibility has caught up
        rows = await rollouts.list(f"WorkflowId='{rollout_id}'")
        return [(r.rollout_id, r.status) for r in rows] == [(rollout_id, "completed")]

    await until(listed, f"{rollout_id} listed as completed")


async def test_progress_fills_in_the_step_of_a_host_in_flight(
    fleet: Lab, worker: WorkerParts, temporal_client: Client, worker_settings: Settings
) -> None:
    fleet.set_fault("b1", "update-hang")
    rollouts = Rollouts(temporal_client, worker_settings.task_queue)
    handle = await rollouts.start(rollout(["cluster-b"], updateTimeout=10))
    await awaiting_approval(rollouts, handle.id)
    await rollouts.decide(handle.id, ApprovalDecision(approver=ALICE), approve=True)

    seen: list[HostProgress] = []

    async def b1_updating() -> bool:
        progress = await rollouts.progress(handle.id)
        seen.append(next(h for h in progress.hosts() if h.name == "b1"))
        return seen[-1].state == HostState.RUNNING and seen[-1].step == "update"

    await until(b1_updating, "b1 seen at its update step (from its host workflow)")
    assert seen[-1].in_maintenance

    summary = await rollouts.result(handle.id)  # the hung update is killed after 10 s
    assert summary.phase == Phase.FAILED and summary.failed == 1
