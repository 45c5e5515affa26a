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
from bot.slack import blocks, trust
from bot.slack.commands import ROLLOUT_ID, CommandError
from bot.slack.context import Respond, SlackBot, error_mrkdwn
from bot.slack.decisions import Click, tell
from bot.slack.identity import IdentityError
from bot.slack.text import mrkdwn
from workflows.gate_rules import GateControl
from workflows.models import RolloutControl, describe_validation_error
from workflows.policy import Person

log = logging.getLogger("patchpilot.slack")

# `/patch status` without an id shows at most this many running rollouts.
STATUS_RUNNING = 5
# `/patch list` shows at most this many rollouts started in the last LIST_DAYS days.
LIST_LIMIT = 15
LIST_DAYS = 30
LIST_TEXT = 3000  # characters of the list's message
# Under the policy, `/patch list` looks among this many newest rollouts for the ones to show.
LIST_SCAN = 200


@dataclass(frozen=True)
class Asker:
    """Who asks for `/patch status` or `/patch list`, from which workspace and channel."""

    user_id: str
    team_id: str | None
    channel_id: str


async def _shown(
    bot: SlackBot, ids: list[str], asker: Asker | None, limit: int
) -> tuple[list[str], int]:
    """The first `limit` of `ids` the asker may see (under the policy: the rollouts of the
    channel they ask in and the ones they take part in, `trust.visible`; without one: all),
    and how many were left out. Raises IdentityError when the asker is refused."""
    if bot.policy is None or asker is None:
        return ids[:limit], 0
    person = await trust.verified_person(bot, asker.user_id, asker.team_id)
    seen = await trust.visible_requests(bot, ids, person, asker.channel_id)
    return list(seen)[:limit], len(ids) - len(seen)


async def status(
    bot: SlackBot, rollout_id: str | None, respond: Respond, asker: Asker | None = None
) -> None:
    """The card of rollout `rollout_id`, or of each running rollout when it is None; an unknown
    id is answered with the facade's sentence ("no rollout with id …"). Under the policy only
    the rollouts `asker` may see (`_shown`)."""
    if rollout_id is None:
        running = await bot.rollouts.list(
            "ExecutionStatus='Running'", limit=STATUS_RUNNING if bot.policy is None else 100
        )
        ids, _ = await _shown(bot, [row.rollout_id for row in running], asker, STATUS_RUNNING)
        if not ids:
            await respond(
                text="No rollout is running that you may see here.", response_type="ephemeral"
            )
            return
    else:
        ids, hidden = await _shown(bot, [rollout_id], asker, 1)
        if hidden:
            await respond(
                text=f":no_entry: rollout `{mrkdwn(rollout_id)}` was started in another channel "
                "and you are neither its requester nor one of its approvers; ask in its channel",
                response_type="ephemeral",
            )
            return
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


async def list_rollouts(bot: SlackBot, respond: Respond, asker: Asker | None = None) -> None:
    """The rollouts started in the last LIST_DAYS days, newest first, with status and start
    time (UTC, to the minute); under the policy only those `asker` may see (`_shown`, among
    the newest LIST_SCAN)."""
    since = (datetime.now(UTC) - timedelta(days=LIST_DAYS)).strftime("%Y-%m-%dT%H:%M:%SZ")
    scan = LIST_LIMIT if bot.policy is None else LIST_SCAN
    rows = await bot.rollouts.list(f"StartTime > '{since}'", limit=scan)
    ids, _ = await _shown(bot, [row.rollout_id for row in rows], asker, LIST_LIMIT)
    recent = [row for row in rows if row.rollout_id in ids]
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


async def cancel(
    bot: SlackBot, rollout_id: str, user_id: str, respond: Respond, team_id: str | None = None
) -> None:
    """Ask rollout `rollout_id` to stop, when Slack user `user_id` is its requester or one of its
    approvers (under the policy: `trust.control_refusal`, operators too). Raises IdentityError
    when they cannot be identified, RolloutError when Temporal refuses the cancellation itself."""
    person = None
    if bot.policy is not None:
        person = await trust.verified_person(bot, user_id, team_id)
        email = person.email
    else:
        email = await bot.directory.email_of(user_id)
    try:
        current = await bot.rollouts.status(rollout_id)
        refused = await _control_refusal(bot, person, rollout_id, "cancel")
    except RolloutError as error:
        await respond(text=mrkdwn(str(error)), response_type="ephemeral")
        return
    progress = current.progress
    if refused:
        await respond(text=f":no_entry: {mrkdwn(refused)}", response_type="ephemeral")
        return
    if person is None and email not in {progress.requester_email, *progress.approver_emails}:
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
    # `/patch soak <id> cut|extend [duration]`: the `gate` update's action and extension.
    soak: str | None = None
    by: str | None = None


def parse_control(text: str) -> ControlCommand | None:
    """The control command in `/patch` text (already read back as typed), or None when the text
    is not one; raises CommandError, naming what is missing, for a malformed one."""
    words = text.split()
    if words and words[0].lower() == "soak":
        if len(words) not in (3, 4) or words[2].lower() not in ("cut", "extend"):
            raise CommandError(
                "`soak` reads: /patch soak <id> cut | /patch soak <id> extend [PT10M]"
            )
        by = words[3] if len(words) == 4 else None
        return ControlCommand("gate", _rollout_id(words[1]), soak=words[2].lower(), by=by)
    if not words or words[0].lower() not in CONTROLS or words[0].lower() == "gate":
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


async def _control_refusal(
    bot: SlackBot, person: Person | None, rollout_id: str, what: str
) -> str | None:
    """Under the policy, why `person` may not `what` the rollout (`trust.control_refusal`);
    None without a policy. Raises RolloutError when the rollout cannot be read."""
    if bot.policy is None or person is None:
        return None
    request = await bot.rollouts.request(rollout_id)
    return trust.control_refusal(bot.policy, person, request, what)


async def control(
    bot: SlackBot, command: ControlCommand, user_id: str, team_id: str | None = None
) -> str:
    """Send `command` for Slack user `user_id` through the facade; the answer to show them
    (mrkdwn), the workflow's own reason when refused. Raises IdentityError when they cannot be
    identified (under the policy: verified, and refused unless `trust.control_refusal`
    allows). A control that went through also refreshes the rollout's card."""
    if bot.policy is not None:
        person = await trust.verified_person(bot, user_id, team_id)
        email = person.email
        try:
            refused = await _control_refusal(bot, person, command.rollout_id, command.action)
        except RolloutError as error:
            return f":no_entry: {command.action} refused: {mrkdwn(str(error))}"
        if refused:
            return f":no_entry: {command.action} refused: {mrkdwn(refused)}"
    else:
        email = await bot.directory.email_of(user_id)
    fields: dict[str, object] = {"person": email, "host": command.host, "reason": command.reason}
    model: type[RolloutControl] = RolloutControl
    if command.soak is not None:
        model, fields = GateControl, {"person": email, "action": command.soak}
        if command.by is not None:
            fields["by"] = int(command.by) if command.by.isdigit() else command.by
    try:
        request = model.model_validate(fields)
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
    bot: SlackBot,
    command: ControlCommand,
    user_id: str,
    respond: Respond,
    team_id: str | None = None,
) -> None:
    """`/patch pause|resume|skip|abort …` after the ack: the answer, ephemerally."""
    answer = await control(bot, command, user_id, team_id)
    await respond(text=answer, response_type="ephemeral")


async def click_control(bot: SlackBot, command: ControlCommand, click: Click) -> None:
    """A control button on the card, after the ack: the answer to the person who clicked, in
    the card's thread; never raises."""
    try:
        text = await control(bot, command, click.user_id, click.team_id)
    except IdentityError as error:
        text = f":warning: {error_mrkdwn(error)}"
    await tell(bot, click, text)
