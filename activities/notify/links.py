"""Signed, personal Approve / Reject links, sent only in each approver's own e-mail (never on a
channel card: anyone in the channel could use them).

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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Literal
from urllib.parse import urlencode

from temporalio import activity

from activities.notify.email import EmailNotifier
from activities.notify.messages import Message, approval_request
from workflows.models import RolloutInput, RolloutNotice

log = logging.getLogger("patchpilot.notify.links")

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
    """What a verified link says: who (`approver`, lower-cased e-mail) may do what to which
    rollout, until when; `nonce` tells two links of the same claim apart."""

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
    """Signs and verifies link tokens with `secret` (PATCHPILOT_LINK_SECRET, at least
    MIN_SECRET_BYTES: ValueError otherwise)."""

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
        """A token for `approver` to `action` `rollout_id` until `expires` (unix seconds); a fresh
        random nonce unless one is given. ValueError for an unknown action."""
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
    """One approver's two link URLs."""

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
        """`<public_url>/<action>?t=<token>`: the approval server's confirmation page."""
        return f"{self.public_url}/{action}?{urlencode({'t': token})}"

    def pair(self, rollout_id: str, approver: str, expires: float) -> LinkPair:
        """`approver`'s Approve and Reject URLs for `rollout_id`, both expiring at `expires`."""
        return LinkPair(
            approve=self.url(self.signer.sign(rollout_id, approver, "approve", expires), "approve"),
            reject=self.url(self.signer.sign(rollout_id, approver, "reject", expires), "reject"),
        )

    async def approval_timeout(self, rollout_id: str) -> timedelta:
        """How long links of `rollout_id` last: its approval timeout (cached per rollout)."""
        if rollout_id in self._ttl_cache:
            return self._ttl_cache[rollout_id]
        ttl = self.default_ttl
        try:
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

    def wants(self, message: Message) -> bool:
        return self.inner.wants(message)

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
