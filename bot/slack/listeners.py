"""The listeners: what is answered in the ack, and what is handed to the background after it.

Slack wants an ack within 3 seconds
(https://api.slack.com/interactivity/handling#acknowledgment_response), and the app is built with
`process_before_response=True`, so the ack goes out only when the listener returns. A listener
therefore does only what needs neither Slack's Web API nor Temporal before it returns: the
workspace check, the command's syntax, the clusters (and a `limit=` pattern) against the
inventory, and the service names and update command through RolloutInput. A malformed `/patch`
is answered in the ack itself, ephemerally; anything slower runs after it, through
`SlackBot.after_ack` / `SlackBot.spawn`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from slack_sdk.errors import SlackApiError

from activities.inventory import InventoryError
from bot.rollouts import RolloutError
from bot.slack import (
    commands,
    control,
    decisions,
    modal,
    package_blocks,
    schedule_commands,
    selection,
    skip,
    start,
    trust,
    what_runs,
)
from bot.slack.client import slack_error
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
        answer = control.answer_control(bot, wanted, user_id, respond, body.get("team_id"))
        bot.after_ack(respond, answer)
        return
    try:
        command = commands.parse_command(text)
        if isinstance(command, commands.PatchCommand):
            plan = trust.plan_of(bot, command, channel_id)  # the policy's profile, approvers
            commands.precheck(plan, bot.known_clusters())
            if plan.limit is not None:
                # Refused in the ack, before anything starts: a limit that empties a cluster
                # would only stop the rollout once the worker resolves it.
                refused = await asyncio.to_thread(bot.limit_refusal, plan.clusters, plan.limit)
                if refused:
                    raise commands.CommandError(refused)
    except (commands.CommandError, InventoryError) as error:
        await ack(text=problem_reply(error), response_type="ephemeral")
        return
    if isinstance(command, commands.HelpCommand):
        await ack(text=mrkdwn(commands.USAGE), response_type="ephemeral")
        return
    await ack()
    work: Awaitable[None]
    if isinstance(command, commands.PatchCommand):
        team = body.get("team_id")
        work = start.start_rollout(bot, plan, user_id, channel_id, respond, team_id=team)
    elif isinstance(command, commands.StatusCommand):
        asker = control.Asker(user_id, body.get("team_id"), channel_id)
        work = control.status(bot, command.rollout_id, respond, asker)
    elif isinstance(command, commands.ListCommand):
        asker = control.Asker(user_id, body.get("team_id"), channel_id)
        work = control.list_rollouts(bot, respond, asker)
    elif isinstance(command, commands.CancelCommand):
        work = control.cancel(bot, command.rollout_id, user_id, respond, body.get("team_id"))
    else:
        team = body.get("team_id")
        work = schedule_commands.schedule(bot, command, user_id, channel_id, respond, team)
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
    view = modal.start_view(channel_id, sorted(known) if known else None, modal.profiles(bot))
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
        plan = modal.plan_of(values, bot, channel_id, bot.known_clusters())
    except (commands.CommandError, InventoryError) as error:
        await ack(response_action="errors", errors=modal.field_errors(error))
        return
    await ack()

    async def respond(text: str, **_: Any) -> None:
        await bot.client.chat_postEphemeral(channel=channel_id, user=user_id, text=text)

    team = (body.get("team") or {}).get("id")
    work = start.start_rollout(bot, plan, user_id, channel_id, respond, team_id=team)
    bot.after_ack(respond, work)


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


async def on_skip_choice(bot: SlackBot, ack: Ack, body: dict[str, Any]) -> None:
    """A host picked in the card's "Skip a host…" menu: acked at once; the skip is sent for the
    person who picked it and answered ephemerally in the card's thread."""
    await ack()
    choice = skip.chosen(body)
    click = decisions.Click.of(body)
    await _skip(bot, choice, click.user_id, click.team_id)


async def on_skip_open(bot: SlackBot, ack: Ack, body: dict[str, Any]) -> None:
    """The card's "Skip a host…" button (a rollout with more pending hosts than a menu holds):
    the skip modal, opened with the click's trigger (valid 3 s) right after the ack."""
    await ack()
    click = decisions.Click.of(body)
    click = replace(click, thread_ts=click.thread_ts or click.message_ts)
    refused = bot.foreign_team(click.team_id)
    if refused:
        bot.spawn(decisions.tell(bot, click, f":no_entry: {mrkdwn(refused)}"))
        return
    view = skip.skip_view(click.rollout_id, click.channel_id, click.thread_ts or "")
    bot.spawn(bot.client.views_open(trigger_id=str(body.get("trigger_id") or ""), view=view))


async def on_skip_submission(bot: SlackBot, ack: Ack, body: dict[str, Any]) -> None:
    """The skip modal submitted: closed at once; the skip is answered in the card's thread."""
    await ack()
    choice = skip.submitted(body.get("view") or {})
    user_id = str((body.get("user") or {}).get("id") or "")
    await _skip(bot, choice, user_id, (body.get("team") or {}).get("id"))


async def _skip(bot: SlackBot, choice: skip.SkipChoice, user_id: str, team: str | None) -> None:
    click = decisions.Click(
        rollout_id=choice.rollout_id,
        user_id=user_id,
        team_id=team,
        channel_id=choice.channel_id,
        message_ts=choice.thread_ts,
        thread_ts=choice.thread_ts or None,
    )
    refused = bot.foreign_team(team)
    if refused:
        bot.spawn(decisions.tell(bot, click, f":no_entry: {mrkdwn(refused)}"))
        return
    if not choice.rollout_id or not choice.host:
        bot.spawn(decisions.tell(bot, click, ":warning: skip needs a rollout and a host"))
        return
    wanted = control.ControlCommand("skip", choice.rollout_id, choice.host, choice.reason)
    bot.spawn(control.click_control(bot, wanted, click))


async def on_show_hosts(bot: SlackBot, ack: Ack, body: dict[str, Any]) -> None:
    """A "Show all N hosts" click on an approval request: the modal with every selected host."""
    await _open_view(bot, ack, body, _hosts_view, "the selected hosts")


async def on_show_runs(bot: SlackBot, ack: Ack, body: dict[str, Any]) -> None:
    """A "Show everything that runs" click: the modal with the whole command and every script."""
    await _open_view(bot, ack, body, _runs_view, "what runs")


async def on_show_packages(bot: SlackBot, ack: Ack, body: dict[str, Any]) -> None:
    """A "Packages" click in the thread: the modal with the hosts' whole package reports."""
    await _open_view(bot, ack, body, _packages_view, "the package report")


async def _packages_view(bot: SlackBot, value: str) -> dict[str, Any]:
    """The hosts the button names (each read by its workflow id, so a host that just ended is
    there), else every ended host of the rollout; a dry run's from its summary."""
    rollout_id, hosts, dry_run = package_blocks.read_value(value)
    if dry_run:
        summary = await bot.rollouts.result(rollout_id)
        found = [package_blocks.HostPackages.of_inspection(f) for f in summary.dry_run or []]
        return package_blocks.packages_view(rollout_id, found, dry_run=True)
    named = [await bot.rollouts.host_result(rollout_id, host) for host in hosts]
    results = [r for r in named if r is not None]
    if not hosts or len(results) < len(hosts):
        listed = await bot.rollouts.host_results(rollout_id)
        known = {r.hostname for r in results}
        results += [
            r for r in listed if (not hosts or r.hostname in hosts) and r.hostname not in known
        ]
    shown = [package_blocks.HostPackages.of_result(r) for r in results]
    return package_blocks.packages_view(rollout_id, shown)


async def _hosts_view(bot: SlackBot, rollout_id: str) -> dict[str, Any]:
    progress = await bot.rollouts.progress(rollout_id, steps=False)
    limit = (await bot.rollouts.request(rollout_id)).host_pattern
    return selection.hosts_view(rollout_id, selection.Selection.of(progress, limit))


async def _runs_view(bot: SlackBot, rollout_id: str) -> dict[str, Any]:
    request = await bot.rollouts.request(rollout_id)
    progress = await bot.rollouts.progress(rollout_id, steps=False)
    return what_runs.runs_view(rollout_id, what_runs.WhatRuns.of(request, progress))


async def _open_view(
    bot: SlackBot,
    ack: Ack,
    body: dict[str, Any],
    build: Callable[[SlackBot, str], Awaitable[dict[str, Any]]],
    what: str,
) -> None:
    """Ack a click at once; then open the modal `build` makes (views.open, within the click's
    3 s trigger), or tell the clicker ephemerally why not (another workspace, Temporal, Slack)."""
    await ack()
    click = decisions.Click.of(body)
    refused = bot.foreign_team(click.team_id)
    if refused:
        bot.spawn(decisions.tell(bot, click, f":no_entry: {mrkdwn(refused)}"))
        return

    async def show(trigger_id: str) -> None:
        try:
            view = await build(bot, click.rollout_id)
            await bot.client.views_open(trigger_id=trigger_id, view=view)
        except (RolloutError, SlackApiError) as error:
            reason = slack_error(error) if isinstance(error, SlackApiError) else str(error)
            await decisions.tell(bot, click, f":warning: cannot show {what}: {mrkdwn(reason)}")

    bot.spawn(show(str(body.get("trigger_id") or "")))


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
