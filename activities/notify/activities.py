"""The spec's notification activities: each builds its event's message and hands it to every
channel in turn."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from temporalio import activity

from activities.notify import messages
from activities.notify.messages import Message, Notifier, wanted
from activities.notify.packages import with_packages
from activities.notify.reports import read_reports
from activities.notify.routing import Routes, allowed
from workflows import names
from workflows.host_notices import HostNotices
from workflows.models import RolloutNotice
from workflows.packages import PackageReport

log = logging.getLogger("patchpilot.notify")

# Activity name (the spec's, from workflows/names.py) -> the message that activity sends.
MESSAGES: dict[str, Callable[[RolloutNotice], Message]] = {
    names.SEND_APPROVAL_REQUEST: messages.approval_request,
    names.SEND_START_NOTIFICATION: messages.start_notice,
    names.SEND_SUCCESS_NOTIFICATION: messages.success_notice,
    names.SEND_FAILURE_ALERT: messages.failure_alert,
    names.SEND_ROLLOUT_SUMMARY: messages.rollout_summary,
    names.SEND_WAVE_NOTIFICATION: messages.wave_notice,
}


class NotificationActivities:
    """The notification activities over the worker's channels (`notifiers`, called in order).

    Each activity takes a RolloutNotice and answers True when at least one channel delivered its
    message. A channel that raises fails the activity, which Temporal retries with the workflow's
    retry policy (see `Notifier`). A host's success and the summary carry the hosts' package
    reports (`reports`, default: read from Temporal, activities/notify/reports.py), read only
    when a channel wants the message (`messages.wanted`).
    """

    def __init__(
        self,
        notifiers: Sequence[Notifier],
        reports: Callable[[RolloutNotice, str], Awaitable[Mapping[str, PackageReport]]] = (
            read_reports
        ),
        routes: Routes | None = None,
    ) -> None:
        self._notifiers = list(notifiers)
        self._reports = reports
        self._routes = routes

    async def _deliver(self, message: Message) -> bool:
        """Sends `message` on every channel; True when one of them delivered it."""
        delivered = False
        for notifier in self._notifiers:
            if await notifier.send(message):
                delivered = True
        if not self._notifiers:
            log.info(
                "no notifier configured; %s for %s not sent", message.event, message.recipients
            )
        return delivered

    def _activity(
        self, name: str, build: Callable[[RolloutNotice], Message]
    ) -> Callable[[RolloutNotice], Awaitable[bool]]:
        """The activity `name`: build the notice's message, deliver it."""

        async def send(notice: RolloutNotice) -> bool:
            message = build(notice)
            if message.event in ("host-success", "summary") and any(
                wanted(notifier, message) for notifier in self._notifiers
            ):
                message = with_packages(message, await self._reports(notice, message.event))
            return await self._deliver(message)

        send.__name__ = send.__qualname__ = f"send_{build.__name__}"
        return activity.defn(name=name)(send)

    @activity.defn(name=names.PLAN_HOST_NOTICES)
    async def plan_host_notices(self, notice: RolloutNotice) -> HostNotices:
        """Whether any channel would send a host's start and success messages for the rollout
        of `notice` (a host notice without a host): the workflow schedules only those
        (workflows/notices.plan_host_notices). Run as a local activity, once per rollout run."""
        start = messages.start_notice(notice)
        success = messages.success_notice(notice)
        return HostNotices(start=self._sent(start), success=self._sent(success))

    def _sent(self, message: Message) -> bool:
        """Whether some worker's channel would send `message`: one of this worker's, or Slack,
        for a rollout with a thread, where the routes give Slack the event. Not this worker's
        channels alone: `patchpilot worker` processes serving the bot's task queue have no Slack
        client (only `patchpilot bot` has), and the answer holds for every host of the run."""
        notice = message.notice
        in_slack = bool(notice.slack_channel and notice.slack_thread_ts)
        if in_slack and message.event in allowed(self._routes, "slack"):
            return True
        return any(wanted(notifier, message) for notifier in self._notifiers)

    def all(self) -> list[Callable[[RolloutNotice], Awaitable[Any]]]:
        """Every notification activity, for the worker's activity list."""
        sends: list[Callable[[RolloutNotice], Awaitable[Any]]] = [
            self._activity(name, build) for name, build in MESSAGES.items()
        ]
        return [*sends, self.plan_host_notices]
