"""The Approve / Reject buttons after the ack: send the decision through the facade, then replace
the buttons with the verdict.

Who may decide is the workflow's rule (its update validator), not the bot's. Without a policy the
bot only names the person who clicked, by the e-mail Slack gives for their user id; under the
approval policy it verifies the clicker by stable ids (`bot.slack.trust`), checks they are one of
the rollout's approvers and not its requester, and signs the decision with its own key for the
digest it computes (`bot.signing`), which the worker verifies. Either way it passes the
workflow's answer on. Answers go to the person who clicked only (chat.postEphemeral).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.rollouts import RolloutError
from bot.signing import Signer, digest_here, signed_decision
from bot.slack import blocks, trust
from bot.slack.client import slack_error
from bot.slack.context import SlackBot, error_mrkdwn
from bot.slack.identity import IdentityError
from bot.slack.selection import Selection
from bot.slack.text import mrkdwn
from bot.slack.what_runs import WhatRuns, shown_binding
from workflows.models import ApprovalDecision, RolloutInput

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
    # The digest the approval request showed and the run it was posted for (its buttons'
    # block_id: what_runs.decision_block_id).
    shown_digest: str | None = None
    shown_run: str | None = None

    @classmethod
    def of(cls, body: dict[str, Any]) -> Click:
        """Read a block_actions body; a missing field is an empty string."""
        action = (body.get("actions") or [{}])[0]
        container = body.get("container") or {}
        digest, run = shown_binding(str(action.get("block_id") or ""))
        return cls(
            rollout_id=str(action.get("value") or ""),
            shown_digest=digest,
            shown_run=run,
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
    Under the approval policy the clicker is verified and the decision signed first
    (`_signed`); an approval that leaves others still needed keeps the buttons and says who
    has approved and what is missing.
    """
    comment = f"via Slack by <@{click.user_id}>"
    if bot.policy is not None:
        signed = await _signed(bot, kind, click, comment)
        if signed is None:
            return
        decision = signed
        email = decision.approver
    else:
        try:
            email = await bot.directory.email_of(click.user_id)
            if click.shown_digest is not None or click.shown_run is not None:
                progress = await bot.rollouts.progress(click.rollout_id, steps=False)
                if not await _as_shown(bot, kind, click, progress.digest):
                    return
        except IdentityError as error:
            await tell(bot, click, f":warning: {error_mrkdwn(error)}")
            return
        except RolloutError as error:
            await tell(bot, click, f":no_entry: {kind} refused: {mrkdwn(str(error))}")
            return
        decision = ApprovalDecision(approver=email, comment=comment)
    try:
        answer = await bot.rollouts.decide(
            click.rollout_id, decision, approve=kind == APPROVE, first_run=click.shown_run
        )
    except RolloutError as error:
        await tell(bot, click, f":no_entry: {kind} refused: {mrkdwn(str(error))}")
        return
    except Exception as error:
        log.exception("%s of %s by %s failed", kind, click.rollout_id, email)
        await tell(bot, click, f":x: could not {kind} `{click.rollout_id}`: {mrkdwn(str(error))}")
        return
    if "still needed" in answer:  # one approval of several: the buttons stay for the others
        from bot.slack.control import refresh_card  # control builds on this module

        await tell(bot, click, f":ballot_box_with_check: {mrkdwn(answer)}")
        await refresh_request(bot, click)
        await refresh_card(bot, click.rollout_id)  # its Approvals field
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


async def _signed(bot: SlackBot, kind: str, click: Click, comment: str) -> ApprovalDecision | None:
    """Under the policy: the clicker verified (`trust.verified_person`), checked to be one of
    the rollout's approvers (its progress' `approverEmails`, the policy's) and not its
    requester, and their decision signed by this bot for the digest computed here
    (`bot.signing.signed_decision`). None when refused; the clicker was told why."""
    refused = f":no_entry: {kind} refused:"
    try:
        person = await trust.verified_person(bot, click.user_id, click.team_id)
        progress = await bot.rollouts.progress(click.rollout_id, steps=False)
    except IdentityError as error:
        await tell(bot, click, f"{refused} {error_mrkdwn(error)}")
        return None
    except RolloutError as error:
        await tell(bot, click, f"{refused} {mrkdwn(str(error))}")
        return None
    who = mrkdwn(f"{person.name} ({person.email})")
    if person.email == progress.requester_email.lower():
        await tell(bot, click, f"{refused} {who} requested this rollout and cannot decide it")
        return None
    if person.email not in {email.lower() for email in progress.approver_emails}:
        approvers = mrkdwn(", ".join(progress.approver_emails) or "none")
        await tell(bot, click, f"{refused} {who} is not an approver of it ({approvers} are)")
        return None
    if bot.settings.signing_key is None:
        await tell(
            bot,
            click,
            f"{refused} this PatchPilot has no signing key (PATCHPILOT_SIGNING_KEY), so it "
            "cannot vouch for your click; use `patchpilot approve --key`",
        )
        return None
    signer = Signer(bot.settings.signing_key, bot.settings.signer or "slack")
    try:
        decision, _, digest = await signed_decision(
            bot.rollouts,
            click.rollout_id,
            person.email,
            comment,
            approve=kind == APPROVE,
            signer=signer,
            inventory=bot.settings.inventory,
        )
    except RolloutError as error:
        await tell(bot, click, f"{refused} {mrkdwn(str(error))}")
        return None
    if not await _as_shown(bot, kind, click, digest):
        return None  # the signed decision is dropped unsent
    return decision


async def bound(
    bot: SlackBot, rollout: RolloutInput, runs: WhatRuns, run_id: str | None
) -> WhatRuns:
    """`runs` with what an approval message binds (what_runs.decision_block_id): the rollout's
    first run `run_id`, and, under a policy while the hosts are not resolved yet, the digest of
    `rollout` computed here, which is what a click on the message would then sign."""
    runs = dataclasses.replace(runs, run_id=run_id)
    if runs.digest is None and bot.policy is not None:
        with contextlib.suppress(RolloutError):
            digest = await asyncio.to_thread(digest_here, rollout, bot.settings.inventory)
            runs = dataclasses.replace(runs, digest=digest)
    return runs


async def _as_shown(bot: SlackBot, kind: str, click: Click, now: str | None) -> bool:
    """Whether the rollout still is what the clicked message showed: the same digest (`now`)
    and the same run (Temporal's first run of its chain: a rollout terminated and started again
    under its id is another run, even with the same digest). If not, refuse, and show what it
    runs now."""
    if click.shown_digest is None and click.shown_run is None:
        return True  # a message that binds nothing (posted by an older bot)
    try:
        run = await bot.rollouts.first_run(click.rollout_id) if click.shown_run else None
    except RolloutError as error:
        await tell(bot, click, f":no_entry: {kind} refused: {mrkdwn(str(error))}")
        return False
    same_digest = click.shown_digest is None or now == click.shown_digest
    if same_digest and run == click.shown_run:
        return True
    changed = (
        f"runs `{mrkdwn(now or 'nothing known yet')}`"
        if not same_digest
        else "is another run of it, with the same digest"
    )
    await tell(
        bot,
        click,
        f":no_entry: {kind} refused: the message you clicked showed digest "
        f"`{mrkdwn(click.shown_digest or 'none yet')}`, but rollout "
        f"`{mrkdwn(click.rollout_id)}` now {changed}: it was changed or started again after "
        "the message was posted. Nothing was decided; the message now shows what it runs.",
    )
    await refresh_request(bot, click)
    return False


async def refresh_request(bot: SlackBot, click: Click) -> None:
    """Re-render the approval request `click` was on from the rollout's state now (who has
    approved, what is still missing), its buttons kept; a failure is only logged."""
    try:
        request = await bot.rollouts.request(click.rollout_id)
        progress = await bot.rollouts.progress(click.rollout_id, steps=False)
        policy = bot.policy
        mentions = [
            trust.how_to_mention(policy, email) if policy else mrkdwn(email)
            for email in progress.approver_emails
        ]
        requester = (
            trust.how_to_mention(policy, request.requester_email)
            if policy
            else mrkdwn(request.requester_email)
        )
        runs = await bound(
            bot,
            request,
            WhatRuns.of(request, progress),
            await bot.rollouts.first_run(click.rollout_id),
        )
        await bot.client.chat_update(
            channel=click.channel_id,
            ts=click.message_ts,
            text=f"Approval needed for rollout {click.rollout_id}: {' '.join(mentions)} — "
            + mrkdwn(
                f"approved by {', '.join(progress.approved_by) or 'no one yet'}; still needed: "
                f"{'; '.join(progress.approvals_missing) or 'nothing'}"
            ),
            blocks=blocks.as_dicts(
                blocks.approval_request(
                    click.rollout_id,
                    requester,
                    mentions,
                    request.target_clusters,
                    Selection.of(progress, request.host_pattern),
                    runs,
                )
            ),
        )
    except (RolloutError, SlackApiError) as error:
        log.warning("cannot refresh the approval request of %s: %s", click.rollout_id, error)
