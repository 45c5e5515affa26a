"""Per-cluster Teams webhooks and the generic JSON webhook, against local stand-in endpoints."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from activities import notify
from activities.notify import Message
from activities.notify.delivery import Target, WebhookDelivery
from activities.notify.teams import TeamsNotifier
from activities.notify.webhook import JsonWebhookNotifier
from tests.teams.conftest import StandIns
from workflows.models import HostProgress, HostState, Phase, RolloutNotice, RolloutSummary

BOB, ALICE = "bob@example.com", "alice@example.com"


def notice(**extra: object) -> RolloutNotice:
    return RolloutNotice.model_validate(
        {
            "rollout_id": "rollout-7",
            "requester_email": BOB,
            "approver_emails": [ALICE],
            "target_clusters": ["cluster-a", "cluster-b", "cluster-c"],
            "hosts_by_cluster": {"cluster-a": ["a1"], "cluster-b": ["b1"], "cluster-c": ["c1"]},
            **extra,
        }
    )


def summary() -> RolloutSummary:
    now = datetime.now(UTC)
    return RolloutSummary(
        rollout_id="rollout-7",
        phase=Phase.SUCCEEDED,
        patched=1,
        failed=0,
        skipped=0,
        duration_seconds=12,
        message="all hosts patched",
        hosts=[HostProgress(name="a1", cluster="cluster-a", state=HostState.DONE, started_at=now)],
    )


class Reports:
    def __init__(self) -> None:
        self.problems: list[str] = []

    async def __call__(self, message: Message, problem: str) -> None:
        self.problems.append(problem)


async def test_teams_cards_go_to_the_clusters_own_webhook_else_the_global_one(
    stand_ins: StandIns,
) -> None:
    a, b, shared = stand_ins.new("a"), stand_ins.new("b"), stand_ins.new("global")
    sender = TeamsNotifier(shared.url, cluster_urls={"cluster-a": a.url, "cluster-b": b.url})
    assert await sender.send(notify.start_notice(notice(hostname="a1", cluster="cluster-a")))
    assert await sender.send(notify.success_notice(notice(hostname="c1", cluster="cluster-c")))
    assert await sender.send(notify.failure_alert(notice(failure_details="Vault is sealed")))
    assert await sender.send(notify.rollout_summary(notice(summary=summary())))
    assert a.titles() == [
        "▶ Patching a1 (cluster-a)",
        "❌ FAILED: the rollout",
        "✅ Rollout succeeded: cluster-a, cluster-b, cluster-c",
    ]
    assert b.titles() == a.titles()[1:]
    # cluster-c has no webhook of its own: its host cards and the rollout's cards, once each.
    assert shared.titles() == ["✅ Patched c1 (cluster-c)", *a.titles()[1:]]


async def test_without_a_global_webhook_clusters_without_their_own_get_nothing(
    stand_ins: StandIns,
) -> None:
    a = stand_ins.new("a")
    sender = TeamsNotifier(cluster_urls={"cluster-a": a.url, "cluster-b": a.url})
    assert not await sender.send(notify.start_notice(notice(hostname="c1", cluster="cluster-c")))
    assert await sender.send(notify.approval_request(notice()))
    assert a.titles() == ["Approval needed: patch cluster-a, cluster-b, cluster-c"]  # one URL, once


async def test_a_4xx_is_reported_once_per_webhook_naming_the_cluster(
    stand_ins: StandIns, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = stand_ins.new("a"), stand_ins.new("b")
    a.answers = [(404, {})] * 10
    b.answers = [(403, {})] * 10
    reports = Reports()
    sender = TeamsNotifier(cluster_urls={"cluster-a": a.url, "cluster-b": b.url}, report=reports)
    with caplog.at_level(logging.ERROR, logger="patchpilot.teams"):
        for _ in range(3):
            assert not await sender.send(notify.approval_request(notice()))
    assert len(a.times) == 3 and len(b.times) == 3  # a 4xx is not retried
    assert sorted(reports.problems) == sorted(
        f"The Teams webhook at {endpoint.url.split('/')[2]} ({cluster}) refused PatchPilot's "
        f"message with HTTP {status}: refused. Its notifications are not delivered until the "
        f'webhook URL (teams_webhooks["{cluster}"] (PATCHPILOT_TEAMS_WEBHOOKS)) is fixed; the '
        "rollout goes on."
        for endpoint, cluster, status in ((a, "cluster-a", 404), (b, "cluster-b", 403))
    )
    assert len([r for r in caplog.records if "refused PatchPilot's message" in r.message]) == 2
    for endpoint in (a, b):
        assert endpoint.url.split("sig=")[1] not in caplog.text + "".join(reports.problems)


async def test_the_json_webhook_payload_per_event(stand_ins: StandIns) -> None:
    hook = stand_ins.new("json")
    sender = JsonWebhookNotifier(hook.url)
    assert await sender.send(notify.approval_request(notice()))
    assert await sender.send(notify.start_notice(notice(hostname="a1", cluster="cluster-a")))
    failed = notice(hostname="b1", cluster="cluster-b", step="update", failure_details="exit 100")
    assert await sender.send(notify.failure_alert(failed))
    assert await sender.send(notify.rollout_summary(notice(summary=summary())))
    approval, start, failure, done = hook.posts
    assert set(approval) == {
        "event",
        "rolloutId",
        "cluster",
        "hostname",
        "step",
        "subject",
        "text",
        "summary",
        "packages",
        "packagesLeftOut",
    }
    assert approval["event"] == "approval-request" and approval["rolloutId"] == "rollout-7"
    assert (approval["cluster"], approval["hostname"], approval["summary"]) == (None, None, None)
    assert "patchpilot approve rollout-7" in approval["text"]
    assert start == {
        "event": "host-start",
        "rolloutId": "rollout-7",
        "cluster": "cluster-a",
        "hostname": "a1",
        "step": None,
        "subject": "[PatchPilot] Patching a1 (cluster-a)",
        "text": "Patching started on a1 in cluster-a (rollout rollout-7).\n",
        "summary": None,
        "packages": {},
        "packagesLeftOut": 0,
    }
    assert (failure["event"], failure["step"], failure["hostname"]) == ("failure", "update", "b1")
    assert done["event"] == "summary" and done["summary"]["rolloutId"] == "rollout-7"
    assert done["summary"]["durationSeconds"] == 12 and done["summary"]["phase"] == "succeeded"
    assert done["summary"]["hosts"][0]["name"] == "a1"


async def test_the_json_webhook_retries_429_and_5xx_and_reports_a_4xx_once(
    stand_ins: StandIns, caplog: pytest.LogCaptureFixture
) -> None:
    hook = stand_ins.new("json")
    hook.answers = [(429, {"Retry-After": "1"}), (503, {"Retry-After": "0"})]
    reports = Reports()
    sender = JsonWebhookNotifier(hook.url, report=reports)
    assert await sender.send(notify.start_notice(notice(hostname="a1", cluster="cluster-a")))
    assert len(hook.times) == 3 and hook.times[1] - hook.times[0] >= 0.95
    hook.answers = [(410, {})] * 3
    caplog.clear()
    with caplog.at_level(logging.INFO):
        for host in ("a1", "a2", "a3"):
            assert not await sender.send(notify.start_notice(notice(hostname=host)))
    assert len(hook.times) == 6 and len(reports.problems) == 1
    assert "The JSON webhook at 127.0.0.1:" in reports.problems[0]
    assert "HTTP 410" in reports.problems[0] and "PATCHPILOT_WEBHOOK_URL" in reports.problems[0]
    assert "sig=" not in reports.problems[0]
    # Neither our log nor httpx's request lines show the URL's secret (the stand-in's does).
    ours = [r for r in caplog.records if not r.name.startswith("aiohttp")]
    assert [r.levelname for r in ours if r.name == "patchpilot.webhook"] == ["ERROR"]
    assert len([r for r in ours if r.name == "httpx"]) == 3
    assert all("sig=" not in r.getMessage() for r in ours)


async def test_retries_stay_inside_the_time_budget(stand_ins: StandIns) -> None:
    hook = stand_ins.new("slow")
    hook.answers = [(429, {"Retry-After": "1"})] * 5
    delivery = WebhookDelivery("JSON webhook", logging.getLogger("test"), budget=1.5)
    message = notify.start_notice(notice(hostname="a1"))
    assert not await delivery.post(Target(hook.url, "PATCHPILOT_WEBHOOK_URL"), {}, message)
    assert len(hook.times) == 2  # a second 1 s wait would overrun the 1.5 s budget


async def test_an_unreachable_json_webhook_answers_false() -> None:
    sender = JsonWebhookNotifier("http://127.0.0.1:9/hook", max_attempts=2, max_retry_wait=0.1)
    assert not await sender.send(notify.start_notice(notice(hostname="a1")))
