"""`/patch <cluster> …` after the ack: post the rollout's card, start it, ask the approvers.

The card is posted before the rollout starts because its message ts becomes the rollout's thread
(`slackThreadTs`), where the worker's SlackNotifier posts everything that follows.
"""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

from bot.rollouts import RolloutError, new_rollout_id
from bot.slack import blocks
from bot.slack.client import slack_error
from bot.slack.commands import PatchPlan, rollout_input
from bot.slack.context import Respond, SlackBot
from bot.slack.text import mrkdwn
from workflows.models import RolloutInput

# Slack's answers to chat.postMessage in a channel the bot cannot post to.
NOT_A_MEMBER = ("not_in_channel", "channel_not_found")
_NOT_STARTED = "the rollout could not be started"


async def start_rollout(
    bot: SlackBot, plan: PatchPlan, user_id: str, channel_id: str, respond: Respond
) -> None:
    """Start `plan` for Slack user `user_id` in channel `channel_id`.

    Nothing starts when the card cannot be posted (told to the user ephemerally). Raises
    IdentityError or CommandError (requester or approvers unknown, self-approval) before anything
    is posted, and re-raises the error of a start Temporal refused after marking the card.
    """
    people = await bot.directory.people(user_id, plan.approvers)
    rollout = rollout_input(
        plan, people.requester, people.approver_emails, slack_channel=channel_id
    )
    rollout_id = new_rollout_id(rollout.target_clusters)
    thread_ts = await _post_card(bot, rollout_id, rollout, channel_id, respond)
    if thread_ts is None:
        return
    rollout = rollout_input(
        plan,
        people.requester,
        people.approver_emails,
        slack_channel=channel_id,
        slack_thread_ts=thread_ts,
    )
    try:
        await bot.rollouts.start(rollout, rollout_id)
    except Exception as error:
        # RolloutError already says "the rollout could not be started: …".
        reason = str(error) if isinstance(error, RolloutError) else f"{_NOT_STARTED}: {error}"
        note = f":x: {reason}"  # escaped where the card shows it
        await bot.client.chat_update(
            channel=channel_id,
            ts=thread_ts,
            text=mrkdwn(note),
            blocks=blocks.as_dicts(
                blocks.status_card(blocks.CardInfo.from_input(rollout_id, rollout, note=note))
            ),
        )
        raise
    if rollout.dry_run:
        return  # no approval: the thread gets the per-host table when the dry run ends
    where = (channel_id, thread_ts)
    await _ask_approvers(bot, rollout_id, plan, user_id, people.mentions, where, respond)


async def _post_card(
    bot: SlackBot, rollout_id: str, rollout: RolloutInput, channel_id: str, respond: Respond
) -> str | None:
    """The ts of the card posted in the channel, or None (the user told why) when Slack refused."""
    card = blocks.CardInfo.from_input(rollout_id, rollout, bot.settings.ui_link(rollout_id))
    try:
        posted = await bot.client.chat_postMessage(
            channel=channel_id,
            text=blocks.card_text(card),
            blocks=blocks.as_dicts(blocks.status_card(card)),
        )
    except SlackApiError as error:
        code = slack_error(error)
        hint = " — invite the bot first: `/invite @PatchPilot`" if code in NOT_A_MEMBER else ""
        await respond(
            text=f":x: cannot post the rollout in this channel ({code}){hint}. Nothing was "
            "started.",
            response_type="ephemeral",
        )
        return None
    return str(posted["ts"])


async def _ask_approvers(
    bot: SlackBot,
    rollout_id: str,
    plan: PatchPlan,
    user_id: str,
    mentions: list[str],
    where: tuple[str, str],
    respond: Respond,
) -> None:
    """Post the Approve / Reject buttons in the thread `where` (channel, ts); when Slack refuses,
    the rollout still runs and the requester is told how approvers can decide without them."""
    channel_id, thread_ts = where
    try:
        await bot.client.chat_postMessage(
            channel=channel_id,
            thread_ts=thread_ts,
            text=f"Approval needed for rollout {rollout_id}: {' '.join(mentions)}",
            blocks=blocks.as_dicts(
                blocks.approval_request(rollout_id, f"<@{user_id}>", mentions, plan.clusters)
            ),
        )
    except SlackApiError as error:
        await respond(
            text=f":warning: rollout `{rollout_id}` started, but its Approve / Reject buttons "
            f"could not be posted ({slack_error(error)}). Approvers can use "
            f"`patchpilot approve {rollout_id} --as <e-mail>`.",
            response_type="ephemeral",
        )
