"""`/patch status`, `/patch list` and `/patch cancel` after the ack, through the rollout facade.

Every answer is ephemeral (only the person who typed the command sees it), sent to the command's
response_url (https://api.slack.com/interactivity/handling#message_responses).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot.rollouts import RolloutError
from bot.slack import blocks
from bot.slack.context import Respond, SlackBot

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
            texts.append(str(error))
            continue
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
        await respond(text=str(error), response_type="ephemeral")
        return
    progress = current.progress
    if email not in {progress.requester_email, *progress.approver_emails}:
        await respond(
            text=f":no_entry: only the requester or an approver of `{rollout_id}` may cancel "
            f"it; {email} is neither",
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
