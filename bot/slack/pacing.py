"""How fast a rollout's thread and card change: readable at any size, within Slack's rate rule.

Slack allows about one message a second per channel, with short bursts tolerated
(https://api.slack.com/apis/rate-limits#posting-messages), and a person cannot read faster. So:
- every post into a channel takes one of its `Pacing.burst` posts, refilled one every
  `Pacing.post_seconds` (a little slower than Slack's one a second, so no 429 is ever needed);
- host starts and successes are posted one by one, each when the channel allows, as long as the
  rollout has no other post waiting; when they come faster than that, they wait and go out
  together every `Pacing.flush_seconds`, one message per kind ("✅ 14 patched: a12…a25");
- waves, failures and the summary are never batched: posted as soon as the channel allows (what
  waited goes first, to keep the order);
- the card is updated at most once every `Pacing.card_seconds` per rollout, and always with the
  final state (the summary updates it at once).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from workflows.packages import PackageReport

# The events that may be batched; everything else is posted on its own at once.
BATCHED = ("host-start", "host-success")
# A batch names its hosts up to this many, else its first and last ("a12…a25").
NAMED_HOSTS = 10


@dataclass(frozen=True)
class Pacing:
    """The rule's numbers (seconds and counts); `bot.slack.runner` uses the defaults."""

    burst: int = 2  # posts a channel may take at once ...
    post_seconds: float = 1.25  # ... and one more every this many seconds
    flush_seconds: float = 4.0  # batched host events go out at most this often
    card_seconds: float = 4.0  # at most one card update this often per rollout


@dataclass
class HostEvent:
    """One batched host event: its kind (`BATCHED`), the host, its cluster, and (a success) the
    host's package report when it has one."""

    event: str
    host: str
    cluster: str
    packages: PackageReport | None = None


@dataclass
class RolloutPace:
    """One rollout's waiting host events and last card update (monotonic seconds)."""

    pacing: Pacing
    waiting: list[HostEvent] = field(default_factory=list)
    posting: int = 0  # posts of this rollout waiting for their channel's turn
    card_at: float = float("-inf")  # when chat.update was last called for the card
    # Set when the summary comes: an update waiting for its turn then leaves the card to it.
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def take_waiting(self) -> list[HostEvent]:
        """The waiting host events, oldest first; none wait afterwards."""
        waiting, self.waiting = self.waiting, []
        return waiting

    def card_due_in(self, now: float | None = None) -> float:
        """Seconds until the card may be updated again (0: now)."""
        now = time.monotonic() if now is None else now
        return max(0.0, self.card_at + self.pacing.card_seconds - now)


@dataclass
class EndedRollouts:
    """Rollouts whose summary drew the final card, the latest `kept` of them: a paced update
    already under way when the summary came leaves the card alone."""

    kept: int = 1000
    _ids: dict[str, None] = field(default_factory=dict)

    def add(self, rollout_id: str) -> None:
        self._ids[rollout_id] = None
        while len(self._ids) > self.kept:
            del self._ids[next(iter(self._ids))]

    def __contains__(self, rollout_id: object) -> bool:
        return rollout_id in self._ids


@dataclass
class ChannelBudget:
    """Posts per channel: `burst` at once, one more every `post_seconds` (a token bucket)."""

    pacing: Pacing
    _tokens: dict[str, float] = field(default_factory=dict)
    _at: dict[str, float] = field(default_factory=dict)

    def _refill(self, channel: str, now: float) -> float:
        burst = float(self.pacing.burst)
        gained = (now - self._at.get(channel, now)) / self.pacing.post_seconds
        tokens = min(burst, self._tokens.get(channel, burst) + gained)
        self._tokens[channel], self._at[channel] = tokens, now
        return tokens

    def try_take(self, channel: str) -> bool:
        """Take a post of `channel` if one is left now."""
        if self._refill(channel, time.monotonic()) < 1.0:
            return False
        self._tokens[channel] -= 1.0
        return True

    async def take(self, channel: str) -> None:
        """Take a post of `channel`, waiting until one is left."""
        while not self.try_take(channel):
            missing = 1.0 - self._tokens[channel]
            await asyncio.sleep(max(0.05, missing * self.pacing.post_seconds))


def by_kind(events: list[HostEvent]) -> list[tuple[str, list[HostEvent]]]:
    """`events` grouped by kind in BATCHED's order (starts before successes, so no host is told
    patched before it is told started), hosts in order; empty kinds left out."""
    return [
        (kind, group)
        for kind in BATCHED
        if (group := [event for event in events if event.event == kind])
    ]


def host_names(events: list[HostEvent]) -> str:
    """The hosts of a batch: every name for a few, "first…last" for many."""
    names = [event.host for event in events]
    return ", ".join(names) if len(names) <= NAMED_HOSTS else f"{names[0]}…{names[-1]}"
