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
from typing import Any

from activities.inventory import InventoryError
from bot.slack import commands, control, decisions, schedule_commands, start
from bot.slack.context import Ack, Respond, SlackBot

log = logging.getLogger("patchpilot.slack")


async def on_patch(bot: SlackBot, ack: Ack, body: dict[str, Any], respond: Respond) -> None:
    """The `/patch` slash command (https://api.slack.com/interactivity/slash-commands): refusals,
    usage and problems in the ack (ephemeral); an empty ack for work that follows."""
    refused = bot.foreign_team(body.get("team_id"))
    if refused:
        await ack(text=f":no_entry: {refused}", response_type="ephemeral")
        return
    text = str(body.get("text") or "")
    user_id = str(body.get("user_id") or "")
    channel_id = str(body.get("channel_id") or "")
    try:
        command = commands.parse_command(text)
        if isinstance(command, commands.PatchCommand):
            plan = commands.apply_defaults(command, bot.defaults, channel_id)
            commands.precheck(plan, bot.known_clusters())
    except (commands.CommandError, InventoryError) as error:
        await ack(text=f":warning: {error}\n\n{commands.USAGE}", response_type="ephemeral")
        return
    if isinstance(command, commands.HelpCommand):
        await ack(text=commands.USAGE, response_type="ephemeral")
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
