"""SlackNotifier: the worker side of the rollout thread and its live status card.

Runs inside the notification activities (activities.notify.NotificationActivities). Where to post
comes from the notice (`slackChannel` / `slackThreadTs`, set by the bot when it started the
rollout), so it survives a restart of the bot or the worker.

Errors: a 429 is retried by slack_sdk honouring Retry-After; if Slack still refuses, or cannot be
reached, the activity fails and Temporal retries it (before anything was posted, so no duplicates).
A channel the bot cannot post to (channel_not_found, not_in_channel, ...) is logged and reported
as not delivered (`False`): the e-mail notifier still carries the news and the rollout goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.notify import Message, Notifier
from bot.rollouts import Rollouts
from bot.slack import blocks
from bot.slack.blocks import mrkdwn_escape
from bot.slack.client import slack_error
from workflows.models import RolloutProgress

log = logging.getLogger("patchpilot.slack.notifier")

# Slack errors that no retry will fix (https://api.slack.com/methods/chat.postMessage#errors):
# report, never fail the rollout.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "missing_scope",
        "restricted_action",
        "message_not_found",
        "cant_update_message",
        "thread_not_found",
        "invalid_arguments",
    }
)


class SlackNotifier:
    """The `Notifier` that posts a rollout's news into its Slack thread and keeps its card current.

    `send` returns False for a rollout without a Slack thread or a channel Slack refuses for good
    (PERMANENT_ERRORS), and raises ApplicationError (retried by Temporal) when Slack answered with
    another error or could not be reached.
    """

    name = "slack"

    def __init__(
        self,
        client: AsyncWebClient,
        temporal: Client | None = None,
        ui_link: Callable[[str], str | None] | None = None,
        fallback: Notifier | None = None,
    ) -> None:
        """`temporal` lets the card show the rollout's live progress (without it, the notice's
        hosts); `ui_link` maps a rollout id to its Temporal Web UI page; `fallback` (e.g. the
        EmailNotifier) is told once per rollout when Slack refuses its channel."""
        self._client = client
        self._rollouts = Rollouts(temporal) if temporal is not None else None
        self._ui_link = ui_link or (lambda _rollout_id: None)
        self._fallback = fallback
        self._card_locks: dict[str, asyncio.Lock] = {}
        self._reported: set[tuple[str, str]] = set()

    async def send(self, message: Message) -> bool:
        """Post `message` in its rollout's thread (most events) and update the card; True when
        Slack took it."""
        notice = message.notice
        channel, thread_ts = notice.slack_channel, notice.slack_thread_ts
        if not channel or not thread_ts:
            return False
        text = self._thread_text(message)
        delivered = True
        if text is not None:
            delivered = await self._post(channel, thread_ts, text, message)
        if delivered:
            await self.update_card(message)
        return delivered

    def _thread_text(self, message: Message) -> str | None:
        notice = message.notice
        host = f"*{mrkdwn_escape(notice.hostname or '?')}* ({mrkdwn_escape(notice.cluster or '?')})"
        if message.event == "approval-request":
            return None  # the bot posted the request with its buttons; the card shows the phase
        if message.event == "wave" and notice.waiting:
            return f":hourglass_flowing_sand: {mrkdwn_escape(notice.waiting)}"
        if message.event == "wave":
            return f":arrows_counterclockwise: Starting {mrkdwn_escape(notice.wave or '?')}"
        if message.event == "host-start":
            return f":arrow_forward: Patching {host}"
        if message.event == "host-success":
            return f":white_check_mark: {host} patched: services healthy, out of maintenance mode"
        if message.event == "failure":
            return f":x: *Failure*: {mrkdwn_escape(notice.failure_details or 'unknown failure')}"
        if message.event == "summary" and notice.summary is not None:
            return blocks.summary_message(notice.summary)
        return mrkdwn_escape(message.subject)

    async def _post(self, channel: str, thread_ts: str, text: str, message: Message) -> bool:
        try:
            await self._client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=text, unfurl_links=False
            )
        except SlackApiError as error:
            code = slack_error(error)
            if code in PERMANENT_ERRORS:
                log.warning(
                    "Slack refused the %s notice of rollout %s in channel %s: %s; not retried "
                    "(invite the bot to the channel to get the thread updates)",
                    message.event,
                    message.notice.rollout_id,
                    channel,
                    code,
                )
                await self._report_undeliverable(message, channel, code)
                return False
            raise ApplicationError(
                f"Slack chat.postMessage failed: {code}", type="SlackError"
            ) from None
        except (SlackClientError, OSError, TimeoutError) as error:
            raise ApplicationError(
                f"Slack is unreachable: {error}", type="SlackUnreachable"
            ) from None
        return True

    async def _report_undeliverable(self, message: Message, channel: str, code: str) -> None:
        notice = message.notice
        key = (notice.rollout_id, channel)
        if self._fallback is None or key in self._reported:
            return
        self._reported.add(key)
        recipients = list(dict.fromkeys([notice.requester_email, *notice.approver_emails]))
        warning = Message(
            event="slack-undeliverable",
            recipients=recipients,
            subject=f"[PatchPilot] Slack cannot post the updates of rollout {notice.rollout_id}",
            body=(
                f"Slack refused to post the updates of rollout {notice.rollout_id} in channel "
                f"{channel}: {code}.\nThe rollout goes on; its updates still come by e-mail. "
                "To get them in Slack, invite the bot to the channel (/invite @PatchPilot).\n"
                f"Follow it with: patchpilot watch {notice.rollout_id}\n"
            ),
            notice=notice,
        )
        try:
            await self._fallback.send(warning)
        except Exception as error:
            log.warning("cannot report the Slack failure of %s: %s", notice.rollout_id, error)

    async def _progress(self, rollout_id: str) -> RolloutProgress | None:
        if self._rollouts is None:
            return None
        try:
            return await self._rollouts.progress(rollout_id)
        except Exception as error:  # the card is a nicety: never fail a notification for it
            log.info("cannot query the progress of %s for its card: %s", rollout_id, error)
            return None

    async def update_card(self, message: Message) -> bool:
        """Replace the rollout's top message with the current card (chat.update); False when
        Slack refused or was not reached. Never raises: the card is a nicety."""
        notice = message.notice
        if not notice.slack_channel or not notice.slack_thread_ts:
            return False
        lock = self._card_locks.setdefault(notice.rollout_id, asyncio.Lock())
        async with lock:
            progress = await self._progress(notice.rollout_id)
            info = blocks.CardInfo.from_notice(notice, progress, self._ui_link(notice.rollout_id))
            try:
                await self._client.chat_update(
                    channel=notice.slack_channel,
                    ts=notice.slack_thread_ts,
                    text=blocks.card_text(info),
                    blocks=blocks.as_dicts(blocks.status_card(info)),
                )
            except (SlackClientError, OSError, TimeoutError) as error:
                detail = slack_error(error) if isinstance(error, SlackApiError) else str(error)
                log.warning("cannot update the status card of %s: %s", notice.rollout_id, detail)
                return False
        if message.event == "summary":
            self._card_locks.pop(notice.rollout_id, None)
        return True
