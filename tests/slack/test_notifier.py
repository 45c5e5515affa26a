"""SlackNotifier and the Block Kit builders against the Slack Web API stand-in."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.exceptions import ApplicationError

from activities import notify
from bot.slack import blocks
from bot.slack.client import web_client
from bot.slack.notifier import SlackNotifier
from lab.slack_standin import SlackStandIn
from workflows.models import (
    ClusterProgress,
    HostProgress,
    HostState,
    Phase,
    RolloutNotice,
    RolloutProgress,
    RolloutSummary,
)

CHANNEL = "CPATCH"


@pytest_asyncio.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(channels={CHANNEL, "COTHER"}, not_member={"COTHER"}) as standin:
        yield standin


async def card(slack: SlackStandIn, channel: str = CHANNEL) -> str:
    client = web_client(slack.bot_token, slack.api_url)
    posted = await client.chat_postMessage(channel=CHANNEL, text="card")
    return str(posted["ts"])


def notice(thread_ts: str | None, channel: str | None = CHANNEL, **extra: object) -> RolloutNotice:
    return RolloutNotice.model_validate(
        {
            "rolloutId": "patch-cluster-a-1",
            "requesterEmail": "bob@example.com",
            "approverEmails": ["alice@example.com"],
            "targetClusters": ["cluster-a"],
            "hostsByCluster": {"cluster-a": ["a1", "a2"]},
            "pilotHostCount": 1,
            "updateCommand": "apt-get -y upgrade",
            "serviceList": ["nginx"],
            "slackChannel": channel,
            "slackThreadTs": thread_ts,
            **extra,
        }
    )


async def test_host_messages_go_into_the_thread_and_the_card_is_updated(
    slack: SlackStandIn,
) -> None:
    ts = await card(slack)
    notifier = SlackNotifier(web_client(slack.bot_token, slack.api_url))
    base = notice(ts, hostname="a1", cluster="cluster-a")
    assert await notifier.send(notify.start_notice(base))
    assert await notifier.send(notify.success_notice(base))
    failed = notice(ts, hostname="a2", cluster="cluster-a", step="update", failureDetails="boom")
    assert await notifier.send(notify.failure_alert(failed))
    texts = [message["text"] for message in slack.thread(CHANNEL, ts)]
    assert texts[0] == ":arrow_forward: Patching *a1* (cluster-a)"
    assert texts[1].startswith(":white_check_mark: *a1* (cluster-a) patched")
    assert texts[2] == ":x: *Failure*: boom"
    parent = slack.messages[(CHANNEL, ts)]
    assert parent["updates"] == 3
    assert "0/2 done" in str(parent["blocks"])  # no Temporal: the card from the notice alone


async def test_the_approval_request_only_updates_the_card(slack: SlackStandIn) -> None:
    ts = await card(slack)
    notifier = SlackNotifier(web_client(slack.bot_token, slack.api_url))
    assert await notifier.send(notify.approval_request(notice(ts)))
    assert slack.thread(CHANNEL, ts) == []
    assert slack.messages[(CHANNEL, ts)]["updates"] == 1


async def test_a_rollout_without_a_slack_thread_is_not_for_slack(slack: SlackStandIn) -> None:
    notifier = SlackNotifier(web_client(slack.bot_token, slack.api_url))
    assert await notifier.send(notify.start_notice(notice(None, channel=None))) is False
    assert slack.calls == []


async def test_429_is_retried_after_retry_after(slack: SlackStandIn) -> None:
    ts = await card(slack)
    slack.fail("chat.postMessage", "ratelimited", status=429, retry_after=1)
    notifier = SlackNotifier(web_client(slack.bot_token, slack.api_url))
    started = time.monotonic()
    assert await notifier.send(notify.start_notice(notice(ts, hostname="a1", cluster="c")))
    attempts = [call.at for call in slack.calls_to("chat.postMessage")][1:]
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= 0.95
    assert time.monotonic() - started >= 0.95
    assert len(slack.thread(CHANNEL, ts)) == 1


async def test_429_beyond_the_retries_fails_the_activity_attempt_for_temporal_to_retry(
    slack: SlackStandIn,
) -> None:
    ts = await card(slack)
    slack.fail("chat.postMessage", "ratelimited", status=429, retry_after=0, times=5)
    notifier = SlackNotifier(web_client(slack.bot_token, slack.api_url, rate_limit_retries=1))
    with pytest.raises(ApplicationError, match="ratelimited"):
        await notifier.send(notify.start_notice(notice(ts, hostname="a1", cluster="c")))
    assert slack.thread(CHANNEL, ts) == []


@pytest.mark.parametrize(
    ("channel", "error"), [("CGONE", "channel_not_found"), ("COTHER", "not_in_channel")]
)
async def test_a_channel_the_bot_cannot_post_to_is_logged_not_fatal(
    slack: SlackStandIn, caplog: pytest.LogCaptureFixture, channel: str, error: str
) -> None:
    notifier = SlackNotifier(web_client(slack.bot_token, slack.api_url))
    with caplog.at_level(logging.WARNING, logger="patchpilot.slack.notifier"):
        delivered = await notifier.send(
            notify.start_notice(notice("1700000001.000001", channel=channel, hostname="a1"))
        )
    assert delivered is False
    assert error in caplog.text and "patch-cluster-a-1" in caplog.text
    assert slack.calls_to("chat.update") == []


async def test_the_summary_is_posted_with_every_host(slack: SlackStandIn) -> None:
    ts = await card(slack)
    summary = RolloutSummary(
        rollout_id="patch-cluster-a-1",
        phase=Phase.FAILED,
        patched=1,
        failed=1,
        skipped=0,
        duration_seconds=12.4,
        message="host a2 failed at step update: exit 1",
        hosts=[
            HostProgress(name="a1", cluster="cluster-a", state=HostState.DONE),
            HostProgress(
                name="a2",
                cluster="cluster-a",
                state=HostState.FAILED,
                step="update",
                failure_reason="exit 1",
                in_maintenance=True,
            ),
        ],
    )
    notifier = SlackNotifier(web_client(slack.bot_token, slack.api_url))
    assert await notifier.send(notify.rollout_summary(notice(ts, summary=summary)))
    text = slack.thread(CHANNEL, ts)[0]["text"]
    assert "*Rollout failed* — patched 1, failed 1, skipped 0, duration 12s" in text
    assert "cluster-a/a2: failed at update: exit 1 [IN MAINTENANCE]" in text


def big_progress(clusters: int, hosts: int) -> RolloutProgress:
    return RolloutProgress(
        rollout_id="patch-" + "x" * 150,
        phase=Phase.PATCHING,
        requester_email="bob@example.com",
        approver_emails=[f"approver{i}@example.com" for i in range(300)],
        started_at=datetime.now(UTC),
        clusters=[
            ClusterProgress(
                name=f"cluster-{c}",
                note="n" * 4000,
                hosts=[
                    HostProgress(
                        name=f"h{c}-{h}",
                        cluster=f"cluster-{c}",
                        state=HostState.FAILED if h % 2 else HostState.RUNNING,
                        step="update",
                        failure_reason="r" * 500,
                    )
                    for h in range(hosts)
                ],
            )
            for c in range(clusters)
        ],
    )


def test_status_card_stays_within_block_kit_limits_for_huge_rollouts() -> None:
    progress = big_progress(clusters=60, hosts=50)
    info = blocks.CardInfo(
        rollout_id=progress.rollout_id,
        clusters=[c.name for c in progress.clusters],
        pilot=2,
        services=[f"svc{i}" for i in range(500)],
        update_command="u" * 9000,
        requester="bob@example.com",
        approvers=progress.approver_emails,
        ui_link="http://localhost:8233/namespaces/default/workflows/x",
        progress=progress,
    )
    rendered = blocks.as_dicts(blocks.status_card(info))  # raises past any limit
    assert len(rendered) <= 50
    assert len(blocks.card_text(info)) <= 3000


def test_status_card_counts_done_per_cluster_and_names_the_current_step() -> None:
    progress = RolloutProgress(
        rollout_id="r1",
        phase=Phase.PATCHING,
        requester_email="bob@example.com",
        approver_emails=["alice@example.com"],
        decided_by="alice@example.com",
        clusters=[
            ClusterProgress(
                name="cluster-a",
                hosts=[
                    HostProgress(name="a1", cluster="cluster-a", pilot=True, state=HostState.DONE),
                    HostProgress(
                        name="a2", cluster="cluster-a", state=HostState.RUNNING, step="update"
                    ),
                    HostProgress(name="a3", cluster="cluster-a"),
                ],
            )
        ],
    )
    info = blocks.CardInfo(
        rollout_id="r1",
        clusters=["cluster-a"],
        pilot=1,
        services=[],
        update_command="u",
        requester="bob@example.com",
        approvers=["alice@example.com"],
        progress=progress,
    )
    text = str(blocks.as_dicts(blocks.status_card(info)))
    assert "*cluster-a*: 1/3 done · now: a2 at update" in text
    assert "*Approved by*\\nalice@example.com" in text
    assert blocks.card_text(info).endswith("patching, 1/3 hosts done")


def test_approval_request_has_both_buttons_carrying_the_rollout_id() -> None:
    rendered = blocks.as_dicts(
        blocks.approval_request("r1", "<@UBOB>", ["<@UALICE>", "carol@example.com"], ["cluster-a"])
    )
    actions = rendered[1]["elements"]
    assert [(a["action_id"], a["value"]) for a in actions] == [
        (blocks.APPROVE_ACTION, "r1"),
        (blocks.REJECT_ACTION, "r1"),
    ]
    assert rendered[0]["text"]["text"].startswith("<@UALICE> carol@example.com: <@UBOB> asks")


class Recorder:
    name = "recorder"

    def __init__(self) -> None:
        self.sent: list[notify.Message] = []

    async def send(self, message: notify.Message) -> bool:
        self.sent.append(message)
        return True


async def test_a_channel_refusal_is_reported_once_per_rollout_through_the_fallback(
    slack: SlackStandIn,
) -> None:
    fallback = Recorder()
    notifier = SlackNotifier(web_client(slack.bot_token, slack.api_url), fallback=fallback)
    lost = notice("1700000001.000001", channel="COTHER", hostname="a1", cluster="cluster-a")
    assert await notifier.send(notify.start_notice(lost)) is False
    assert await notifier.send(notify.success_notice(lost)) is False
    (warning,) = fallback.sent
    assert warning.event == "slack-undeliverable"
    assert warning.recipients == ["bob@example.com", "alice@example.com"]
    assert "channel COTHER: not_in_channel" in warning.body and "/invite" in warning.body


@settings(max_examples=40, deadline=None)
@given(
    words=st.lists(st.text(max_size=300), min_size=1, max_size=8),
    update=st.text(max_size=9000),
    reason=st.text(max_size=5000),
    hosts=st.integers(min_value=0, max_value=25),
)
def test_any_card_and_approval_request_is_valid_block_kit(
    words: list[str], update: str, reason: str, hosts: int
) -> None:
    progress = RolloutProgress(
        rollout_id=words[0],
        phase=Phase.FAILED,
        requester_email=words[-1],
        approver_emails=words,
        message=reason,
        clusters=[
            ClusterProgress(
                name=word,
                note=reason or None,
                hosts=[
                    HostProgress(
                        name=f"{word}{i}",
                        cluster=word,
                        state=list(HostState)[i % 5],
                        step=reason[:40],
                        failure_reason=reason,
                    )
                    for i in range(hosts)
                ],
            )
            for word in words
        ],
    )
    info = blocks.CardInfo(
        rollout_id=words[0],
        clusters=words,
        pilot=len(words),
        services=words,
        update_command=update,
        requester=words[-1],
        approvers=words,
        progress=progress,
    )
    card = blocks.as_dicts(blocks.status_card(info))
    assert 2 <= len(card) <= 50
    assert blocks.as_dicts(blocks.approval_request(words[0][:200] or "r", words[-1], words, words))
    assert len(blocks.card_text(info)) <= 3000


def test_the_card_shows_a_wait_for_a_maintenance_window() -> None:
    from datetime import UTC, datetime

    from bot.slack.blocks import CardInfo, as_dicts, status_card
    from workflows.models import Phase, RolloutProgress

    progress = RolloutProgress(
        rollout_id="r1",
        phase=Phase.PATCHING,
        requester_email="bob@example.com",
        approver_emails=["alice@example.com"],
        started_at=datetime.now(UTC),
        waiting_for_window="cluster-a: waiting for window Sat 2026-11-28 02:00 UTC",
    )
    card = CardInfo(
        rollout_id="r1",
        clusters=["cluster-a"],
        pilot=None,
        services=None,
        update_command=None,
        requester="bob@example.com",
        approvers=["alice@example.com"],
        progress=progress,
    )
    assert "waiting for window Sat 2026-11-28 02:00 UTC" in str(as_dicts(status_card(card)))
