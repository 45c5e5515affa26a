"""Recurring rollouts as Temporal Schedules of SystemPatchWorkflow (overlap policy: skip).

The one place that talks to Temporal about schedules, for the CLI's `patchpilot schedule …` and
the Slack bot's `/patch schedule …`. Errors are Temporal's own `RPCError` (a NOT_FOUND status for
an unknown schedule id); the callers word them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from workflows.models import WORKFLOW_NAME, RolloutInput
from workflows.proof import StandingGrant
from workflows.windows import trigger

ACTIONS = ("pause", "unpause", "trigger", "delete")


class ScheduleExists(Exception):
    """A schedule with this id exists already."""


@dataclass(frozen=True)
class ScheduleRow:
    """One schedule as listed: the cron as written with its IANA time zone, its state and note,
    its next (at most 3, UTC) and recent (at most 3 workflow ids) runs, and its overlap policy."""

    schedule_id: str
    cron: str
    timezone: str
    paused: bool
    note: str
    next_runs: list[datetime]
    recent_runs: list[str]
    overlap: str


def check_cron(cron: str, timezone: str) -> None:
    """Same rules as maintenance windows: ValueError naming what is wrong."""
    trigger(cron, timezone)


async def create(
    client: Client,
    schedule_id: str,
    rollout: RolloutInput,
    *,
    cron: str,
    timezone: str,
    task_queue: str,
    note: str = "",
) -> None:
    """Create schedule `schedule_id` that starts `rollout` on `cron` in `timezone`.

    Raises ValueError for a bad cron or time zone, ScheduleExists when the id is taken,
    `RPCError` when Temporal refuses otherwise.
    """
    check_cron(cron, timezone)
    try:
        await client.create_schedule(
            schedule_id,
            Schedule(
                action=ScheduleActionStartWorkflow(
                    WORKFLOW_NAME, rollout, id=f"{schedule_id}-run", task_queue=task_queue
                ),
                spec=ScheduleSpec(cron_expressions=[cron], time_zone_name=timezone),
                # A run still going (e.g. waiting for its approval) makes the next one skip.
                policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
                state=ScheduleState(note=note or "created by patchpilot"),
            ),
            # The server keeps cron specs only as calendars; the memo keeps what was written.
            memo={"cron": cron, "timezone": timezone},
        )
    except ScheduleAlreadyRunningError:  # temporalio's word for "the id is taken"
        raise ScheduleExists(f"schedule {schedule_id} already exists") from None


async def row(schedule_id: str, description: ScheduleDescription) -> ScheduleRow:
    """The listing row of a described schedule."""
    spec = description.schedule.spec
    state = description.schedule.state
    memo = await description.memo()
    policy = description.schedule.policy
    recent = [
        getattr(action.action, "workflow_id", "?") for action in description.info.recent_actions
    ]
    return ScheduleRow(
        schedule_id=schedule_id,
        cron=str(memo.get("cron") or ", ".join(spec.cron_expressions) or "(calendar spec)"),
        timezone=str(memo.get("timezone") or spec.time_zone_name or "UTC"),
        paused=state.paused,
        note=state.note or "",
        next_runs=list(description.info.next_action_times[:3]),
        recent_runs=recent[-3:],
        overlap=policy.overlap.name,
    )


async def list_rows(client: Client) -> list[ScheduleRow]:
    """Every schedule of the namespace, described (one RPC each)."""
    rows = []
    async for entry in await client.list_schedules():
        description = await client.get_schedule_handle(entry.id).describe()
        rows.append(await row(entry.id, description))
    return rows


async def act(client: Client, schedule_id: str, action: str, note: str = "") -> None:
    """Pause, unpause, trigger (start one run now) or delete a schedule.

    `note` is recorded with a pause or unpause (a default says it was patchpilot). Raises
    ValueError for an action not in `ACTIONS`, `RPCError` (NOT_FOUND for an unknown id).
    """
    handle = client.get_schedule_handle(schedule_id)
    if action == "pause":
        await handle.pause(note=note or "paused with patchpilot")
    elif action == "unpause":
        await handle.unpause(note=note or "unpaused with patchpilot")
    elif action == "trigger":
        await handle.trigger()
    elif action == "delete":
        await handle.delete()
    else:
        raise ValueError(f"unknown schedule action {action!r}; choose from {', '.join(ACTIONS)}")


async def stored_rollout(client: Client, schedule_id: str) -> RolloutInput:
    """The rollout input schedule `schedule_id` starts each run with. Raises `RPCError`
    (NOT_FOUND for an unknown id), ValueError when the schedule does not start a rollout."""
    description = await client.get_schedule_handle(schedule_id).describe()
    return await _rollout_of(client, description.schedule)


async def _rollout_of(client: Client, schedule: Schedule) -> RolloutInput:
    action = schedule.action
    if not isinstance(action, ScheduleActionStartWorkflow) or action.workflow != WORKFLOW_NAME:
        raise ValueError("this schedule does not start a PatchPilot rollout")
    args: list[Any] = list(action.args)
    if args and isinstance(args[0], Payload):
        args = await client.data_converter.decode(args[:1], [RolloutInput])
    return RolloutInput.model_validate(args[0])


async def add_grant(client: Client, schedule_id: str, grant: StandingGrant) -> RolloutInput:
    """Store `grant` in the schedule's rollout input (replacing that approver's earlier grant);
    the input as it is now. Raises as `stored_rollout`."""
    stored: list[RolloutInput] = []

    async def update(change: ScheduleUpdateInput) -> ScheduleUpdate:
        schedule = change.description.schedule
        rollout = await _rollout_of(client, schedule)
        kept = [g for g in rollout.standing_grants if g.approver != grant.approver]
        rollout = rollout.model_copy(update={"standing_grants": [*kept, grant]})
        assert isinstance(schedule.action, ScheduleActionStartWorkflow)
        schedule.action.args = [rollout]
        stored.append(rollout)
        return ScheduleUpdate(schedule=schedule)

    await client.get_schedule_handle(schedule_id).update(update)
    return stored[-1]
