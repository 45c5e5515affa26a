"""TeamsNotifier: rollout news as Adaptive Cards to a Teams "Workflows" webhook.

The webhook (Teams: channel > Workflows > "Post to a channel when a webhook request is received")
takes `{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": <Adaptive Card>}]}`.
Cards are version 1.4 and kept under Teams' 28 KB message limit (long host lists are summarised).

Errors never fail the rollout and never make the activity retry (which would re-send the e-mails):
429 is retried honouring Retry-After (bounded), 5xx and network errors are retried a little, and a
4xx is logged once per webhook (and reported by e-mail through `report`) and answered `False`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from activities.notify import Message
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
Report = Callable[[Message, str], Awaitable[object]]


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
                ("Services", ", ".join(notice.services) or "none"),
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


def _retry_after(response: httpx.Response, default: float) -> float:
    value = response.headers.get("Retry-After")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return default


@dataclass
class TeamsNotifier:
    url: str = field(repr=False)  # the webhook URL embeds its own signature: a secret
    links: LinksFor | None = None
    report: Report | None = None
    timeout: float = 10.0
    max_attempts: int = 4
    max_retry_wait: float = 20.0  # longest honoured Retry-After; the activity has 60 s in all
    name: str = "teams"
    _reported: set[int] = field(default_factory=set, repr=False)

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
        links = None
        if message.event == "approval-request" and self.links is not None:
            links = await self.links(message.notice)
        payload = envelope(self.card(message, links))
        return await self.post(payload, message)

    async def post(self, payload: dict[str, Any], message: Message) -> bool:
        where = urlsplit(self.url).netloc or "the Teams webhook"
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            for attempt in range(1, self.max_attempts + 1):
                last = attempt == self.max_attempts
                try:
                    response = await client.post(self.url, json=payload)
                except httpx.HTTPError as error:
                    log.warning("Teams webhook %s unreachable (%s)", where, type(error).__name__)
                    if last:
                        return False
                    await asyncio.sleep(min(2.0**attempt, self.max_retry_wait))
                    continue
                if response.is_success:
                    return True
                status = response.status_code
                if status == 429 or status >= 500:
                    wait = _retry_after(response, min(2.0**attempt, self.max_retry_wait))
                    if last or wait > self.max_retry_wait:
                        log.warning(
                            "Teams webhook %s still answers %s after %s attempts; %s not posted",
                            where,
                            status,
                            attempt,
                            message.event,
                        )
                        return False
                    await asyncio.sleep(wait)
                    continue
                await self._refused(status, response.text[:300], where, message)
                return False
        return False

    async def _refused(self, status: int, text: str, where: str, message: Message) -> None:
        if status in self._reported:
            return
        self._reported.add(status)
        problem = (
            f"The Teams webhook at {where} refused PatchPilot's message with HTTP {status}: "
            f"{text or '(no body)'}. Teams notifications are not delivered until the webhook "
            "URL (PATCHPILOT_TEAMS_WEBHOOK_URL) is fixed; the rollout goes on."
        )
        log.error(problem)
        if self.report is not None:
            try:
                await self.report(message, problem)
            except Exception as error:
                log.warning("could not report the Teams error by e-mail: %s", error)


def teams_from_settings(
    settings: object, links: LinksFor | None = None, report: Report | None = None
) -> TeamsNotifier | None:
    """A TeamsNotifier when PATCHPILOT_TEAMS_WEBHOOK_URL is set."""
    url = getattr(settings, "teams_webhook_url", None)
    if url is None:
        return None
    value = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url)
    return TeamsNotifier(value, links=links, report=report) if value else None
