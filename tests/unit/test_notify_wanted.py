"""A host's success reads its package report from Temporal (a history read per host) only when a
channel would deliver the message: no channel, a route that leaves the event out, a rollout
without a Slack thread cost no read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from activities.notify import Message
from activities.notify.activities import NotificationActivities
from activities.notify.routing import RoutedNotifier
from bot.slack.notifier import SlackNotifier
from workflows import names
from workflows.host_notices import HostNotices
from workflows.models import RolloutNotice
from workflows.packages import PackageChange, PackageReport

REPORT = PackageReport(upgraded=[PackageChange(name="openssl", old="3.0.1", new="3.0.2")])


@dataclass
class Channel:
    """A channel that takes every message and keeps what it got."""

    name: str = "webhook"
    got: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> bool:
        self.got.append(message)
        return True


def notice(**fields: object) -> RolloutNotice:
    return RolloutNotice.model_validate(
        {"rollout_id": "r-1", "requester_email": "bob@example.com", "hostname": "a1", **fields}
    )


def host_success(
    notifiers: list[object], reads: list[str]
) -> Callable[[RolloutNotice], Coroutine[Any, Any, bool]]:
    async def reports(notice: RolloutNotice, event: str) -> dict[str, PackageReport]:
        reads.append(event)
        return {"a1": REPORT}

    activities = NotificationActivities(notifiers, reports=reports)  # type: ignore[arg-type]
    [send] = [
        fn
        for fn in activities.all()
        if getattr(fn, "__temporal_activity_definition").name == names.SEND_SUCCESS_NOTIFICATION
    ]
    return send  # type: ignore[return-value]


def test_a_channel_that_takes_the_success_gets_the_hosts_package_report() -> None:
    reads: list[str] = []
    channel = Channel()
    assert asyncio.run(host_success([channel], reads)(notice())) is True
    assert reads == ["host-success"]
    assert channel.got[0].packages == {"a1": REPORT}
    assert "openssl" in channel.got[0].body


def test_no_channel_that_would_deliver_the_success_means_no_report_read() -> None:
    slack = SlackNotifier(AsyncWebClient(token="xoxb-not-used"))
    cases: dict[str, list[object]] = {
        "no channel at all": [],
        "routed away": [RoutedNotifier(Channel(name="teams"), frozenset({"failure"}))],
        "Slack, rollout started outside Slack": [slack],
    }
    for case, notifiers in cases.items():
        reads: list[str] = []
        sent = asyncio.run(host_success(notifiers, reads)(notice()))
        assert (sent, reads) == (False, []), case


def test_slack_wants_a_rollout_that_has_its_thread() -> None:
    slack = SlackNotifier(AsyncWebClient(token="xoxb-not-used"))
    message = Message("host-success", [], "s", "b\n", notice())
    assert not slack.wants(message)
    threaded = notice(slack_channel="C0123", slack_thread_ts="1700000000.000100")
    assert slack.wants(Message("host-success", [], "s", "b\n", threaded))


def test_the_rollout_schedules_only_the_host_notices_a_channel_sends() -> None:
    """PlanHostNoticesActivity's answer (workflows/notices.plan_host_notices): the host
    workflows then schedule only those notification activities."""
    slack = SlackNotifier(AsyncWebClient(token="xoxb-not-used"))
    sample = notice(hostname=None, cluster="cluster-a")
    in_slack = notice(hostname=None, slack_channel="C1", slack_thread_ts="1.2")
    cases: list[tuple[str, list[object], RolloutNotice, HostNotices]] = [
        ("no channel at all", [], sample, HostNotices(start=False, success=False)),
        (
            "e-mail routed to failures and summaries",
            [RoutedNotifier(Channel(name="email"), frozenset({"failure", "summary"}))],
            sample,
            HostNotices(start=False, success=False),
        ),
        (
            "Teams gets successes only",
            [RoutedNotifier(Channel(name="teams"), frozenset({"host-success"}))],
            sample,
            HostNotices(start=False, success=True),
        ),
        (
            "Slack, rollout started outside Slack",
            [slack],
            sample,
            HostNotices(start=False, success=False),
        ),
        ("Slack, rollout started in Slack", [slack], in_slack, HostNotices()),
        ("a webhook takes everything", [Channel()], sample, HostNotices()),
    ]
    for case, notifiers, asked, expected in cases:
        activities = NotificationActivities(notifiers)  # type: ignore[arg-type]
        assert asyncio.run(activities.plan_host_notices(asked)) == expected, case
    # A `patchpilot worker` beside the bot has no Slack client, but the bot posts what it runs:
    # a rollout with a thread gets its host notices unless the routes keep them from Slack.
    routed_away = RoutedNotifier(Channel(name="email"), frozenset({"failure", "summary"}))
    plain_worker = NotificationActivities([routed_away])
    assert asyncio.run(plain_worker.plan_host_notices(in_slack)) == HostNotices()
    slack_quiet = {"slack": ["approval-request", "failure", "summary"]}
    quiet = NotificationActivities([routed_away], routes=slack_quiet)
    assert asyncio.run(quiet.plan_host_notices(in_slack)) == HostNotices(start=False, success=False)
    names_registered = [
        getattr(fn, "__temporal_activity_definition").name
        for fn in NotificationActivities([]).all()
    ]
    assert names.PLAN_HOST_NOTICES in names_registered
