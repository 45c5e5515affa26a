"""TeamsNotifier: rollout news as Adaptive Cards to a Teams "Workflows" webhook.

The webhook (Teams: channel > Workflows > "Post to a channel when a webhook request is received")
takes `{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": <Adaptive Card>}]}`.
Cards are version 1.4 and kept under Teams' 28 KB message limit (long host lists are summarised).

Webhooks: a global one and/or one per cluster (see `TeamsNotifier.targets`). Delivery follows
`delivery.py`: errors never fail the rollout and never make the activity retry, 429 and 5xx
are retried honouring Retry-After (bounded), and a 4xx is logged and reported by e-mail once per
webhook URL (naming its cluster and host, never the URL).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from activities.notify import Message
from activities.notify.delivery import DeliveryOptions, Report, Target, WebhookDelivery
from workflows.models import RolloutNotice, RolloutSummary

log = logging.getLogger("patchpilot.teams")

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_VERSION = "1.4"
MAX_MESSAGE_BYTES = 28 * 1024
SIZE_BUDGET = MAX_MESSAGE_BYTES - 2048  # headroom for what Teams adds around the card


class LinkPairLike(Protocol):
    @property
    def approve(self) -> str: ...

    @property
    def reject(self) -> str: ...


LinksFor = Callable[[RolloutNotice], Awaitable[Mapping[str, LinkPairLike]]]
GLOBAL_SETTING = "PATCHPILOT_TEAMS_WEBHOOK_URL"


def envelope(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


def size_of(payload: dict[str, Any]) -> int:
    return len(json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _facts(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in pairs if v]}


def _card(
    body: list[dict[str, Any]], actions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": body,
    }
    if actions:
        card["actions"] = actions
    return card


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fit(build: Callable[[int], dict[str, Any]], total: int) -> dict[str, Any]:
    """The card listing as many of `total` items as fit the size budget (halving until it fits)."""
    shown = total
    while True:
        card = build(shown)
        if shown == 0 or size_of(envelope(card)) <= SIZE_BUDGET:
            return card
        shown //= 2


def _hosts_line(hosts: list[str], shown: int) -> str:
    listed = ", ".join(hosts[:shown])
    more = len(hosts) - min(shown, len(hosts))
    if more:
        listed += f"{', ' if listed else ''}… and {more} more"
    return f"{len(hosts)} hosts: {listed}"


def approval_card(
    notice: RolloutNotice, links: Mapping[str, LinkPairLike] | None
) -> dict[str, Any]:
    hosts = notice.hosts_by_cluster
    approvers = [a for a in notice.approver_emails if a != notice.requester_email]

    def build(shown: int) -> dict[str, Any]:
        body: list[dict[str, Any]] = [
            _text(
                f"Approval needed: patch {', '.join(notice.target_clusters)}",
                weight="Bolder",
                size="Medium",
            ),
            _facts(
                ("Rollout", notice.rollout_id),
                ("Requester", notice.requester_email),
                ("Clusters", ", ".join(notice.target_clusters)),
                ("Pilot hosts per cluster", str(notice.pilot_host_count)),
                ("Services", ", ".join(notice.service_list) or "none"),
                ("Update command", _clip(notice.update_command, 500)),
                ("Approvers", ", ".join(approvers)),
            ),
        ]
        body.extend(
            _text(f"**{cluster}** — {_hosts_line(names, shown)}", spacing="Small")
            for cluster, names in hosts.items()
        )
        if links:
            body.append(
                _text(
                    "Each approver has their own buttons (the link identifies who decides); "
                    "a confirmation page opens first.",
                    isSubtle=True,
                )
            )
            for approver in approvers:
                pair = links.get(approver)
                if pair is None:
                    continue
                body.append(
                    {
                        "type": "ActionSet",
                        "actions": [
                            {
                                "type": "Action.OpenUrl",
                                "title": f"Approve as {approver}",
                                "url": pair.approve,
                                "style": "positive",
                            },
                            {
                                "type": "Action.OpenUrl",
                                "title": f"Reject as {approver}",
                                "url": pair.reject,
                                "style": "destructive",
                            },
                        ],
                    }
                )
        else:
            body.append(
                _text(f"Approve with: patchpilot approve {notice.rollout_id} --as <your e-mail>")
            )
        return _card(body)

    longest = max((len(v) for v in hosts.values()), default=0)
    return _fit(build, longest)


def host_card(event: str, notice: RolloutNotice) -> dict[str, Any]:
    title = {
        "host-start": f"▶ Patching {notice.hostname} ({notice.cluster})",
        "host-success": f"✅ Patched {notice.hostname} ({notice.cluster})",
    }[event]
    detail = "services healthy, out of maintenance mode" if event == "host-success" else "started"
    return _card(
        [
            _text(title, weight="Bolder", color="Good" if event == "host-success" else "Default"),
            _facts(
                ("Rollout", notice.rollout_id),
                ("Host", notice.hostname or ""),
                ("Cluster", notice.cluster or ""),
                ("Status", detail),
            ),
        ]
    )


def failure_card(notice: RolloutNotice) -> dict[str, Any]:
    where = f"{notice.hostname} at step {notice.step}" if notice.hostname else "the rollout"
    return _card(
        [
            _text(f"❌ FAILED: {where}", weight="Bolder", color="Attention", size="Medium"),
            _facts(
                ("Rollout", notice.rollout_id),
                ("Cluster", notice.cluster or ""),
                ("Host", notice.hostname or ""),
                ("Step", notice.step or ""),
            ),
            _text(_clip(notice.failure_details or "", 4000)),
            _text(
                "The rollout stops: no further host will be touched. "
                f"Check it with: patchpilot status {notice.rollout_id}",
                isSubtle=True,
            ),
        ]
    )


def _host_entry(host: Any) -> str:
    line = f"{host.cluster}/{host.name}: {host.state.value}"
    if host.failure_reason:
        line += f" at {host.step}: {_clip(host.failure_reason, 300)}"
    if host.rebooted:
        line += " (rebooted)"
    if host.in_maintenance:
        line += " [IN MAINTENANCE]"
    return line


def summary_card(notice: RolloutNotice, summary: RolloutSummary) -> dict[str, Any]:
    ok = summary.failed == 0 and summary.phase.value in ("succeeded", "dry-run-done")
    # Failed and stuck hosts first: if the list must be cut, they are the ones still shown.
    hosts = sorted(summary.hosts, key=lambda h: (h.state.value != "failed", not h.in_maintenance))

    def build(shown: int) -> dict[str, Any]:
        body: list[dict[str, Any]] = [
            _text(
                f"{'✅' if ok else '⚠'} Rollout {summary.phase.value}: "
                f"{', '.join(notice.target_clusters)}",
                weight="Bolder",
                size="Medium",
                color="Good" if ok else "Attention",
            ),
            _text(_clip(summary.message, 2000)),
            _facts(
                ("Rollout", summary.rollout_id),
                ("Patched", str(summary.patched)),
                ("Failed", str(summary.failed)),
                ("Skipped", str(summary.skipped)),
                ("Duration", f"{summary.duration_seconds:.0f}s"),
            ),
        ]
        if hosts:
            lines = [_host_entry(h) for h in hosts[:shown]]
            if shown < len(hosts):
                lines.append(
                    f"… and {len(hosts) - shown} more hosts "
                    f"(patchpilot status {summary.rollout_id})"
                )
            body.append(_text("\n\n".join(lines), spacing="Medium", fontType="Monospace"))
        return _card(body)

    return _fit(build, len(hosts))


@dataclass
class TeamsNotifier(DeliveryOptions):
    """Posts each message's card to the Teams webhook(s) it belongs to.

    `url` is the global webhook, `cluster_urls` the per-cluster ones (cluster -> URL). A message
    naming a cluster (a host's start, success or failure, a wave) goes to its cluster's webhook,
    else the global one; a rollout-level message (approval request, summary, a failure outside any
    host) goes to the webhook of every target cluster, falling back to the global one, each URL at
    most once.
    """

    url: str | None = field(default=None, repr=False)  # webhook URLs embed a signature: secrets
    links: LinksFor | None = None
    cluster_urls: Mapping[str, str] = field(default_factory=dict, repr=False)
    name: str = "teams"
    delivery: WebhookDelivery = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.delivery = self.delivery_for("Teams webhook", log)

    def targets(self, notice: RolloutNotice) -> list[Target]:
        """The webhooks this notice goes to, each URL once."""
        clusters = [notice.cluster] if notice.cluster else list(notice.target_clusters)
        found: dict[str, Target] = {}
        for cluster in clusters:
            own = self.cluster_urls.get(cluster)
            if own:
                target = Target(
                    own, f'teams_webhooks["{cluster}"] (PATCHPILOT_TEAMS_WEBHOOKS)', cluster
                )
                found.setdefault(own, target)
            elif self.url:
                found.setdefault(self.url, Target(self.url, GLOBAL_SETTING))
        if not clusters and self.url:
            found.setdefault(self.url, Target(self.url, GLOBAL_SETTING))
        return list(found.values())

    def card(self, message: Message, links: Mapping[str, LinkPairLike] | None = None) -> dict:
        notice = message.notice
        if message.event == "approval-request":
            return approval_card(notice, links)
        if message.event in ("host-start", "host-success"):
            return host_card(message.event, notice)
        if message.event == "failure":
            return failure_card(notice)
        if message.event == "summary" and notice.summary is not None:
            return summary_card(notice, notice.summary)
        return _card([_text(message.subject, weight="Bolder"), _text(_clip(message.body, 8000))])

    async def send(self, message: Message) -> bool:
        targets = self.targets(message.notice)
        if not targets:
            return False
        links = None
        if message.event == "approval-request" and self.links is not None:
            links = await self.links(message.notice)
        payload = envelope(self.card(message, links))
        posted = await asyncio.gather(*(self.post(payload, message, t) for t in targets))
        return any(posted)

    async def post(
        self, payload: dict[str, Any], message: Message, target: Target | None = None
    ) -> bool:
        if target is None:
            if not self.url:
                return False
            target = Target(self.url, GLOBAL_SETTING)
        return await self.delivery.post(target, payload, message)


def _secret_value(value: object) -> str:
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter else value)


def teams_from_settings(
    settings: object, links: LinksFor | None = None, report: Report | None = None
) -> TeamsNotifier | None:
    """A TeamsNotifier when PATCHPILOT_TEAMS_WEBHOOK_URL or PATCHPILOT_TEAMS_WEBHOOKS is set."""
    url = getattr(settings, "teams_webhook_url", None)
    value = _secret_value(url) if url is not None else ""
    per_cluster = getattr(settings, "teams_webhooks", None) or {}
    cluster_urls = {cluster: _secret_value(v) for cluster, v in per_cluster.items()}
    if not value and not cluster_urls:
        return None
    return TeamsNotifier(value or None, links=links, report=report, cluster_urls=cluster_urls)
