"""The thread's pacing rule (bot.slack.pacing) against the Slack stand-in's own rate rule: host
events faster than the channel takes them are batched, a failure is never batched and never
waits behind them, the card is updated at most once per interval and always with the last event."""

from __future__ import annotations

import asyncio
import itertools
import time

from activities import notify
from bot.slack.client import web_client
from bot.slack.notifier import SlackNotifier
from bot.slack.pacing import Pacing
from lab.slack_standin import SlackStandIn
from workflows.models import HostProgress, HostState, Phase, RolloutNotice, RolloutSummary

CHANNEL = "CPATCH"
FAST = Pacing(burst=1, post_seconds=0.3, flush_seconds=0.6, card_seconds=0.6)


def notice(ts: str, host: str | None = None, **extra: object) -> RolloutNotice:
    return RolloutNotice.model_validate(
        {
            "rolloutId": "patch-cluster-a-1",
            "requesterEmail": "bob@example.com",
            "approverEmails": ["alice@example.com"],
            "targetClusters": ["cluster-a"],
            "hostsByCluster": {"cluster-a": [f"a{i}" for i in range(1, 9)]},
            "pilotHostCount": 1,
            "updateCommand": "apt-get update && apt-get -y upgrade",
            "serviceList": ["nginx"],
            "slackChannel": CHANNEL,
            "slackThreadTs": ts,
            "hostname": host,
            "cluster": "cluster-a" if host else None,
            **extra,
        }
    )


async def test_fast_host_events_are_batched_and_a_failure_goes_out_at_once() -> None:
    async with SlackStandIn(channels={CHANNEL}) as slack:
        client = web_client(slack.bot_token, slack.api_url)
        ts = str((await client.chat_postMessage(channel=CHANNEL, text="card"))["ts"])
        notifier = SlackNotifier(client, pacing=FAST)
        await asyncio.sleep(1.0)  # the card's post is paid back
        started = [notifier.send(notify.start_notice(notice(ts, f"a{i}"))) for i in range(1, 7)]
        assert all(await asyncio.gather(*started))
        failed = notice(ts, "a1", step="update", failureDetails="host a1 failed at update")
        assert await notifier.send(notify.failure_alert(failed))
        texts = [message["text"] for message in slack.thread(CHANNEL, ts)]
        assert texts[0] == ":arrow_forward: Patching *a1* (cluster-a)"
        assert texts[1] == ":arrow_forward: 5 patching (cluster-a): a2, a3, a4, a5, a6"
        assert texts[2] == ":x: *Failure*: host a1 failed at update"
        assert len(texts) == 3 and slack.throttled == []
        await asyncio.sleep(1.5)  # the last planned card update
        versions = slack.card_versions(CHANNEL, ts)
        assert 2 <= len(versions) <= 4  # the post, then at most one update per 0.6 s
        assert all("apt-get update && apt-get -y upgrade" in v for v in versions[1:])


class SlowProgress(SlackNotifier):
    """A notifier whose progress query takes 0.4 s every other time, as a loaded worker's does."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.queries = 0

    async def _progress(self, rollout_id: str) -> None:
        self.queries += 1
        await asyncio.sleep(0.4 if self.queries % 2 else 0.0)


async def test_card_updates_keep_their_interval_at_slack_when_progress_queries_are_slow() -> None:
    async with SlackStandIn(channels={CHANNEL}) as slack:
        client = web_client(slack.bot_token, slack.api_url)
        ts = str((await client.chat_postMessage(channel=CHANNEL, text="card"))["ts"])
        notifier = SlowProgress(client, pacing=FAST)
        sent = []
        for i in range(1, 9):
            started = notify.start_notice(notice(ts, f"a{i}"))
            sent.append(asyncio.create_task(notifier.send(started)))
            await asyncio.sleep(0.25)
        assert all(await asyncio.gather(*sent))
        await asyncio.sleep(2.0)  # the last planned card update
        updates = [call.at for call in slack.calls_to("chat.update")]
        gaps = [round(b - a, 2) for a, b in itertools.pairwise(updates)]
        assert len(updates) >= 3 and notifier.queries == len(updates)
        assert all(gap >= FAST.card_seconds for gap in gaps), gaps


async def test_the_summary_updates_the_card_at_once_even_with_an_update_waiting() -> None:
    slow_card = Pacing(burst=1, post_seconds=0.3, flush_seconds=0.6, card_seconds=5.0)
    summary = RolloutSummary(
        rollout_id="patch-cluster-a-1",
        phase=Phase.SUCCEEDED,
        patched=2,
        failed=0,
        skipped=0,
        duration_seconds=3.0,
        message="every host was patched",
        hosts=[
            HostProgress(name=f"a{i}", cluster="cluster-a", state=HostState.DONE) for i in (1, 2)
        ],
    )
    async with SlackStandIn(channels={CHANNEL}) as slack:
        client = web_client(slack.bot_token, slack.api_url)
        ts = str((await client.chat_postMessage(channel=CHANNEL, text="card"))["ts"])
        notifier = SlackNotifier(client, pacing=slow_card)
        await asyncio.sleep(1.0)  # the card's post is paid back
        assert await notifier.send(notify.start_notice(notice(ts, "a1")))  # the card at once
        # The next update waits for its turn (5 s); a second one waits in the card's lock.
        waiting = asyncio.create_task(notifier.update_card(notify.start_notice(notice(ts, "a2"))))
        await asyncio.sleep(0.2)
        told = time.monotonic()
        assert await notifier.send(notify.rollout_summary(notice(ts, summary=summary)))
        assert time.monotonic() - told < 3.0, "the summary waited for the paced update"
        assert await waiting is False  # left the card to the summary
        await asyncio.sleep(0.5)
        # An update already under way when the summary came (a flush that had woken) leaves
        # the final card alone.
        assert await notifier.update_card(notify.start_notice(notice(ts, "a2"))) is False
        # The post, the first update, the summary's: nothing after the summary's.
        assert len(slack.card_versions(CHANNEL, ts)) == 3
