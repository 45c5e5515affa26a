"""The Approve / Reject buttons after the ack: send the decision through the facade, then replace
the buttons with the verdict.

Who may decide is the workflow's rule (its update validator), not the bot's: the bot only names
the person who clicked, by the e-mail Slack gives for their user id, and passes the workflow's
answer on. Answers go to the person who clicked only (chat.postEphemeral).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.rollouts import RolloutError
from bot.slack import blocks
from bot.slack.client import slack_error
from bot.slack.context import SlackBot, error_mrkdwn
from bot.slack.identity import IdentityError
from bot.slack.text import mrkdwn
from workflows.models import ApprovalDecision

log = logging.getLogger("patchpilot.slack")

APPROVE = "approve"
REJECT = "reject"


@dataclass(frozen=True)
class Click:
    """A button click as Slack's block_actions payload gives it
    (https://api.slack.com/reference/interaction-payloads/block-actions)."""

    rollout_id: str  # the button's value
    user_id: str
    team_id: str | None
    channel_id: str
    message_ts: str  # the approval request's message
    thread_ts: str | None = None  # the thread the clicked message is in, if any

    @classmethod
    def of(cls, body: dict[str, Any]) -> Click:
        """Read a block_actions body; a missing field is an empty string."""
        action = (body.get("actions") or [{}])[0]
        container = body.get("container") or {}
        return cls(
            rollout_id=str(action.get("value") or ""),
            user_id=str((body.get("user") or {}).get("id") or ""),
            team_id=(body.get("team") or {}).get("id"),
            channel_id=str(
                (body.get("channel") or {}).get("id") or container.get("channel_id") or ""
            ),
            message_ts=str(
                (body.get("message") or {}).get("ts") or container.get("message_ts") or ""
            ),
            thread_ts=container.get("thread_ts") or (body.get("message") or {}).get("thread_ts"),
        )


async def tell(bot: SlackBot, click: Click, text: str) -> None:
    """An ephemeral message to the person who clicked, in the thread they clicked in
    (`container.thread_ts`, https://api.slack.com/methods/chat.postEphemeral#arg_thread_ts); a
    Slack refusal is only logged. `text` is mrkdwn."""
    try:
        await bot.client.chat_postEphemeral(
            channel=click.channel_id, user=click.user_id, text=text, thread_ts=click.thread_ts
        )
    except SlackApiError as error:
        log.warning("cannot tell %s: %s (%s)", click.user_id, text, slack_error(error))


async def decide(bot: SlackBot, kind: str, click: Click) -> None:
    """Send `kind` ("approve" or "reject") for the person who clicked; never raises.

    A refusal (not an approver, the requester, already decided, the rollout has ended) is told
    with the facade's reason; a decision that went through replaces the buttons (chat.update).
    """
    try:
        email = await bot.directory.email_of(click.user_id)
    except IdentityError as error:
        await tell(bot, click, f":warning: {error_mrkdwn(error)}")
        return
    decision = ApprovalDecision(approver=email, comment=f"via Slack by <@{click.user_id}>")
    try:
        await bot.rollouts.decide(click.rollout_id, decision, approve=kind == APPROVE)
    except RolloutError as error:
        await tell(bot, click, f":no_entry: {kind} refused: {mrkdwn(str(error))}")
        return
    except Exception as error:
        log.exception("%s of %s by %s failed", kind, click.rollout_id, email)
        await tell(bot, click, f":x: could not {kind} `{click.rollout_id}`: {mrkdwn(str(error))}")
        return
    verdict = "Approved" if kind == APPROVE else "Rejected"
    try:
        await bot.client.chat_update(
            channel=click.channel_id,
            ts=click.message_ts,
            text=f"{verdict} by <@{click.user_id}>",
            blocks=blocks.as_dicts(
                blocks.decided(verdict, f"<@{click.user_id}>", click.rollout_id)
            ),
        )
    except SlackApiError as error:
        # The decision stands (Temporal has it); only its echo in Slack is missing.
        log.warning("cannot mark %s as %s: %s", click.rollout_id, verdict, slack_error(error))
        await tell(bot, click, f"{verdict} `{click.rollout_id}`.")
