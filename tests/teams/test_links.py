"""Signed links: what verifies, what is refused and why (HTTP status), and the personal e-mail."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import pytest

from activities.notify import EmailNotifier, approval_request
from activities.notify.build import links_from_settings
from activities.notify.links import ApprovalLinks, LinkError, LinkSigner, PersonalLinksEmail
from bot.settings import Settings
from tests.support import Mailbox
from workflows.models import RolloutNotice

SECRET = b"k" * 32
ALICE, CAROL, BOB = "alice@example.com", "carol@example.com", "bob@example.com"


def signer() -> LinkSigner:
    return LinkSigner(SECRET)


def test_a_signed_link_verifies_and_names_rollout_approver_action_expiry() -> None:
    expires = time.time() + 600
    token = signer().sign("rollout-1", "Alice@Example.com", "approve", expires)
    assert set(token) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    claims = signer().verify(token)
    assert (claims.rollout_id, claims.approver, claims.action) == ("rollout-1", ALICE, "approve")
    assert claims.expires == int(expires) and len(claims.nonce) >= 16
    assert signer().sign("rollout-1", ALICE, "approve", expires) != token  # fresh nonce each time


def _tamper_payload(token: str, **changes: object) -> str:
    version, body, mac = token.split(".")
    raw = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    raw.update(changes)
    new = base64.urlsafe_b64encode(json.dumps(raw).encode()).rstrip(b"=").decode()
    return f"{version}.{new}.{mac}"


@pytest.mark.parametrize(
    "change",
    [{"a": "eve@example.com"}, {"x": "reject"}, {"r": "other-rollout"}, {"e": 9999999999}],
)
def test_a_tampered_payload_is_refused_with_403(change: dict[str, object]) -> None:
    token = signer().sign("rollout-1", ALICE, "approve", time.time() + 600)
    with pytest.raises(LinkError) as refused:
        signer().verify(_tamper_payload(token, **change))
    assert refused.value.status == 403 and "altered" in str(refused.value)


def test_a_tampered_signature_or_another_secret_is_refused_with_403() -> None:
    token = signer().sign("rollout-1", ALICE, "approve", time.time() + 600)
    last = token[-1]
    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + last
    for bad in (
        flipped,
        LinkSigner(b"z" * 32).sign("rollout-1", ALICE, "approve", time.time() + 9),
    ):
        with pytest.raises(LinkError) as refused:
            signer().verify(bad)
        assert refused.value.status == 403


@pytest.mark.parametrize("token", ["", "abc", "v1.abc", "v2.a.b", "v1.a.b.c", "v1." + "a" * 3000])
def test_a_malformed_link_is_refused_with_400(token: str) -> None:
    with pytest.raises(LinkError) as refused:
        signer().verify(token)
    assert refused.value.status in (400, 403)
    if token.count(".") != 2 or not token.startswith("v1."):
        assert refused.value.status == 400


def test_an_expired_link_is_refused_with_410() -> None:
    token = signer().sign("rollout-1", ALICE, "approve", time.time() + 60)
    assert signer().verify(token, now=time.time() + 59)
    with pytest.raises(LinkError) as refused:
        signer().verify(token, now=time.time() + 61)
    assert refused.value.status == 410 and "expired" in str(refused.value)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        LinkSigner(b"short")


def test_links_are_configured_only_with_both_public_url_and_secret() -> None:
    assert links_from_settings(Settings(public_url="https://pp.example.com")) is None
    assert links_from_settings(Settings(link_secret="s" * 32)) is None
    links = links_from_settings(
        Settings(public_url="https://pp.example.com/", link_secret="s" * 32)
    )
    assert links is not None and links.public_url == "https://pp.example.com"


def notice() -> RolloutNotice:
    return RolloutNotice(
        rollout_id="rollout-7",
        requester_email=BOB,
        approver_emails=[ALICE, CAROL, BOB],
        target_clusters=["cluster-a"],
        hosts_by_cluster={"cluster-a": ["a1", "a2"]},
        update_command="apt-get -y upgrade",
    )


def test_the_approval_e_mail_without_links_is_unchanged() -> None:
    message = approval_request(notice())
    assert message.recipients == [ALICE, CAROL]
    assert "patchpilot approve rollout-7 --as <your e-mail>" in message.body
    assert "http" not in message.body


async def test_each_approver_gets_an_own_e_mail_with_own_links(
    smtp_server: tuple[Mailbox, int], mailbox: Mailbox
) -> None:
    links = ApprovalLinks(signer(), "https://pp.example.com", default_ttl=timedelta(minutes=30))
    email = PersonalLinksEmail(EmailNotifier("127.0.0.1", smtp_server[1]), links)
    assert await email.send(approval_request(notice()))
    sent = mailbox.events("approval-request")
    assert sorted(m["X-Envelope-To"] for m in sent) == [ALICE, CAROL]  # not the requester
    for message in sent:
        who = message["X-Envelope-To"]
        body = message.get_content()
        approve = [line.split()[-1] for line in body.splitlines() if "Approve:" in line]
        reject = [line.split()[-1] for line in body.splitlines() if "Reject:" in line]
        assert len(approve) == len(reject) == 1
        assert approve[0].startswith("https://pp.example.com/approve?t=v1.")
        assert reject[0].startswith("https://pp.example.com/reject?t=v1.")
        claims = signer().verify(approve[0].split("t=", 1)[1])
        assert (claims.approver, claims.action, claims.rollout_id) == (who, "approve", "rollout-7")
        # outside an activity the expiry is the configured default (30 min here)
        assert abs(claims.expires - (time.time() + 1800)) < 30
        assert signer().verify(reject[0].split("t=", 1)[1]).action == "reject"
