"""Approve and reject from the e-mail in a real headless Chromium, on a real rollout: Temporal dev
server, OpenBao, the sshd lab, the SMTP server; Teams is a local stand-in recording the cards."""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
from temporalio.client import Client, WorkflowFailureError

from activities.ssh import unwrap_command
from bot.rollouts import Rollouts
from bot.settings import Settings
from lab import Lab
from tests.support import SERVICES, Mailbox, wait_for
from tests.teams.conftest import LINK_SECRET, LinkServer, TeamsStandIn, links_in
from workflows.models import ApprovalDecision, Phase, RolloutInput, RolloutProgress

ALICE, CAROL, BOB, EVE = (
    "alice@example.com",
    "carol@example.com",
    "bob@example.com",
    "eve@example.com",
)
UPDATE = "apt-get update && apt-get -y upgrade"


def rollout(**extra: object) -> RolloutInput:
    return RolloutInput.model_validate(
        {
            "targetClusters": ["cluster-a"],
            "pilotHostCount": 1,
            "approverEmails": [ALICE, CAROL, BOB],
            "requesterEmail": BOB,
            "updateCommand": UPDATE,
            "serviceList": SERVICES,
            "maxConcurrency": 2,
            "approvalTimeout": 600,
            **extra,
        }
    )


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["t"][0]


async def start(client: Client, settings: Settings, rollout_input: RolloutInput):
    rollouts = Rollouts(client, settings.task_queue)
    return await rollouts.start(rollout_input, f"links-{uuid.uuid4().hex[:8]}")


async def progress(handle) -> RolloutProgress:
    return await handle.query("progress", result_type=RolloutProgress)


def touched(fleet: Lab) -> list[str]:
    return [h.name for h in fleet.hosts if fleet.command_log(h.name)]


async def personal_links(mailbox: Mailbox) -> dict[str, dict[str, str]]:
    await wait_for(lambda: len(mailbox.events("approval-request")) == 2, timeout=40)
    return {m["X-Envelope-To"]: links_in(m) for m in mailbox.events("approval-request")}


async def test_approve_from_the_e_mail_in_a_browser_and_teams_gets_every_card(
    fleet: Lab,
    teams_worker,
    teams_settings: Settings,
    temporal_client: Client,
    mailbox: Mailbox,
    teams: TeamsStandIn,
    link_server: LinkServer,
    page,
    known_secrets: list[str],
) -> None:
    handle = await start(temporal_client, teams_settings, rollout())
    links = await personal_links(mailbox)
    assert set(links) == {ALICE, CAROL}, "the requester gets no approval links"
    assert all(set(pair) == {"approve", "reject"} for pair in links.values())
    for approver, pair in links.items():
        for action, url in pair.items():
            assert url.startswith(f"{link_server.url}/{action}?t=")
            claims = link_server.signer.verify(token_of(url))
            assert (claims.rollout_id, claims.approver, claims.action) == (
                handle.id,
                approver,
                action,
            )
            # expires with this rollout's approval timeout (600 s), read worker-side
            assert abs(claims.expires - (time.time() + 600)) < 90
            known_secrets.append(token_of(url))
    known_secrets.append(LINK_SECRET)
    alice = links[ALICE]

    # The Teams approval card goes to the whole channel: no approver's personal link is on it.
    await wait_for(lambda: teams.posts, timeout=20)
    approval_card = teams.cards()[0]
    assert approval_card["body"][0]["text"] == "Approval needed: patch cluster-a"
    assert not [block for block in approval_card["body"] if block["type"] == "ActionSet"]
    scraped = json.dumps(approval_card)
    assert all(token_of(url) not in scraped for pair in links.values() for url in pair.values())
    assert "/approve?" not in scraped and "/reject?" not in scraped

    # Tampered and expired links: a clear page, nothing changes.
    tampered = alice["approve"].replace("t=v1.", "t=v1.A", 1)
    response = await page.goto(tampered)
    assert response is not None and response.status == 403
    assert "altered" in await page.text_content("#reason")
    assert await page.query_selector("#confirm") is None
    swapped = f"{link_server.url}/approve?t={token_of(alice['reject'])}"
    response = await page.goto(swapped)
    assert response is not None and response.status == 403
    expired = link_server.signer.sign(handle.id, ALICE, "approve", time.time() - 1)
    response = await page.goto(f"{link_server.url}/approve?t={expired}")
    assert response is not None and response.status == 410
    assert "expired" in await page.text_content("#reason")

    # The workflow's own rules, through the endpoint: not an approver, no self-approval.
    async with httpx.AsyncClient(base_url=link_server.url) as http:
        for who, reason in ((EVE, "is not an approver"), (BOB, "cannot approve it")):
            signed = link_server.signer.sign(handle.id, who, "approve", time.time() + 60)
            answer = await http.post("/approve", data={"t": signed})
            assert answer.status_code == 409 and reason in answer.text
    assert (await progress(handle)).phase == Phase.AWAITING_APPROVAL
    assert touched(fleet) == []

    # Alice opens her link: a confirmation page; the GET alone approves nothing.
    response = await page.goto(alice["approve"])
    assert response is not None and response.status == 200
    assert response.headers["referrer-policy"] == "no-referrer"
    assert await page.text_content("#rollout") == handle.id
    assert "cluster-a (3 hosts)" in await page.text_content("#clusters")
    assert await page.text_content("#requester") == BOB
    assert await page.text_content("#approver") == ALICE
    assert await page.text_content("#action") == "Approve"
    assert (await progress(handle)).phase == Phase.AWAITING_APPROVAL
    assert touched(fleet) == []

    await page.fill("#comment", "go ahead")
    async with page.expect_navigation():
        await page.click("#confirm")
    assert f"approved by {ALICE}" in await page.text_content("#reason")
    async with httpx.AsyncClient(base_url=link_server.url) as http:
        # Carol decides too late, while the hosts are patched: the workflow refuses.
        late = await http.post("/reject", data={"t": token_of(links[CAROL]["reject"])})
        assert late.status_code == 409
        assert f"already approved by {ALICE}" in late.text and "final" in late.text

    summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    state = await progress(handle)
    assert state.decided_by == ALICE and state.decision_comment == "go ahead"
    assert sorted(touched(fleet)) == ["a1", "a2", "a3"]
    assert all(UPDATE in map(unwrap_command, fleet.command_log(h)) for h in ("a1", "a2", "a3"))

    # Reused: the same link again (a GET and a replayed POST) is refused and changes nothing.
    response = await page.goto(alice["approve"])
    assert response is not None and response.status == 410
    assert "already used" in await page.text_content("#reason")
    async with httpx.AsyncClient(base_url=link_server.url) as http:
        again = await http.post("/approve", data={"t": token_of(alice["approve"])})
        assert again.status_code == 410 and "already used" in again.text
        # Carol's other link, after the rollout ended: the page says who decided, no button.
        carol = await http.get("/approve", params={"t": token_of(links[CAROL]["approve"])})
        assert carol.status_code == 200 and f"already decided by {ALICE}" in carol.text
        assert 'id="confirm"' not in carol.text
        ended = await http.post("/approve", data={"t": token_of(links[CAROL]["approve"])})
        assert ended.status_code == 409 and f"already decided by {ALICE}" in ended.text

    # Teams: approval request, each host's start and success, the summary; envelope each time.
    for post in teams.posts:
        assert post["type"] == "message"
        [attachment] = post["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        assert attachment["contentUrl"] is None and attachment["content"]["version"] == "1.4"
    titles = teams.titles()
    assert titles[0] == "Approval needed: patch cluster-a"
    for host in ("a1", "a2", "a3"):
        assert titles.count(f"▶ Patching {host} (cluster-a)") == 1
        assert titles.count(f"✅ Patched {host} (cluster-a)") == 1
    assert titles.index("✅ Patched a1 (cluster-a)") < titles.index("▶ Patching a2 (cluster-a)")
    assert [t for t in titles if t.startswith("Starting")] == [
        "Starting cluster-a: pilot hosts: a1",
        "Starting cluster-a: the rest, 2 at a time: a2, a3",
    ]
    assert titles[-1] == "✅ Rollout succeeded: cluster-a" and len(titles) == 10
    summary_card = teams.cards()[-1]
    facts = {
        f["title"]: f["value"]
        for b in summary_card["body"]
        if b["type"] == "FactSet"
        for f in b["facts"]
    }
    assert facts["Patched"] == "3" and facts["Failed"] == "0" and facts["Rollout"] == handle.id

    # No link, token or secret in Temporal's history.
    history = (await handle.fetch_history()).to_json()
    assert LINK_SECRET not in history and "sig=s3cr3t" not in history
    assert all(token_of(url) not in history for pair in links.values() for url in pair.values())


async def test_reject_from_the_e_mail_in_a_browser_touches_nothing_and_failures_reach_teams(
    fleet: Lab,
    teams_worker,
    teams_settings: Settings,
    temporal_client: Client,
    mailbox: Mailbox,
    teams: TeamsStandIn,
    page,
) -> None:
    handle = await start(temporal_client, teams_settings, rollout())
    links = await personal_links(mailbox)
    response = await page.goto(links[CAROL]["reject"])
    assert response is not None and response.status == 200
    assert await page.text_content("#action") == "Reject"
    async with page.expect_navigation():
        await page.click("#confirm")
    assert f"rejected by {CAROL}" in await page.text_content("#reason")
    summary = await handle.result()
    assert summary.phase == Phase.REJECTED and touched(fleet) == []
    await wait_for(lambda: teams.titles()[-1:] == ["⚠ Rollout rejected: cluster-a"], timeout=20)

    # A failing pilot: the failure card names host and step (approved through the update).
    teams.reset()
    mailbox.clear()
    fleet.set_fault("a1", "update-fail")
    failing = await start(temporal_client, teams_settings, rollout())
    await personal_links(mailbox)
    await failing.execute_update("approve", ApprovalDecision(approver=ALICE), result_type=str)
    try:
        await failing.result()
        raise AssertionError("the rollout should have failed")
    except WorkflowFailureError:
        pass
    titles = teams.titles()
    assert "❌ FAILED: a1 at step update" in titles
    assert titles[-1] == "⚠ Rollout failed: cluster-a"
    failure = teams.cards()[titles.index("❌ FAILED: a1 at step update")]
    assert failure["body"][0]["color"] == "Attention"
    assert "Patching a2" not in "\n".join(titles)


def test_the_link_expiry_defaults_to_a_day(teams_settings: Settings) -> None:
    assert teams_settings.link_ttl == timedelta(hours=24)
