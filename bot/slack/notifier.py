"""SlackNotifier: the worker side of the rollout thread and its live status card.

Runs inside the notification activities (activities.notify.NotificationActivities). Where to post
comes from the notice (`slackChannel` / `slackThreadTs`, set by the bot when it started the
rollout), so it survives a restart of the bot or the worker.

How fast the thread and the card change is `bot.slack.pacing`'s rule, when a `Pacing` is given
(`patchpilot bot` gives one); without it every event is posted and updates the card at once.

A host's success and the summary show the hosts' package reports collapsed to one line each,
with a "Packages" button that opens the whole report (`bot.slack.package_blocks`); the message's
text stays what it was, as the notification's fallback.

The card is always rendered from one complete state: what was asked of the rollout (the notice
when it carries it, else the rollout's input read once through the facade) and its progress.

Errors: a 429 is retried by slack_sdk honouring Retry-After; if Slack still refuses, or cannot be
reached, the activity fails and Temporal retries it (before anything was posted, so no duplicates).
A channel the bot cannot post to (channel_not_found, not_in_channel, ...) is logged and reported
as not delivered (`False`): the e-mail notifier still carries the news and the rollout goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.notify import Message, Notifier
from activities.notify.packages import short_line
from bot.rollouts import Rollouts
from bot.slack import blocks, package_blocks
from bot.slack.blocks import mrkdwn_escape
from bot.slack.client import slack_error
from bot.slack.pacing import (
    BATCHED,
    ChannelBudget,
    EndedRollouts,
    HostEvent,
    Pacing,
    RolloutPace,
    by_kind,
    host_names,
)
from workflows.models import RolloutInput, RolloutNotice, RolloutProgress

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
        pacing: Pacing | None = None,
    ) -> None:
        """`temporal` lets the card show the rollout's live progress (without it, the notice's
        hosts); `ui_link` maps a rollout id to its Temporal Web UI page; `fallback` (e.g. the
        EmailNotifier) is told once per rollout when Slack refuses its channel; `pacing` batches
        host events and coalesces card updates (`bot.slack.pacing`)."""
        self._client = client
        self._rollouts = Rollouts(temporal) if temporal is not None else None
        self._ui_link = ui_link or (lambda _rollout_id: None)
        self._fallback = fallback
        self._pacing = pacing
        self._budget = ChannelBudget(pacing) if pacing is not None else None
        self._card_locks: dict[str, asyncio.Lock] = {}
        self._reported: set[tuple[str, str]] = set()
        self._paces: dict[str, RolloutPace] = {}
        self._requests: dict[str, RolloutInput] = {}
        self._later: dict[tuple[str, str], asyncio.Task[Any]] = {}
        self._ended = EndedRollouts()

    def wants(self, message: Message) -> bool:
        """Only a rollout started from Slack has a thread to post in."""
        return bool(message.notice.slack_channel and message.notice.slack_thread_ts)

    async def send(self, message: Message) -> bool:
        """Post `message` in its rollout's thread (most events) and update the card; True when
        Slack took it."""
        notice = message.notice
        channel, thread_ts = notice.slack_channel, notice.slack_thread_ts
        if not channel or not thread_ts:
            return False
        pace = self._pace(notice.rollout_id)
        if pace is not None and message.event in BATCHED and (pace.waiting or pace.posting):
            # Host events come faster than the thread takes them: they go out together.
            host = notice.hostname or "?"
            pace.waiting.append(
                HostEvent(message.event, host, notice.cluster or "?", message.packages.get(host))
            )
            self._schedule("flush", message, self._pacing.flush_seconds if self._pacing else 0)
            return True
        if pace is not None:
            pace.posting += 1
        try:
            if message.event not in BATCHED:
                await self._flush(message)  # what waited goes first: the thread keeps its order
            delivered = await self._post_paced(message)
        finally:
            if pace is not None:
                pace.posting -= 1
        if delivered:
            await self._card_after(message, pace)
        return delivered

    async def _post_paced(self, message: Message) -> bool:
        """Post `message`'s thread text (if it has one) once its channel allows."""
        notice = message.notice
        text = self._thread_text(message)
        if text is None or not notice.slack_channel or not notice.slack_thread_ts:
            return True
        if self._budget is not None:
            await self._budget.take(notice.slack_channel)
        return await self._post(
            notice.slack_channel, notice.slack_thread_ts, text, message, thread_blocks(message)
        )

    def _pace(self, rollout_id: str) -> RolloutPace | None:
        if self._pacing is None:
            return None
        return self._paces.setdefault(rollout_id, RolloutPace(self._pacing))

    def _card_busy(self, rollout_id: str) -> bool:
        lock = self._card_locks.get(rollout_id)
        return lock is not None and lock.locked()

    def _schedule(self, kind: str, message: Message, delay: float) -> None:
        """Run the flush or the card update of `message`'s rollout in `delay` seconds, once."""
        key = (kind, message.notice.rollout_id)
        if key in self._later and not self._later[key].done():
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            self._later.pop(key, None)
            try:
                if kind == "flush":
                    await self._flush(message)
                    await self._card_after(message, self._pace(message.notice.rollout_id))
                else:
                    await self.update_card(message)
            except Exception as error:  # nothing awaits this task: log what went wrong
                log.warning("paced %s of %s failed: %s", kind, message.notice.rollout_id, error)

        self._later[key] = asyncio.get_running_loop().create_task(later())

    async def _flush(self, message: Message) -> None:
        """Post the rollout's waiting host events, one message per kind."""
        pace = self._pace(message.notice.rollout_id)
        if pace is None:
            return
        waiting = pace.take_waiting()
        pace.posting += 1  # host events that come meanwhile wait for the next flush
        try:
            await self._post_batches(message, waiting)
        finally:
            pace.posting -= 1

    async def _post_batches(self, message: Message, waiting: list[HostEvent]) -> None:
        notice = message.notice
        for kind, events in by_kind(waiting):
            found = {e.host: e.packages for e in events if e.packages is not None}
            if len(events) == 1:
                one = notice.model_copy(
                    update={"hostname": events[0].host, "cluster": events[0].cluster}
                )
                single = Message(
                    event=kind, recipients=[], subject="", body="", notice=one, packages=found
                )
                text = self._thread_text(single)
                extra = thread_blocks(single)
            else:
                text = batch_text(kind, events)
                lines = {host: short_line(report) for host, report in found.items()}
                built = package_blocks.batch_blocks(text, lines, notice.rollout_id)
                extra = blocks.as_dicts(built) if lines else None
            if text is not None and notice.slack_channel and notice.slack_thread_ts:
                if self._budget is not None:
                    await self._budget.take(notice.slack_channel)
                await self._post(notice.slack_channel, notice.slack_thread_ts, text, message, extra)

    async def _card_after(self, message: Message, pace: RolloutPace | None) -> None:
        """Update the card now, or (paced) at most once per `card_seconds`, the summary at once."""
        if pace is None or message.event == "summary":
            if message.event == "summary":
                self._ended.add(message.notice.rollout_id)
            if pace is not None:
                pace.ended.set()
            for kind in ("card", "flush") if message.event == "summary" else ("card",):
                task = self._later.pop((kind, message.notice.rollout_id), None)
                if task is not None:
                    task.cancel()
            await self.update_card(message)
            return
        pending = self._later.get(("card", message.notice.rollout_id))
        if pending is not None and not pending.done():
            return  # the update already planned renders the state as it is then
        due = pace.card_due_in()
        if due <= 0 and not self._card_busy(message.notice.rollout_id):
            await self.update_card(message)
        else:  # planned: it renders the state as it is when its turn comes
            self._schedule("card", message, due)

    @staticmethod
    def _thread_text(message: Message) -> str | None:
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

    async def _post(
        self,
        channel: str,
        thread_ts: str,
        text: str,
        message: Message,
        extra: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Post `text` (with blocks `extra`, when given: `text` is then the notification's
        fallback) in the thread; blocks Slack refuses are dropped and the text posted alone."""
        try:
            await self._client.chat_postMessage(
                channel=channel,
                thread_ts=thread_ts,
                text=text,
                unfurl_links=False,
                blocks=extra or None,  # slack_sdk leaves out a None argument
            )
        except SlackApiError as error:
            code = slack_error(error)
            if extra and code == "invalid_blocks":  # the news matters more than its layout
                log.warning("Slack refused the blocks of a %s notice: text only", message.event)
                return await self._post(channel, thread_ts, text, message)
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

    async def _request(self, notice: RolloutNotice) -> RolloutInput | RolloutNotice | None:
        """What was asked of the rollout: the notice when it says it all, else the rollout's
        input (read once per rollout), else None (no card is better than a wrong one)."""
        if notice.target_clusters and notice.update_command:
            return notice
        known = self._requests.get(notice.rollout_id)
        if known is None and self._rollouts is not None:
            try:
                known = await self._rollouts.request(notice.rollout_id)
            except Exception as error:  # the card waits for the next event
                log.info("cannot read the request of %s for its card: %s", notice.rollout_id, error)
                return None
            self._requests[notice.rollout_id] = known
        return known

    async def update_card(self, message: Message) -> bool:
        """Replace the rollout's top message with the current card (chat.update), rendered from
        one complete state; False when that state or Slack was not available. Never raises:
        the card is a nicety."""
        notice = message.notice
        if not notice.slack_channel or not notice.slack_thread_ts:
            return False
        if message.event != "summary" and notice.rollout_id in self._ended:
            return False  # the summary has drawn the final card
        try:
            return await self._update_card(message)
        finally:
            if message.event == "summary":
                self._card_locks.pop(notice.rollout_id, None)
                self._paces.pop(notice.rollout_id, None)
                self._requests.pop(notice.rollout_id, None)

    async def _update_card(self, message: Message) -> bool:
        notice = message.notice
        assert notice.slack_channel and notice.slack_thread_ts
        pace = self._pace(notice.rollout_id)
        lock = self._card_locks.setdefault(notice.rollout_id, asyncio.Lock())
        async with lock:
            # Paced at the call itself, whoever asked and however long ago it was planned (only
            # the lock's holder sets card_at); the summary's final state goes at once, and an
            # update still waiting for its turn when the summary comes leaves the card to it.
            if pace is not None and message.event != "summary":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(pace.ended.wait(), pace.card_due_in())
                if pace.ended.is_set():
                    return False
            request = await self._request(notice)
            if request is None:
                return False
            progress = await self._progress(notice.rollout_id)
            info = blocks.CardInfo.from_input(
                notice.rollout_id,
                request,
                self._ui_link(notice.rollout_id),
                progress=progress,
                hosts_by_cluster=dict(notice.hosts_by_cluster),
            )
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
            finally:
                if pace is not None:
                    # From Slack's answer: neither a slow progress query nor a request's way to
                    # Slack can bring this update and the next closer together where Slack counts.
                    pace.card_at = time.monotonic()
        return True


def thread_blocks(message: Message) -> list[dict[str, Any]] | None:
    """The blocks of `message`'s thread post, where it has more than its text: a host's success
    or the summary with the package reports collapsed behind a "Packages" button
    (`bot.slack.package_blocks`); None for a text-only post."""
    notice = message.notice
    if message.event == "host-success" and notice.hostname in message.packages:
        host = notice.hostname or ""
        text = SlackNotifier._thread_text(message) or ""
        built = package_blocks.host_blocks(text, host, message.packages[host], notice.rollout_id)
        return blocks.as_dicts(built)
    summary = notice.summary
    if message.event == "summary" and summary is not None:
        if not package_blocks.has_packages(summary, message.packages):
            return None
        head = blocks.summary_head(summary)
        return blocks.as_dicts(package_blocks.summary_blocks(head, summary, message.packages))
    return None


BATCH_ICON = {"host-start": ":arrow_forward:", "host-success": ":white_check_mark:"}
BATCH_VERB = {"host-start": "patching", "host-success": "patched"}


def batch_text(kind: str, events: list[HostEvent]) -> str:
    """One thread message for several host events of one kind: ":white_check_mark: 14 patched:
    a12…a25" (with the clusters when the batch spans several)."""
    clusters = sorted({event.cluster for event in events})
    where = f" ({mrkdwn_escape(', '.join(clusters))})"
    return (
        f"{BATCH_ICON[kind]} {len(events)} {BATCH_VERB[kind]}{where}: "
        f"{mrkdwn_escape(host_names(events))}"
    )
