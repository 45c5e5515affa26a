"""`/patch <cluster> …` after the ack: post the rollout's card, start it, ask the approvers once
the rollout has resolved its hosts (the request lists them, `bot.slack.selection`).

The card is posted before the rollout starts because its message ts becomes the rollout's thread
(`slackThreadTs`), where the worker's SlackNotifier posts everything that follows.
"""

from __future__ import annotations

import asyncio
import time

from slack_sdk.errors import SlackApiError

from activities.inventory import load_clusters
from bot.rollouts import RolloutError, new_rollout_id
from bot.slack import blocks, trust
from bot.slack.client import slack_error
from bot.slack.commands import CommandError, PatchPlan, rollout_input
from bot.slack.context import Respond, SlackBot
from bot.slack.decisions import bound
from bot.slack.selection import Selection
from bot.slack.text import mrkdwn
from bot.slack.what_runs import WhatRuns
from workflows.gate_rules import gate_refusal
from workflows.models import Phase, RolloutInput, RolloutProgress

# Slack's answers to chat.postMessage in a channel the bot cannot post to.
NOT_A_MEMBER = ("not_in_channel", "channel_not_found")
_NOT_STARTED = "the rollout could not be started"
# Seconds the approval request waits for the rollout to resolve its hosts (Ansible reads the
# inventory in the worker); after that it is posted saying they are not resolved yet.
SELECTION_WAIT = 90.0
# Phases a rollout can reach without asking for approval: it failed resolving its hosts, or was
# cancelled meanwhile.
ENDED_BEFORE_APPROVAL = (Phase.FAILED, Phase.CANCELLED, Phase.REJECTED, Phase.APPROVAL_TIMED_OUT)


async def start_rollout(
    bot: SlackBot,
    plan: PatchPlan,
    user_id: str,
    channel_id: str,
    respond: Respond,
    *,
    team_id: str | None = None,
) -> None:
    """Start `plan` for Slack user `user_id` of workspace `team_id` in channel `channel_id`.

    Nothing starts when the card cannot be posted (told to the user ephemerally). Raises
    IdentityError or CommandError (requester or approvers unknown, self-approval, and under the
    approval policy what it refuses, `bot.slack.trust`) before anything is posted, and re-raises
    the error of a start Temporal refused after marking the card.
    """
    people = await trust.people(bot, plan, user_id, team_id)
    rollout = rollout_input(
        plan, people.requester, people.approver_emails, slack_channel=channel_id
    )
    refused = await trust.refusal(bot, rollout)
    if refused:
        raise CommandError(f"refused by the approval policy: {refused}; nothing was started")
    _refuse_gates_without_prometheus(bot, rollout)
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
        started = await bot.rollouts.start(rollout, rollout_id)
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
    selection = await selected_hosts(bot, rollout_id, plan.limit, respond)
    if selection is None:
        return
    where = (channel_id, thread_ts)
    mentions = people.mentions
    runs = WhatRuns.of(rollout, None)
    if not selection.pending:  # the policy's approvers and the digest are known now
        try:
            progress = await bot.rollouts.progress(rollout_id, steps=False)
            runs = WhatRuns.of(rollout, progress)
            if bot.policy is not None:
                mentions = [trust.how_to_mention(bot.policy, e) for e in progress.approver_emails]
        except RolloutError:
            pass  # asked with what is known; the card follows the rollout
    runs = await bound(bot, rollout, runs, started.first_execution_run_id)
    await _ask_approvers(bot, rollout_id, plan, user_id, mentions, where, respond, selection, runs)


def _refuse_gates_without_prometheus(bot: SlackBot, rollout: RolloutInput) -> None:
    """CommandError when the rollout (or its clusters' group vars) asks for a gate on
    Prometheus and PATCHPILOT_PROMETHEUS_URL is not set (workflows.gating.gate_refusal)."""
    source = bot.settings.inventory
    gates = {name: cluster[2] for name, cluster in load_clusters(source).items()} if source else {}
    refused = gate_refusal(rollout, gates, prometheus=bot.settings.prometheus_url is not None)
    if refused:
        raise CommandError(refused)


async def selected_hosts(
    bot: SlackBot, rollout_id: str, limit: str | None, respond: Respond
) -> Selection | None:
    """The hosts the rollout selected, once it has resolved them (its `progress` query, polled
    for up to SELECTION_WAIT seconds): what is selected is what the approval shows. A Selection
    marked `pending` when the worker has not resolved them by then; None when the rollout ended
    before asking for approval (the requester is told why, ephemerally)."""
    deadline = time.monotonic() + SELECTION_WAIT
    pause = 0.1
    while True:
        # Bounded by what is left of the wait: without a worker polling, one query would
        # otherwise take Temporal's whole query timeout (30 s), well past SELECTION_WAIT.
        left = max(deadline - time.monotonic(), 0.5)
        try:
            progress: RolloutProgress | None = await bot.rollouts.progress(
                rollout_id, steps=False, timeout=left
            )
        except RolloutError:  # e.g. no worker has run the workflow's first task yet
            progress = None
        if progress is not None and progress.phase in ENDED_BEFORE_APPROVAL:
            await respond(
                text=f":x: rollout `{rollout_id}` ended before asking for approval "
                f"({progress.phase.value}): {mrkdwn(progress.message or 'no reason given')}",
                response_type="ephemeral",
            )
            return None
        if progress is not None and progress.phase != Phase.RESOLVING:
            return Selection.of(progress, limit)
        if time.monotonic() >= deadline:
            return Selection(hosts={}, limit=limit, pending=True)
        await asyncio.sleep(pause)
        pause = min(pause * 2, 1.0)


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
    selection: Selection,
    runs: WhatRuns | None = None,
) -> None:
    """Post the Approve / Reject buttons, with the hosts `selection` names, in the thread `where`
    (channel, ts); when Slack refuses, the rollout still runs and the requester is told how
    approvers can decide without them."""
    channel_id, thread_ts = where
    try:
        await bot.client.chat_postMessage(
            channel=channel_id,
            thread_ts=thread_ts,
            text=f"Approval needed for rollout {rollout_id}: {' '.join(mentions)}",
            blocks=blocks.as_dicts(
                blocks.approval_request(
                    rollout_id, f"<@{user_id}>", mentions, plan.clusters, selection, runs
                )
            ),
        )
    except SlackApiError as error:
        await respond(
            text=f":warning: rollout `{rollout_id}` started, but its Approve / Reject buttons "
            f"could not be posted ({slack_error(error)}). Approvers can use "
            f"`patchpilot approve {rollout_id} --as <e-mail>`.",
            response_type="ephemeral",
        )
