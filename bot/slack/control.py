"""`/patch status`, `/patch list`, `/patch cancel` and the controls of a running rollout
(`/patch pause|resume|skip|abort`, also its card's buttons) after the ack, through the facade.

Every answer is ephemeral (only the person who typed the command sees it), sent to the command's
response_url (https://api.slack.com/interactivity/handling#message_responses).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError
from slack_sdk.errors import SlackApiError

from bot.rollouts import CONTROLS, RolloutError
from bot.slack import blocks
from bot.slack.commands import ROLLOUT_ID, CommandError
from bot.slack.context import Respond, SlackBot, error_mrkdwn
from bot.slack.decisions import Click, tell
from bot.slack.identity import IdentityError
from bot.slack.text import mrkdwn
from workflows.models import RolloutControl, describe_validation_error

log = logging.getLogger("patchpilot.slack")

# `/patch status` without an id shows at most this many running rollouts.
STATUS_RUNNING = 5
# `/patch list` shows at most this many rollouts started in the last LIST_DAYS days.
LIST_LIMIT = 15
LIST_DAYS = 30
LIST_TEXT = 3000  # characters of the list's message


async def status(bot: SlackBot, rollout_id: str | None, respond: Respond) -> None:
    """The card of rollout `rollout_id`, or of each running rollout when it is None; an unknown
    id is answered with the facade's sentence ("no rollout with id …")."""
    if rollout_id is None:
        running = await bot.rollouts.list("ExecutionStatus='Running'", limit=STATUS_RUNNING)
        if not running:
            await respond(text="No rollout is running.", response_type="ephemeral")
            return
        ids = [row.rollout_id for row in running]
    else:
        ids = [rollout_id]
    cards: list[dict[str, Any]] = []
    texts: list[str] = []
    for one in ids:
        try:
            progress = await bot.rollouts.progress(one)
        except RolloutError as error:
            texts.append(mrkdwn(str(error)))
            continue
        try:  # the card shows what was asked (clusters, pilots, services, command) as well
            request = await bot.rollouts.request(one)
            info = blocks.CardInfo.from_input(
                one, request, bot.settings.ui_link(one), progress=progress
            )
        except RolloutError:
            info = blocks.CardInfo.from_progress(one, progress, bot.settings.ui_link(one))
        cards.extend(blocks.as_dicts(blocks.status_card(info)))
        texts.append(blocks.card_text(info))
    await respond(
        text="\n".join(texts), blocks=cards[: blocks.MAX_BLOCKS] or None, response_type="ephemeral"
    )


async def list_rollouts(bot: SlackBot, respond: Respond) -> None:
    """The rollouts started in the last LIST_DAYS days, newest first, with status and start
    time (UTC, to the minute)."""
    since = (datetime.now(UTC) - timedelta(days=LIST_DAYS)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = await bot.rollouts.list(f"StartTime > '{since}'", limit=LIST_LIMIT)
    if not recent:
        await respond(text=f"No rollout in the last {LIST_DAYS} days.", response_type="ephemeral")
        return
    lines = [
        f"• `{row.rollout_id}` — {row.status}, started {row.started_at:%Y-%m-%d %H:%M} UTC"
        for row in recent
    ]
    await respond(
        text=blocks.cut("*Recent rollouts*\n" + "\n".join(lines), LIST_TEXT),
        response_type="ephemeral",
    )


async def cancel(bot: SlackBot, rollout_id: str, user_id: str, respond: Respond) -> None:
    """Ask rollout `rollout_id` to stop, when Slack user `user_id` is its requester or one of its
    approvers. Raises IdentityError when their e-mail cannot be read, RolloutError when Temporal
    refuses the cancellation itself."""
    email = await bot.directory.email_of(user_id)
    try:
        current = await bot.rollouts.status(rollout_id)
    except RolloutError as error:
        await respond(text=mrkdwn(str(error)), response_type="ephemeral")
        return
    progress = current.progress
    if email not in {progress.requester_email, *progress.approver_emails}:
        await respond(
            text=f":no_entry: only the requester or an approver of `{rollout_id}` may cancel "
            f"it; {mrkdwn(email)} is neither",
            response_type="ephemeral",
        )
        return
    if not current.running:
        await respond(
            text=f"`{rollout_id}` has already ended ({progress.phase.value})",
            response_type="ephemeral",
        )
        return
    await bot.rollouts.cancel(rollout_id)
    await respond(
        text=f":octagonal_sign: cancellation of `{rollout_id}` requested: no new host starts; "
        "hosts in progress finish their steps",
        response_type="ephemeral",
    )


@dataclass(frozen=True)
class ControlCommand:
    """`/patch pause|resume|abort <rollout id>` or `/patch skip <rollout id> <host> [why…]`."""

    action: str
    rollout_id: str
    host: str | None = None
    reason: str = ""


def parse_control(text: str) -> ControlCommand | None:
    """The control command in `/patch` text (already read back as typed), or None when the text
    is not one; raises CommandError, naming what is missing, for a malformed one."""
    words = text.split()
    if not words or words[0].lower() not in CONTROLS:
        return None
    action, rest = words[0].lower(), words[1:]
    if action == "skip":
        if len(rest) < 2:
            raise CommandError(
                "`skip` needs a rollout id and a host: /patch skip <id> <host> [why]"
            )
        return ControlCommand(action, _rollout_id(rest[0]), rest[1], " ".join(rest[2:]))
    if len(rest) != 1:
        raise CommandError(f"`{action}` needs exactly one rollout id: /patch {action} <id>")
    return ControlCommand(action, _rollout_id(rest[0]))


def _rollout_id(value: str) -> str:
    if not ROLLOUT_ID.fullmatch(value):
        raise CommandError(f"rollout id: {value[:80]!r} is not a rollout id")
    return value


async def control(bot: SlackBot, command: ControlCommand, user_id: str) -> str:
    """Send `command` for Slack user `user_id` through the facade; the answer to show them
    (mrkdwn), the workflow's own reason when refused. Raises IdentityError when their e-mail
    cannot be read. A control that went through also refreshes the rollout's card."""
    email = await bot.directory.email_of(user_id)
    try:
        request = RolloutControl.model_validate(
            {"person": email, "host": command.host, "reason": command.reason}
        )
    except ValidationError as error:
        return f":warning: {mrkdwn(describe_validation_error(error))}"
    try:
        answer = await bot.rollouts.control(command.rollout_id, command.action, request)
    except RolloutError as error:
        return f":no_entry: {command.action} refused: {mrkdwn(str(error))}"
    await refresh_card(bot, command.rollout_id)
    return f":ok_hand: `{command.rollout_id}`: {mrkdwn(answer)}"


async def refresh_card(bot: SlackBot, rollout_id: str) -> None:
    """Re-render the rollout's card from its request and progress (a pause changes no host, so
    no notice would); a failure is only logged: the card is a nicety."""
    try:
        request = await bot.rollouts.request(rollout_id)
        progress = await bot.rollouts.progress(rollout_id)
        if not request.slack_channel or not request.slack_thread_ts:
            return
        info = blocks.CardInfo.from_input(
            rollout_id, request, bot.settings.ui_link(rollout_id), progress=progress
        )
        await bot.client.chat_update(
            channel=request.slack_channel,
            ts=request.slack_thread_ts,
            text=blocks.card_text(info),
            blocks=blocks.as_dicts(blocks.status_card(info)),
        )
    except (RolloutError, SlackApiError) as error:
        log.warning("cannot refresh the card of %s: %s", rollout_id, error)


async def answer_control(
    bot: SlackBot, command: ControlCommand, user_id: str, respond: Respond
) -> None:
    """`/patch pause|resume|skip|abort …` after the ack: the answer, ephemerally."""
    await respond(text=await control(bot, command, user_id), response_type="ephemeral")


async def click_control(bot: SlackBot, command: ControlCommand, click: Click) -> None:
    """A control button on the card, after the ack: the answer to the person who clicked, in
    the card's thread; never raises."""
    try:
        text = await control(bot, command, click.user_id)
    except IdentityError as error:
        text = f":warning: {error_mrkdwn(error)}"
    await tell(bot, click, text)
