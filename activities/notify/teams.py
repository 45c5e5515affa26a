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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from activities.notify.delivery import Target, WebhookNotifier
from activities.notify.messages import (
    Message,
    clip,
    failure_place,
    host_count,
    host_outcome,
    script_sections,
)
from activities.notify.packages import short_line, would_line
from workflows.models import HostProgress, RolloutNotice, RolloutSummary
from workflows.packages import PackageReport
from workflows.repair import REPAIR_SHOWN

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_VERSION = "1.4"
MAX_MESSAGE_BYTES = 28 * 1024  # Teams refuses a webhook message over 28 KB (Microsoft's limit)
SIZE_BUDGET = MAX_MESSAGE_BYTES - 2048  # headroom for what Teams adds around the card


GLOBAL_SETTING = "PATCHPILOT_TEAMS_WEBHOOK_URL"


def envelope(card: dict[str, Any]) -> dict[str, Any]:
    """The message a Workflows webhook takes, carrying one Adaptive Card."""
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


def size_of(payload: dict[str, Any]) -> int:
    """Bytes of `payload` as posted (UTF-8 JSON), to hold against Teams' 28 KB limit."""
    return len(json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def _facts(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in pairs if v]}


def _card(body: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": body,
    }


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


def _decide_blocks(notice: RolloutNotice) -> list[dict[str, Any]]:
    """How to decide. A channel card never carries personal Approve links: anyone in the channel
    could open one and decide as that approver. Each approver has their own link by e-mail."""
    return [
        _text(
            "Approvers decide from the personal link in their own e-mail, in Slack, or with: "
            f"patchpilot approve {notice.rollout_id} --as <your e-mail>",
            wrap=True,
        )
    ]


# Text longer than this (or with more lines) is folded behind a "Show" button: the card stays
# readable, and nothing is cut (Action.ToggleVisibility, Adaptive Cards 1.2+).
FOLD_CHARS = 300
FOLD_LINES = 6


def _shown_text(key: str, heading: str, text: str) -> list[dict[str, Any]]:
    """`heading` and `text` in full: inline when short, else folded behind a toggle button
    (`key` names the hidden container, unique in the card)."""
    if len(text) <= FOLD_CHARS and text.count("\n") < FOLD_LINES:
        return [
            _text(heading, weight="Bolder", spacing="Small"),
            _text(text, fontType="Monospace"),
        ]
    size = f"{len(text)} characters, {text.count(chr(10)) + 1} lines"
    return [
        _text(f"{heading} ({size}, folded: press Show to read it whole)", weight="Bolder"),
        {
            "type": "ActionSet",
            "actions": [
                {"type": "Action.ToggleVisibility", "title": "Show / hide", "targetElements": [key]}
            ],
        },
        {
            "type": "Container",
            "id": key,
            "isVisible": False,
            "items": [_text(text, fontType="Monospace")],
        },
    ]


def _what_runs(notice: RolloutNotice, *, whole: bool) -> list[dict[str, Any]]:
    """The update command and every script, in full; when `whole` is False (they do not fit
    Teams' 28 KB), a sentence saying so and where to read them all instead. With
    repairInterruptedDpkg, the repair it runs first (workflows/repair.py), always."""
    profile = f" (update profile {notice.update_profile})" if notice.update_profile else ""
    repair = [_text(REPAIR_SHOWN, weight="Bolder")] if notice.repair_interrupted_dpkg else []
    if not whole:
        length = len(notice.update_command) + sum(len(s) for _, s in script_sections(notice))
        return [
            _text(
                f"⚠ The update command{profile} and {len(script_sections(notice))} scripts "
                f"({length} characters) do not fit a Teams card (28 KB). Read them whole before "
                "deciding: on the confirmation page of the personal link in your e-mail, or in "
                "the approval e-mail itself.",
                weight="Bolder",
                color="Attention",
            ),
            *repair,
        ]
    blocks = _shown_text("command", f"Update command{profile}:", notice.update_command) + repair
    for index, (heading, script) in enumerate(script_sections(notice)):
        blocks.extend(_shown_text(f"script-{index}", f"{heading}:", script))
    return blocks


def approval_card(notice: RolloutNotice) -> dict[str, Any]:
    """The approval request: what will run where, and how to decide. The update command and every
    script are shown whole (long ones folded behind a Show button), with the digest the approvals
    sign; host lists are cut, per cluster, as far as the size budget needs, always saying how many
    hosts there are. Only when command and scripts alone exceed the budget does the card say so
    and send approvers to the e-mail and the link page, which show them all."""
    hosts = notice.hosts_by_cluster
    approvers = [a for a in notice.approver_emails if a != notice.requester_email]

    def build(shown: int, whole: bool = True) -> dict[str, Any]:
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
                ("Hosts", str(host_count(notice)) if hosts else ""),
                ("Pilot hosts per cluster", str(notice.pilot_host_count)),
                ("Services", ", ".join(notice.service_list) or "none"),
                ("Approvers", ", ".join(approvers)),
                ("Limit (Ansible host pattern)", notice.host_pattern or ""),  # none: not shown
                ("Digest (what the approvals sign)", notice.digest or ""),
            ),
            *_what_runs(notice, whole=whole),
        ]
        body.extend(
            _text(f"**{cluster}** — {_hosts_line(names, shown)}", spacing="Small")
            for cluster, names in hosts.items()
        )
        return _card(body + _decide_blocks(notice))

    longest = max((len(v) for v in hosts.values()), default=0)
    card = _fit(build, longest)
    if size_of(envelope(card)) > SIZE_BUDGET:
        card = _fit(lambda shown: build(shown, whole=False), longest)
    return card


def host_card(
    event: str, notice: RolloutNotice, report: PackageReport | None = None
) -> dict[str, Any]:
    """A host's start or success (`event` "host-start" / "host-success"), with the short line
    of the host's package report when it has one."""
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
                ("Packages", short_line(report) if report is not None else ""),
            ),
        ]
    )


def failure_card(notice: RolloutNotice) -> dict[str, Any]:
    """A failure: where, and its details (cut to 4,000 characters)."""
    return _card(
        [
            _text(
                f"❌ FAILED: {failure_place(notice)}",
                weight="Bolder",
                color="Attention",
                size="Medium",
            ),
            _facts(
                ("Rollout", notice.rollout_id),
                ("Cluster", notice.cluster or ""),
                ("Host", notice.hostname or ""),
                ("Step", notice.step or ""),
            ),
            _text(clip(notice.failure_details or "", 4000)),
            _text(
                "The rollout stops: no further host will be touched. "
                f"Check it with: patchpilot status {notice.rollout_id}",
                isSubtle=True,
            ),
        ]
    )


def summary_card(
    notice: RolloutNotice,
    summary: RolloutSummary,
    packages: Mapping[str, PackageReport] | None = None,
) -> dict[str, Any]:
    """The rollout's end: counts, then one line per host with the short line of its package
    report (a dry run: what `apt-get -s` says would change), cut as far as the size budget
    needs."""
    packages = packages or {}
    would = {found.hostname: would_line(found) for found in summary.dry_run or []}

    def host_lines(host: HostProgress) -> str:
        report = packages.get(host.name)
        extra = (
            short_line(report) if report is not None else (host.packages or would.get(host.name))
        )
        line = host_outcome(host, reason_limit=300, dry_run=summary.dry_run is not None)
        line += f"\nnotes: {'; '.join(host.notes)[:600]}" if host.notes else ""
        return f"{line}\npackages: {extra}" if extra else line

    ok = summary.failed == 0 and summary.phase.ok
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
            _text(clip(summary.message, 2000)),
            _facts(
                ("Rollout", summary.rollout_id),
                *((word.capitalize(), str(n)) for word, n in summary.counts()),
                ("Duration", f"{summary.duration_seconds:.0f}s"),
            ),
        ]
        if hosts:
            lines = [host_lines(h) for h in hosts[:shown]]
            if shown < len(hosts):
                lines.append(
                    f"… and {len(hosts) - shown} more hosts "
                    f"(patchpilot status {summary.rollout_id})"
                )
            body.append(_text("\n\n".join(lines), spacing="Medium", fontType="Monospace"))
        return _card(body)

    return _fit(build, len(hosts))


@dataclass
class TeamsNotifier(WebhookNotifier):
    """Posts each message's card to the Teams webhook(s) it belongs to.

    `url` is the global webhook, `cluster_urls` the per-cluster ones (cluster -> URL). A message
    naming a cluster (a host's start, success or failure, a wave) goes to its cluster's webhook,
    else the global one; a rollout-level message (approval request, summary, a failure outside any
    host) goes to the webhook of every target cluster, falling back to the global one, each URL at
    most once. Cards go to a whole channel, so they never carry personal approval links.
    """

    KIND = "Teams webhook"
    LOG = logging.getLogger("patchpilot.teams")

    url: str | None = field(default=None, repr=False)  # webhook URLs embed a signature: secrets
    cluster_urls: Mapping[str, str] = field(default_factory=dict, repr=False)
    name: str = "teams"

    def targets(self, notice: RolloutNotice) -> list[Target]:
        """The webhooks this notice goes to, each URL once."""
        clusters = [notice.cluster] if notice.cluster else list(notice.target_clusters)
        found: dict[str, Target] = {}
        for cluster in clusters:
            own = self.cluster_urls.get(cluster)
            if own:
                setting = f'teams_webhooks["{cluster}"] (PATCHPILOT_TEAMS_WEBHOOKS)'
                found.setdefault(own, Target(own, setting, cluster))
            elif self.url:
                found.setdefault(self.url, Target(self.url, GLOBAL_SETTING))
        if not clusters and self.url:
            found.setdefault(self.url, Target(self.url, GLOBAL_SETTING))
        return list(found.values())

    def card(self, message: Message) -> dict:
        """The Adaptive Card for `message`: one per rollout event, a plain one for anything else."""
        notice = message.notice
        if message.event == "approval-request":
            return approval_card(notice)
        if message.event in ("host-start", "host-success"):
            return host_card(message.event, notice, message.packages.get(notice.hostname or ""))
        if message.event == "failure":
            return failure_card(notice)
        if message.event == "summary" and notice.summary is not None:
            return summary_card(notice, notice.summary, message.packages)
        return _card([_text(message.subject, weight="Bolder"), _text(clip(message.body, 8000))])

    async def send(self, message: Message) -> bool:
        targets = self.targets(message.notice)
        if not targets:
            return False
        payload = envelope(self.card(message))
        posted = await asyncio.gather(
            *(self.delivery.post(target, payload, message) for target in targets)
        )
        return any(posted)
