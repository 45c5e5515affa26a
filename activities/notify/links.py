"""Signed, personal Approve / Reject links for e-mail and Teams.

A link names one rollout, one approver and one action, and carries its expiry and a random nonce,
all signed with HMAC-SHA256 under the server's secret (PATCHPILOT_LINK_SECRET). Tokens are built
worker-side, inside the notification activity, and go straight to SMTP / Teams: they never enter
Temporal history (no workflow input, activity input or activity result carries one).

Token: ``v1.<base64url(JSON payload)>.<base64url(HMAC-SHA256(secret, "v1." + payload))>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Literal
from urllib.parse import urlencode

from activities.notify import EmailNotifier, Message, Notifier, approval_request
from activities.notify.delivery import Report
from workflows.models import RolloutInput, RolloutNotice

log = logging.getLogger("patchpilot.approval_links")

Action = Literal["approve", "reject"]
ACTIONS: tuple[Action, ...] = ("approve", "reject")
VERSION = "v1"
MIN_SECRET_BYTES = 16
DEFAULT_TTL = timedelta(hours=24)  # the default approval timeout


class LinkError(Exception):
    """A link that must be refused; `status` is the HTTP answer (400 bad, 403 forged, 410 gone)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class LinkClaims:
    rollout_id: str
    approver: str
    action: Action
    expires: int  # unix seconds
    nonce: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class LinkSigner:
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"the link secret must be at least {MIN_SECRET_BYTES} bytes long "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )

    def _mac(self, signed: str) -> bytes:
        return hmac.new(self.secret, signed.encode("ascii"), hashlib.sha256).digest()

    def sign(
        self,
        rollout_id: str,
        approver: str,
        action: Action,
        expires: float,
        nonce: str | None = None,
    ) -> str:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        payload = {
            "r": rollout_id,
            "a": approver.lower(),
            "x": action,
            "e": int(expires),
            "n": nonce or secrets.token_urlsafe(12),
        }
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        signed = f"{VERSION}.{body}"
        return f"{signed}.{_b64(self._mac(signed))}"

    def verify(self, token: str, *, now: float | None = None) -> LinkClaims:
        """The claims of a genuine, unexpired token; LinkError otherwise."""
        parts = token.strip().split(".") if isinstance(token, str) else []
        if len(parts) != 3 or parts[0] != VERSION or len(token) > 2048:
            raise LinkError("this link is malformed (was it cut short by the mail client?)", 400)
        signed = f"{parts[0]}.{parts[1]}"
        try:
            mac = _unb64(parts[2])
        except (binascii.Error, ValueError):
            raise LinkError("this link's signature is not valid; it was altered", 403) from None
        if not hmac.compare_digest(mac, self._mac(signed)):
            raise LinkError("this link's signature is not valid; it was altered", 403)
        try:
            raw = json.loads(_unb64(parts[1]))
            claims = LinkClaims(
                rollout_id=str(raw["r"]),
                approver=str(raw["a"]),
                action=raw["x"],
                expires=int(raw["e"]),
                nonce=str(raw["n"]),
            )
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise LinkError("this link is malformed", 400) from None
        if claims.action not in ACTIONS:
            raise LinkError("this link is malformed", 400)
        if (time.time() if now is None else now) >= claims.expires:
            raise LinkError(
                "this link has expired (the approval window of the rollout is over)", 410
            )
        return claims


@dataclass(frozen=True)
class LinkPair:
    approve: str
    reject: str


class ApprovalLinks:
    """Builds each approver's personal pair of links for a rollout (worker side).

    Links expire with the rollout's approval timeout, read from the workflow's input (the first
    event of its history) through the activity's Temporal client; `default_ttl` when that is not
    possible (outside an activity, or history unreadable).
    """

    def __init__(
        self,
        signer: LinkSigner,
        public_url: str,
        *,
        default_ttl: timedelta = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.signer = signer
        self.public_url = public_url.rstrip("/")
        self.default_ttl = default_ttl
        self._clock = clock
        self._ttl_cache: dict[str, timedelta] = {}

    def url(self, token: str, action: Action) -> str:
        return f"{self.public_url}/{action}?{urlencode({'t': token})}"

    def pair(self, rollout_id: str, approver: str, expires: float) -> LinkPair:
        return LinkPair(
            approve=self.url(self.signer.sign(rollout_id, approver, "approve", expires), "approve"),
            reject=self.url(self.signer.sign(rollout_id, approver, "reject", expires), "reject"),
        )

    async def approval_timeout(self, rollout_id: str) -> timedelta:
        if rollout_id in self._ttl_cache:
            return self._ttl_cache[rollout_id]
        ttl = self.default_ttl
        try:
            from temporalio import activity

            client = activity.client()
            handle = client.get_workflow_handle(rollout_id)
            async for event in handle.fetch_history_events():
                attributes = event.workflow_execution_started_event_attributes
                [rollout] = await client.data_converter.decode(
                    attributes.input.payloads, [RolloutInput]
                )
                ttl = rollout.approval_timeout
                break
        except Exception as error:  # not in an activity, or history unreadable: the default
            log.debug("approval timeout of %s unknown (%s); links last %s", rollout_id, error, ttl)
        if len(self._ttl_cache) > 1000:
            self._ttl_cache.clear()
        self._ttl_cache[rollout_id] = ttl
        return ttl

    async def for_notice(self, notice: RolloutNotice) -> dict[str, LinkPair]:
        """approver e-mail -> personal links; the requester gets none (cannot approve)."""
        ttl = await self.approval_timeout(notice.rollout_id)
        expires = self._clock() + ttl.total_seconds()
        return {
            approver: self.pair(notice.rollout_id, approver, expires)
            for approver in notice.approver_emails
            if approver != notice.requester_email
        }


@dataclass
class PersonalLinksEmail:
    """Wraps the e-mail notifier: the approval request goes out once per approver, each e-mail with
    that approver's own Approve / Reject links. Every other message passes through unchanged."""

    inner: EmailNotifier
    links: ApprovalLinks
    name: str = "email"

    async def send(self, message: Message) -> bool:
        if message.event != "approval-request":
            return await self.inner.send(message)
        personal = await self.links.for_notice(message.notice)
        delivered = False

        def links_of(_notice: RolloutNotice, approver: str) -> tuple[str, str]:
            pair = personal[approver]
            return pair.approve, pair.reject

        for recipient in message.recipients:
            one = (
                approval_request(message.notice, links=links_of, approver=recipient)
                if recipient in personal
                else replace(message, recipients=[recipient])
            )
            delivered = await self.inner.send(one) or delivered
        return delivered


def links_from_settings(settings: object) -> ApprovalLinks | None:
    """ApprovalLinks when PATCHPILOT_PUBLIC_URL and PATCHPILOT_LINK_SECRET are both set."""
    public_url = getattr(settings, "public_url", None)
    secret = getattr(settings, "link_secret", None)
    if not public_url or secret is None:
        return None
    value = secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)
    ttl = getattr(settings, "link_ttl", None) or DEFAULT_TTL
    return ApprovalLinks(LinkSigner(value.encode()), public_url, default_ttl=ttl)


def report_by_mail(mail: EmailNotifier, channel: str, event: str) -> Report:
    """Tells a rollout's requester by e-mail that `channel` refuses PatchPilot's messages. Not a
    rollout event: notification routing never holds it back."""

    async def report(message: Message, problem: str) -> object:
        notice = message.notice
        return await mail.send(
            Message(
                event=event,
                recipients=[notice.requester_email],
                subject=f"[PatchPilot] {channel} notifications failing "
                f"(rollout {notice.rollout_id})",
                body=problem + "\n",
                notice=notice,
            )
        )

    return report


def link_notifiers(settings: object, notifiers: Sequence[Notifier]) -> list[Notifier]:
    """The worker's notifiers with personal links on e-mail, plus Teams and the generic JSON
    webhook when configured (their 4xx errors reported by e-mail, when there is e-mail)."""
    from activities.notify.teams import teams_from_settings
    from activities.notify.webhook import webhook_from_settings

    links = links_from_settings(settings)
    mail = next((n for n in notifiers if isinstance(n, EmailNotifier)), None)
    result: list[Notifier] = [
        PersonalLinksEmail(n, links) if links and isinstance(n, EmailNotifier) else n
        for n in notifiers
    ]
    teams = teams_from_settings(
        settings,
        links.for_notice if links else None,
        report_by_mail(mail, "Teams", "teams-error") if mail else None,
    )
    if teams is not None:
        result.append(teams)
    webhook = webhook_from_settings(
        settings, report_by_mail(mail, "JSON webhook", "webhook-error") if mail else None
    )
    if webhook is not None:
        result.append(webhook)
    return result
