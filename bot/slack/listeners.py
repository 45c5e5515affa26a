"""The listeners: what is answered in the ack, and what is handed to the background after it.

Slack wants an ack within 3 seconds
(https://api.slack.com/interactivity/handling#acknowledgment_response), and the app is built with
`process_before_response=True`, so the ack goes out only when the listener returns. A listener
therefore does only what needs neither Slack's Web API nor Temporal before it returns: the
workspace check, the command's syntax, the clusters against the inventory, and the service names
and update command through RolloutInput. A malformed `/patch` is answered in the ack itself,
ephemerally; anything slower runs after it, through `SlackBot.after_ack` / `SlackBot.spawn`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any

from activities.inventory import InventoryError
from bot.slack import commands, control, decisions, modal, schedule_commands, start
from bot.slack.context import Ack, Respond, SlackBot, problem_reply
from bot.slack.text import from_slack, mrkdwn

log = logging.getLogger("patchpilot.slack")


async def on_patch(bot: SlackBot, ack: Ack, body: dict[str, Any], respond: Respond) -> None:
    """The `/patch` slash command (https://api.slack.com/interactivity/slash-commands): refusals,
    usage and problems in the ack (ephemeral); an empty ack for work that follows."""
    refused = bot.foreign_team(body.get("team_id"))
    if refused:
        await ack(text=f":no_entry: {mrkdwn(refused)}", response_type="ephemeral")
        return
    # Slack escapes what was typed and formats mentions; read it back once, here at the edge.
    text = from_slack(str(body.get("text") or ""))
    user_id = str(body.get("user_id") or "")
    channel_id = str(body.get("channel_id") or "")
    if not text.strip():
        await _open_modal(bot, ack, body, channel_id)
        return
    try:
        wanted = control.parse_control(text)
    except commands.CommandError as error:
        await ack(text=problem_reply(error), response_type="ephemeral")
        return
    if wanted is not None:
        await ack()
        bot.after_ack(respond, control.answer_control(bot, wanted, user_id, respond))
        return
    try:
        command = commands.parse_command(text)
        if isinstance(command, commands.PatchCommand):
            plan = commands.apply_defaults(command, bot.defaults, channel_id)
            commands.precheck(plan, bot.known_clusters())
    except (commands.CommandError, InventoryError) as error:
        await ack(text=problem_reply(error), response_type="ephemeral")
        return
    if isinstance(command, commands.HelpCommand):
        await ack(text=mrkdwn(commands.USAGE), response_type="ephemeral")
        return
    await ack()
    work: Awaitable[None]
    if isinstance(command, commands.PatchCommand):
        work = start.start_rollout(bot, plan, user_id, channel_id, respond)
    elif isinstance(command, commands.StatusCommand):
        work = control.status(bot, command.rollout_id, respond)
    elif isinstance(command, commands.ListCommand):
        work = control.list_rollouts(bot, respond)
    elif isinstance(command, commands.CancelCommand):
        work = control.cancel(bot, command.rollout_id, user_id, respond)
    else:
        work = schedule_commands.schedule(bot, command, user_id, channel_id, respond)
    bot.after_ack(respond, work)


async def _open_modal(bot: SlackBot, ack: Ack, body: dict[str, Any], channel_id: str) -> None:
    """`/patch` alone: the start modal (views.open within the trigger's 3 seconds, after the
    ack); without a readable inventory, the problem instead."""
    try:
        known = bot.known_clusters()
    except InventoryError as error:
        await ack(text=problem_reply(error), response_type="ephemeral")
        return
    await ack()
    view = modal.start_view(channel_id, sorted(known) if known else None)
    bot.spawn(bot.client.views_open(trigger_id=str(body.get("trigger_id") or ""), view=view))


async def on_submission(bot: SlackBot, ack: Ack, body: dict[str, Any]) -> None:
    """The start modal submitted: refused field by field (`response_action: errors`) with the
    command line's own checks, or closed and the rollout started as `/patch <cluster> …` does."""
    view = body.get("view") or {}
    user_id = str((body.get("user") or {}).get("id") or "")
    channel_id = modal.channel_of(view)
    refused = bot.foreign_team((body.get("team") or {}).get("id"))
    if refused:
        await ack(response_action="errors", errors={modal.CLUSTERS: refused})
        return
    values = (view.get("state") or {}).get("values") or {}
    try:
        plan = modal.plan_of(values, bot.defaults, channel_id, bot.known_clusters())
    except (commands.CommandError, InventoryError) as error:
        await ack(response_action="errors", errors=modal.field_errors(error))
        return
    await ack()

    async def respond(text: str, **_: Any) -> None:
        await bot.client.chat_postEphemeral(channel=channel_id, user=user_id, text=text)

    bot.after_ack(respond, start.start_rollout(bot, plan, user_id, channel_id, respond))


async def on_control(bot: SlackBot, action: str, ack: Ack, body: dict[str, Any]) -> None:
    """A Pause, Resume or Abort click on a card (`action`: the update): acked at once; the
    answer follows ephemerally, in the card's thread."""
    await ack()
    click = decisions.Click.of(body)
    click = replace(click, thread_ts=click.thread_ts or click.message_ts)
    refused = bot.foreign_team(click.team_id)
    if refused:
        bot.spawn(decisions.tell(bot, click, f":no_entry: {mrkdwn(refused)}"))
        return
    wanted = control.ControlCommand(action, click.rollout_id)
    bot.spawn(control.click_control(bot, wanted, click))


async def on_decision(bot: SlackBot, kind: str, ack: Ack, body: dict[str, Any]) -> None:
    """An Approve or Reject click (`kind` "approve" / "reject"): acked at once with no change to
    the message; the decision, or the refusal of another workspace, follows ephemerally."""
    await ack()
    click = decisions.Click.of(body)
    refused = bot.foreign_team(click.team_id)
    if refused:
        log.warning("refused a %s click from another workspace: %s", kind, refused)
        bot.spawn(decisions.tell(bot, click, f":no_entry: {refused}"))
        return
    bot.spawn(decisions.decide(bot, kind, click))
