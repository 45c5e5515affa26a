"""`/patch schedule …` after the ack: recurring rollouts as Temporal Schedules (bot/schedules.py).

Creating a schedule and its result are posted in the channel (`in_channel`), so that everyone
there knows a recurring rollout exists or changed; listing and refusals are ephemeral.
Every run of a schedule is a rollout of its own and asks its approvers, as a `/patch` does.
"""

from __future__ import annotations

from temporalio.client import ScheduleHandle
from temporalio.service import RPCError, RPCStatusCode

from bot import schedules
from bot.slack import trust
from bot.slack.commands import (
    CommandError,
    ScheduleCommand,
    precheck,
    rollout_input,
)
from bot.slack.context import Respond, SlackBot
from workflows.models import RolloutInput


async def schedule(
    bot: SlackBot,
    command: ScheduleCommand,
    user_id: str,
    channel_id: str,
    respond: Respond,
    team_id: str | None = None,
) -> None:
    """Run `command` for Slack user `user_id` of workspace `team_id`. Raises CommandError (a
    bad cron, an unknown schedule, a refused create, under the approval policy what it
    refuses) and IdentityError, which the caller tells the user."""
    if command.action == "list":
        await _list(bot, respond)
    elif command.action == "create":
        await _create(bot, command, user_id, (channel_id, team_id), respond)
    else:
        await _change(bot, command, user_id, respond, team_id)


async def _list(bot: SlackBot, respond: Respond) -> None:
    rows = await schedules.list_rows(bot.temporal)
    lines = [
        f"• `{row.schedule_id}` `{row.cron}` ({row.timezone}), "
        f"{'paused' if row.paused else 'active'}"
        + (f", next {row.next_runs[0]:%a %Y-%m-%d %H:%M} UTC" if row.next_runs else "")
        for row in rows
    ]
    await respond(text="\n".join(lines) or "No schedules.", response_type="ephemeral")


async def _create(
    bot: SlackBot,
    command: ScheduleCommand,
    user_id: str,
    where: tuple[str, str | None],
    respond: Respond,
) -> None:
    schedule_id = str(command.schedule_id)
    channel_id, team_id = where
    assert command.patch is not None and command.cron is not None
    plan = trust.plan_of(bot, command.patch, channel_id)  # the policy's profile, approvers
    precheck(plan, bot.known_clusters())
    try:
        schedules.check_cron(command.cron, command.timezone)
    except ValueError as error:
        raise CommandError(str(error)) from None
    people = await trust.people(bot, plan, user_id, team_id)
    rollout = rollout_input(plan, people.requester, people.approver_emails)
    refused = await trust.refusal(bot, rollout)
    if refused:
        raise CommandError(f"refused by the approval policy: {refused}; no schedule was created")
    try:
        await schedules.create(
            bot.temporal,
            schedule_id,
            rollout,
            cron=command.cron,
            timezone=command.timezone,
            task_queue=bot.settings.task_queue,
            note=f"created in Slack by {people.requester}",
        )
    except schedules.ScheduleExists:
        raise CommandError(
            f"schedule {schedule_id} already exists; /patch schedule list shows it"
        ) from None
    except RPCError as error:
        raise CommandError(f"cannot create schedule {schedule_id}: {error.message}") from None
    await respond(
        text=f":calendar: <@{user_id}> created schedule `{schedule_id}`: "
        f"`{command.cron}` ({command.timezone}) patches {', '.join(plan.clusters)}; "
        "every run asks its approvers.",
        response_type="in_channel",
    )


async def _change(
    bot: SlackBot, command: ScheduleCommand, user_id: str, respond: Respond, team: str | None
) -> None:
    """pause, unpause, trigger or delete: only the schedule's requester or approvers may
    (under the approval policy, by the e-mail of the verified person, `trust.verified_person`)."""
    schedule_id = str(command.schedule_id)
    if bot.policy is not None:
        email = (await trust.verified_person(bot, user_id, team)).email
    else:
        email = await bot.directory.email_of(user_id)
    handle = bot.temporal.get_schedule_handle(schedule_id)
    if email not in await _people_of(bot, handle):
        await respond(
            text=f":no_entry: only the schedule's requester or approvers may "
            f"{command.action} `{schedule_id}`",
            response_type="ephemeral",
        )
        return
    if command.action == "pause":
        await handle.pause(note=f"paused in Slack by {email}")
    elif command.action == "unpause":
        await handle.unpause(note=f"unpaused in Slack by {email}")
    elif command.action == "trigger":
        await handle.trigger()
    else:
        await handle.delete()
    await respond(
        text=f":calendar: <@{user_id}>: {command.action} `{schedule_id}` done",
        response_type="in_channel",
    )


async def _people_of(bot: SlackBot, handle: ScheduleHandle) -> set[str]:
    """The requester and approvers of the rollout a schedule starts (from its stored input)."""
    try:
        description = await handle.describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise CommandError(f"no schedule with id {handle.id}") from None
        raise
    action = description.schedule.action
    stored = await bot.temporal.data_converter.decode(
        list(getattr(action, "args", [])), [RolloutInput]
    )
    if stored and isinstance(stored[0], RolloutInput):
        return {stored[0].requester_email, *stored[0].approver_emails}
    return set()
