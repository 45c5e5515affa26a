"""Ack latency of `/patch` in HTTP mode: 200 correctly signed requests, p50 / p99.

    uv run python bench/slack_ack.py [--requests 200] [--bad 50] [--channels 200]

What runs: the real Temporal dev server (the rollouts are really started), the bot's aiohttp server
with the Bolt AsyncApp in a thread of its own (as in `patchpilot bot`), and the Slack Web API
stand-in answering users.info / chat.postMessage in that same event loop. The load generator sends
the requests one after another from the main thread over one keep-alive connection, as Slack would
(Slack waits up to 3 s for the ack) and times each from sending the request to reading the response.
Everything after the ack (users.info, the status card, starting the workflow, the approval message)
runs concurrently with later requests, so it is part of what the ack latency competes with.
Target (issue 3): p99 < 200 ms.

The stand-in applies Slack's posting rate (about one message a second per channel after a short
burst, 429 with Retry-After beyond it: `lab.slack_standin.rules.ChannelRate`). Each rollout posts
two messages (its card and the approval request), so 200 rollouts started within a few seconds in
one channel would be refused by Slack as well; the requests are spread over `--channels` channels
(default: one per request, as when many teams start rollouts at once), and the bench prints how
many posts Slack answered with 429 (the bot retries them after Retry-After).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bot.embedded import start_temporal_dev_server
from bot.settings import Settings
from bot.slack.app import build_app
from bot.slack.http import serve_http
from lab import free_port
from lab.slack_standin import SlackStandIn, signed_headers, slash_command_body

SECRET = "bench-signing-secret"
CHANNEL = "CBENCH"  # the prefix of the bench's channels: CBENCH0, CBENCH1, …
INVENTORY = """\
cluster-a:
  hosts:
    a1: {ansible_host: 127.0.9.1}
    a2: {ansible_host: 127.0.9.2}
cluster-b:
  hosts:
    b1: {ansible_host: 127.0.9.3}
"""
GOOD = (
    'cluster-a cluster-b pilot=1 services=nginx,postgresql update="apt-get update && apt-get -y '
    'upgrade" approvers=<@UALICE|alice>'
)
BAD = 'cluster-z services="nginx;reboot" update="x" approvers=<@UALICE>'


class BotThread(threading.Thread):
    """The bot (and the Slack stand-in) in an event loop of their own."""

    def __init__(self, temporal_address: str, inventory: Path, channels: list[str]) -> None:
        super().__init__(daemon=True)
        self.channels = channels
        self.temporal_address = temporal_address
        self.inventory = inventory
        self.port = free_port()
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.slack: SlackStandIn | None = None
        self.pending = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as error:  # reported by the main thread
            self.error = error
            self.ready.set()

    async def _main(self) -> None:
        self.stop_event = asyncio.Event()
        async with SlackStandIn(channels=set(self.channels)) as slack:
            self.slack = slack
            slack.add_user("UBOB", "bob", "bob@example.com")
            slack.add_user("UALICE", "alice", "alice@example.com")
            temporal = await Client.connect(
                self.temporal_address, data_converter=pydantic_data_converter
            )
            settings = Settings(
                temporal_address=self.temporal_address,
                task_queue=f"bench-{uuid.uuid4().hex[:8]}",
                inventory=self.inventory,
                slack_bot_token=slack.bot_token,
                slack_signing_secret=SECRET,
                slack_api_url=slack.api_url,
            )
            app, bot = build_app(settings, temporal)
            runner = await serve_http(app, "127.0.0.1", self.port)
            self.ready.set()
            while not self.stop_event.is_set():
                self.pending = len(bot.tasks)
                await asyncio.sleep(0.05)
            await runner.cleanup()

    def stop(self) -> None:
        if self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.join(timeout=10)


def measure(
    port: int, texts: list[str], channels: list[str], slack: SlackStandIn
) -> tuple[list[float], list[int]]:
    """Send `texts` as `/patch` one after another, the i-th in channel i modulo their number;
    the latency of each ack (ms) and each HTTP status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    latencies: list[float] = []
    statuses: list[int] = []
    for index, text in enumerate(texts):
        channel = channels[index % len(channels)]
        body = slash_command_body(text, "UBOB", channel, slack.response_url())
        headers = signed_headers(SECRET, body)
        started = time.perf_counter()
        connection.request("POST", "/slack/events", body=body.encode(), headers=headers)
        response = connection.getresponse()
        response.read()
        latencies.append((time.perf_counter() - started) * 1000)
        statuses.append(response.status)
        if index == 0:
            time.sleep(0.5)  # the first request pays for auth.test once; let it settle
    connection.close()
    return latencies, statuses


def report(name: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]

    return (
        f"{name:<32} n={len(ordered):<4} p50={statistics.median(ordered):6.1f} ms  "
        f"p95={pct(95):6.1f} ms  p99={pct(99):6.1f} ms  max={ordered[-1]:6.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--bad", type=int, default=50)
    parser.add_argument(
        "--channels",
        type=int,
        default=0,
        help="channels the requests are spread over (default: one per request)",
    )
    args = parser.parse_args()
    channels = [f"{CHANNEL}{n}" for n in range(args.channels or args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        inventory = Path(tmp) / "inventory.yml"
        inventory.write_text(INVENTORY)
        with start_temporal_dev_server(log_file=Path(tmp) / "temporal.log") as server:
            bot = BotThread(server.address, inventory, channels)
            bot.start()
            bot.ready.wait(60)
            if bot.error is not None:
                raise bot.error
            slack = bot.slack
            assert slack is not None
            try:
                good, good_status = measure(bot.port, [GOOD] * args.requests, channels, slack)
                bad, bad_status = measure(bot.port, [BAD] * args.bad, channels, slack)
                deadline = time.monotonic() + 120
                while bot.pending and time.monotonic() < deadline:
                    time.sleep(0.1)
                cards = sum(len(slack.top_level(channel)) for channel in channels)
                approvals = len([m for m in slack.messages.values() if m.get("thread_ts")])
                posts = len(slack.calls_to("chat.postMessage"))
                throttled = len(slack.throttled)
                rate = slack.rate
            finally:
                bot.stop()
    print(f"/patch ack latency over HTTP mode (signed requests), {time.strftime('%Y-%m-%d %H:%M')}")
    print(report("valid /patch (starts a rollout)", good))
    print(report("malformed /patch (refused)", bad))
    print(
        f"HTTP statuses: {sorted(set(good_status + bad_status))}; rollouts started and posted: "
        f"{cards} cards, {approvals} approval requests (of {args.requests})"
    )
    rule = (
        f"{rate.burst} at once, then {rate.per_second:g}/s per channel" if rate else "switched off"
    )
    print(
        f"Slack rate rule ({rule}): {posts} chat.postMessage calls over {len(channels)} "
        f"channel(s), {throttled} answered 429"
    )
    p99 = sorted(good)[min(len(good) - 1, round(0.99 * len(good)) - 1)]
    print(f"target p99 < 200 ms: {'met' if p99 < 200 else 'NOT met'}")
    return 0 if set(good_status + bad_status) == {200} and cards == args.requests else 1


if __name__ == "__main__":
    sys.exit(main())
