"""Recurring rollouts: Temporal Schedules on the real dev server, runs patching the real lab."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from zoneinfo import ZoneInfo

from temporalio.client import Client, ScheduleOverlapPolicy

from bot.settings import Settings
from bot.worker import WorkerParts
from lab import Lab
from tests.integration.test_rollout import ALICE, BOB, UPDATE, acli, approve, rollout, start
from workflows.models import Phase, RolloutProgress, RolloutSummary


def rollout_file(tmp_path: Path) -> Path:
    path = tmp_path / "weekly.json"
    path.write_text(
        json.dumps(
            {
                "targetClusters": ["cluster-b"],
                "pilotHostCount": 1,
                "approverEmails": [ALICE],
                "requesterEmail": BOB,
                "updateCommand": UPDATE,
                "serviceList": ["nginx"],
            }
        )
    )
    return path


async def scheduled_runs(client: Client, schedule_id: str) -> list[str]:
    description = await client.get_schedule_handle(schedule_id).describe()
    return [action.action.workflow_id for action in description.info.recent_actions]  # type: ignore[attr-defined]


async def test_schedule_with_standing_approval_patches_and_can_be_paused_and_deleted(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    tmp_path: Path,
) -> None:
    schedule_id = f"weekly-b-{uuid.uuid4().hex[:6]}"
    created = await acli(
        worker_settings,
        "schedule",
        "create",
        schedule_id,
        "--input",
        str(rollout_file(tmp_path)),
        "--cron",
        "0 3 * * sun",
        "--timezone",
        "Europe/Paris",
        "--pre-approved-by",
        ALICE,
        "--note",
        "weekly patch of cluster-b",
    )
    assert created.returncode == 0, created.stderr
    description = await temporal_client.get_schedule_handle(schedule_id).describe()
    assert description.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert description.schedule.spec.time_zone_name == "Europe/Paris"
    assert await description.memo() == {"cron": "0 3 * * sun", "timezone": "Europe/Paris"}
    next_run = description.info.next_action_times[0].astimezone(ZoneInfo("Europe/Paris"))
    assert (next_run.weekday(), next_run.hour, next_run.minute) == (6, 3, 0)  # Sunday 03:00

    assert (await acli(worker_settings, "schedule", "trigger", schedule_id)).returncode == 0
    for _ in range(100):
        runs = await scheduled_runs(temporal_client, schedule_id)
        if runs:
            break
        await asyncio.sleep(0.2)
    handle = temporal_client.get_workflow_handle(runs[0], result_type=RolloutSummary)
    summary = await asyncio.wait_for(handle.result(), timeout=120)
    assert summary.phase == Phase.SUCCEEDED  # nobody approved by hand
    progress = await handle.query("progress", result_type=RolloutProgress)
    assert progress.decided_by == ALICE
    assert progress.decision_comment is not None
    assert f"standing pre-approval in schedule {schedule_id}" in progress.decision_comment
    assert [fleet.update_count(h) for h in ["b1", "b2", "b3"]] == [1, 1, 1]

    listed = await acli(worker_settings, "schedule", "list")
    assert schedule_id in listed.stdout and "active" in listed.stdout
    assert "0 3 * * sun" in listed.stdout
    assert (await acli(worker_settings, "schedule", "pause", schedule_id)).returncode == 0
    assert (await temporal_client.get_schedule_handle(schedule_id).describe()).schedule.state.paused
    assert (await acli(worker_settings, "schedule", "delete", schedule_id)).returncode == 0
    gone = await acli(worker_settings, "schedule", "pause", schedule_id)
    assert gone.returncode == 2 and f"no schedule with id {schedule_id}" in gone.stderr


async def test_pre_approval_outside_a_schedule_is_ignored(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
) -> None:
    sneaky = rollout(["cluster-a"], preApprovedBy={"approver": ALICE})
    handle = await start(temporal_client, worker_settings, sneaky)
    await asyncio.sleep(2)
    progress = await handle.query("progress", result_type=RolloutProgress)
    assert progress.phase == Phase.AWAITING_APPROVAL
    assert all(fleet.update_count(h) == 0 for h in ["a1", "a2", "a3"])
    await approve(handle)
    assert (await handle.result()).phase == Phase.SUCCEEDED


async def test_bad_schedules_are_refused_before_anything_is_created(
    fleet: Lab, worker_settings: Settings, tmp_path: Path, temporal_client: Client
) -> None:
    path = rollout_file(tmp_path)
    bad_cron = await acli(
        worker_settings, "schedule", "create", "nope", "--input", str(path), "--cron", "0 2 * *"
    )
    assert bad_cron.returncode == 2 and "invalid cron expression" in bad_cron.stderr
    self_approved = await acli(
        worker_settings,
        "schedule",
        "create",
        "nope",
        "--input",
        str(path),
        "--cron",
        "0 2 * * sat",
        "--pre-approved-by",
        BOB,
    )
    assert self_approved.returncode == 2 and "requester" in self_approved.stderr
    # The same id twice: said in a line, not a traceback.
    taken = ["schedule", "create", "taken", "--input", str(path), "--cron", "0 2 * * sat"]
    assert (await acli(worker_settings, *taken)).returncode == 0
    again = await acli(worker_settings, *taken)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert "schedule taken already exists" in again.stderr
    await temporal_client.get_schedule_handle("taken").delete()
    ids = [entry.id async for entry in await temporal_client.list_schedules()]
    assert "nope" not in ids
