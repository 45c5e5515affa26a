"""Notification routing: which channel gets which rollout event (`notify_routes` in the settings).

    [notify_routes]
    email = ["approval-request", "failure", "summary"]
    teams = ["approval-request", "host-success", "failure", "summary"]

A channel named in the table gets only the events listed for it (`[]`: none); a channel not named
gets every event it handles, as without the table. A table that sends the approval request to no
channel is refused: nobody would be asked. Reports about a channel itself (a Teams or JSON webhook
answering 4xx, Slack refusing a channel) are not rollout events: they always go by e-mail when SMTP
is configured, whatever the table says.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from activities.notify.messages import Message, Notifier, wanted

log = logging.getLogger("patchpilot.routing")

CHANNELS: tuple[str, ...] = ("slack", "email", "teams", "webhook")
EVENTS: tuple[str, ...] = (
    "approval-request",
    "host-start",
    "host-success",
    "failure",
    "wave",
    "summary",
)
Routes = Mapping[str, Sequence[str]]


def check_routes(routes: Routes) -> dict[str, list[str]]:
    """The routes, validated: known channels and events only, approval requests reach someone."""
    problems: list[str] = []
    checked: dict[str, list[str]] = {}
    for channel, events in routes.items():
        if channel not in CHANNELS:
            problems.append(f"unknown channel {channel!r} (valid channels: {', '.join(CHANNELS)})")
            continue
        if isinstance(events, str) or not isinstance(events, Sequence):
            problems.append(f"{channel}: expected a list of events, e.g. ['failure', 'summary']")
            continue
        unknown = [event for event in events if event not in EVENTS]
        if unknown:
            problems.append(
                f"{channel}: unknown event {', '.join(repr(str(e)) for e in unknown)} "
                f"(valid events: {', '.join(EVENTS)})"
            )
            continue
        checked[channel] = list(dict.fromkeys(events))
    if not problems and not any("approval-request" in allowed(checked, c) for c in CHANNELS):
        problems.append(
            "no channel gets approval-request, so nobody would be asked to approve; add it to at "
            "least one channel's list (channels not named get every event)"
        )
    if problems:
        raise ValueError("notify_routes: " + "; ".join(problems))
    return checked


def allowed(routes: Routes | None, channel: str) -> tuple[str, ...]:
    """The events `channel` gets under `routes` (every event when the channel is not named)."""
    if not routes or channel not in routes:
        return EVENTS
    return tuple(routes[channel])


@dataclass
class RoutedNotifier:
    """Passes on only the rollout events routed to its channel; anything that is not a rollout event
    (a report about a channel's own trouble) always passes."""

    inner: Notifier
    events: frozenset[str]
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = self.inner.name

    def _routed(self, message: Message) -> bool:
        return message.event not in EVENTS or message.event in self.events

    def wants(self, message: Message) -> bool:
        return self._routed(message) and wanted(self.inner, message)

    async def send(self, message: Message) -> bool:
        if not self._routed(message):
            return False
        return await self.inner.send(message)


def route(notifiers: Sequence[Notifier], routes: Routes | None) -> list[Notifier]:
    """Each notifier wrapped with its channel's events (unwrapped when it gets every event)."""
    routed: list[Notifier] = []
    for notifier in notifiers:
        events = allowed(routes, notifier.name)
        routed.append(notifier if events == EVENTS else RoutedNotifier(notifier, frozenset(events)))
    present = [n.name for n in notifiers]
    if present and not any("approval-request" in allowed(routes, name) for name in present):
        log.warning(
            "notify_routes sends approval requests to %s, none of which is configured here "
            "(configured: %s): approvers are not asked by any channel; they can still decide "
            "with `patchpilot approve|reject`",
            ", ".join(c for c in CHANNELS if "approval-request" in allowed(routes, c)),
            ", ".join(present),
        )
    return routed
