"""Notification routing on a real rollout (Temporal dev server, OpenBao, the sshd lab, the SMTP
server): each cluster has its own Teams stand-in, a generic JSON webhook stand-in refuses what it
is sent (and records it), and `notify_routes` decides which channel gets what."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import SecretStr
from temporalio.client import Client

from activities.notify.routing import check_routes
from bot.settings import Settings
from lab import Lab
from tests.support import SERVICES, Mailbox, running_worker, wait_for
from tests.teams.conftest import StandIns, TeamsStandIn
from workflows.models import (
    WORKFLOW_NAME,
    ApprovalDecision,
    Phase,
    RolloutInput,
    RolloutSummary,
)

ALICE, BOB = "alice@example.com", "bob@example.com"


def settings_for(base: Settings, **update: Any) -> Settings:
    return base.model_copy(update={"task_queue": f"route-{uuid.uuid4().hex[:8]}", **update})


def secret_of(endpoint: TeamsStandIn) -> str:
    return endpoint.url.split("sig=")[1]


async def approved_rollout(
    client: Client, settings: Settings, mailbox: Mailbox, clusters: list[str]
) -> RolloutSummary:
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": clusters,
            "pilotHostCount": 0,  # one wave of 3 hosts per cluster: a short test
            "approverEmails": [ALICE],
            "requesterEmail": BOB,
            "updateCommand": "apt-get update && apt-get -y upgrade",
            "serviceList": SERVICES,
            "maxConcurrency": 3,
            "approvalTimeout": 600,
        }
    )
    handle = await client.start_workflow(
        WORKFLOW_NAME,
        rollout,
        id=f"route-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
        result_type=RolloutSummary,
    )
    await wait_for(lambda: mailbox.events("approval-request"), timeout=40)
    await handle.execute_update("approve", ApprovalDecision(approver=ALICE), result_type=str)
    summary = await handle.result()
    history = (await handle.fetch_history()).to_json()
    assert "sig=" not in history  # no webhook URL in Temporal's history
    return summary


async def test_per_cluster_teams_routes_and_a_refusing_json_webhook_on_a_real_rollout(
    fleet: Lab,
    worker_settings: Settings,
    temporal_client: Client,
    mailbox: Mailbox,
    stand_ins: StandIns,
    known_secrets: list[str],
) -> None:
    team_a, team_b, hook = stand_ins.new("a"), stand_ins.new("b"), stand_ins.new("json")
    hook.answers = [(404, {})] * 50  # the JSON webhook refuses everything: 4xx, never retried
    known_secrets.extend(secret_of(e) for e in (team_a, team_b, hook))
    settings = settings_for(
        worker_settings,
        teams_webhooks={"cluster-a": SecretStr(team_a.url), "cluster-b": SecretStr(team_b.url)},
        webhook_url=SecretStr(hook.url),
        notify_routes=check_routes(
            {
                # E-mail gets only the approval request; the webhook's trouble is mailed anyway.
                "email": ["approval-request"],
                "teams": ["approval-request", "host-success", "failure", "wave", "summary"],
                "webhook": ["host-start", "summary"],
            }
        ),
    )
    async with running_worker(temporal_client, settings):
        summary = await approved_rollout(
            temporal_client, settings, mailbox, ["cluster-a", "cluster-b"]
        )
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 6
    await wait_for(lambda: len(hook.times) == 7, timeout=10)

    for endpoint, cluster, letter in ((team_a, "cluster-a", "a"), (team_b, "cluster-b", "b")):
        for post in endpoint.posts:
            [attachment] = post["attachments"]
            assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
            assert attachment["content"]["version"] == "1.4"
        # Its own hosts only, no host-start (routed to the webhook); the rollout's cards too.
        titles = endpoint.titles()
        assert titles[:2] == [
            "Approval needed: patch cluster-a, cluster-b",
            f"Starting {cluster}: all hosts, 3 at a time: {letter}1, {letter}2, {letter}3",
        ]
        assert sorted(titles[2:5]) == [f"✅ Patched {letter}{n} ({cluster})" for n in (1, 2, 3)]
        assert titles[5:] == ["✅ Rollout succeeded: cluster-a, cluster-b"]

    # The JSON webhook was offered each host's start, then the summary, nothing else, each once.
    events = [(p["event"], p["cluster"], p["hostname"]) for p in hook.refused]
    assert events[-1] == ("summary", None, None) and not hook.posts
    assert sorted(events[:-1]) == [
        ("host-start", f"cluster-{c}", f"{c}{n}") for c in "ab" for n in (1, 2, 3)
    ]
    done = hook.refused[-1]
    assert done["rolloutId"] == summary.rollout_id
    assert done["summary"]["patched"] == 6 and done["summary"]["phase"] == "succeeded"
    assert {h["name"] for h in done["summary"]["hosts"]} == {"a1", "a2", "a3", "b1", "b2", "b3"}

    # E-mail: the approval request, and the webhook's refusal reported once to the requester.
    assert {m["X-PatchPilot-Event"] for m in mailbox.messages} == {
        "approval-request",
        "webhook-error",
    }
    [report] = mailbox.events("webhook-error")
    assert report["X-Envelope-To"] == BOB
    assert report["Subject"].strip() == (
        f"[PatchPilot] JSON webhook notifications failing (rollout {summary.rollout_id})"
    )
    body = report.get_content()
    assert f"The JSON webhook at {hook.url.split('/')[2]} refused" in body and "HTTP 404" in body
    assert "PATCHPILOT_WEBHOOK_URL" in body and secret_of(hook) not in body
