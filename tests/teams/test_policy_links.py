"""E-mail link approvals under an approval policy (issue 13), end to end: a real worker reading a
real policy file, real Temporal, the sshd lab, real SMTP, and the approval server signing each
decision of a link it verified with its own ed25519 key. `patchpilot start --profile` starts the
rollout; the links go only to the policy's approvers; the Teams card carries no link; the link
page shows the whole command and the digest; a rollout whose digest changed is not signed."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import httpx
import pytest_asyncio
import yaml
from aiohttp import web
from pydantic import SecretStr
from temporalio.client import Client

from activities.notify.links import LinkSigner
from activities.policy import load_policy
from activities.ssh import unwrap_command
from bot.rollouts import Rollouts
from bot.settings import Settings
from bot.signing import Signer
from bot.web.approvals import DecisionSigning, UsedLinks, create_app
from lab import Lab, free_port
from tests.support import SERVICES, Mailbox, running_worker, wait_for
from tests.teams.conftest import LINK_SECRET, LinkServer, TeamsStandIn, links_in
from tests.teams.test_link_approvals import UPDATE, progress, token_of, touched
from workflows.models import Phase, RolloutInput

ALICE, BOB, CAROL, MALLORY = (f"{n}@example.com" for n in ("alice", "bob", "carol", "mallory"))


def _public_key(tmp: Path, name: str) -> str:
    """A fresh ed25519 key: the private half in `tmp/<name>_ed25519`, the public half returned."""
    key = asyncssh.generate_private_key("ssh-ed25519", comment=name)
    path = tmp / f"{name}_ed25519"
    path.write_bytes(key.export_private_key())
    path.chmod(0o600)
    return key.export_public_key().decode().strip()


def write_policy(tmp: Path) -> Path:
    """Alice and Carol approve cluster-a, one approval is enough, Bob requests, only the
    `security` profile may run; the approval server signs as front end `links`."""
    links = _public_key(tmp, "links")
    policy = tmp / "policy.yml"
    policy.write_text(
        f"""people:
  alice: {{email: {ALICE}}}
  bob: {{email: {BOB}}}
  carol: {{email: {CAROL}}}
  mallory: {{email: {MALLORY}}}
frontends:
  links: {{keys: ["{links}"]}}
clusters:
  "cluster-*":
    requesters: [bob]
    approvers: [alice, carol]
    minApprovals: 1
    updateProfiles: {{security: "{UPDATE}"}}
    allowCustomUpdate: false
    maxHosts: 10
"""
    )
    load_policy(policy)  # the test's own policy must be valid
    return policy


@dataclass
class Guarded:
    """The worker's settings under the policy, and the signing approval server's address and
    the inventory it computes digests from (a copy of the fleet's the test may change)."""

    settings: Settings
    url: str
    inventory: Path


@pytest_asyncio.fixture
async def guarded(
    tmp_path: Path, worker_settings: Settings, temporal_client: Client, teams: TeamsStandIn
) -> AsyncIterator[Guarded]:
    policy = write_policy(tmp_path)
    assert worker_settings.inventory is not None
    inventory = tmp_path / "approval-server-inventory.yml"
    shutil.copy(worker_settings.inventory, inventory)
    signing = DecisionSigning(Signer(tmp_path / "links_ed25519", "links"), inventory)
    app = create_app(temporal_client, LinkSigner(LINK_SECRET.encode()), UsedLinks(), signing)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    settings = worker_settings.model_copy(
        update={
            "policy": policy,
            "task_queue": f"policy-links-{uuid.uuid4().hex[:8]}",
            "teams_webhook_url": SecretStr(teams.url),
            "public_url": url,
            "link_secret": SecretStr(LINK_SECRET),
        }
    )
    try:
        async with running_worker(temporal_client, settings):
            yield Guarded(settings, url, inventory)
    finally:
        await runner.cleanup()


async def approval_mails(mailbox: Mailbox, count: int = 2) -> dict[str, dict[str, str]]:
    await wait_for(lambda: len(mailbox.events("approval-request")) == count, timeout=60)
    return {m["X-Envelope-To"]: links_in(m) for m in mailbox.events("approval-request")}


async def test_a_link_approval_under_a_policy_is_signed_and_the_rollout_runs(
    fleet: Lab,
    guarded: Guarded,
    temporal_client: Client,
    mailbox: Mailbox,
    teams: TeamsStandIn,
) -> None:
    from tests.integration.test_rollout import acli

    rollout_id = f"policy-link-{uuid.uuid4().hex[:6]}"
    started = await acli(
        guarded.settings,
        "start", "--cluster", "cluster-a", "--pilot", "1", "--requester", BOB,
        "--services", ",".join(SERVICES), "--profile", "security", "--id", rollout_id,
        "--approval-timeout", "600",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "It waits for approval by: the approvers the policy names" in started.stdout
    handle = temporal_client.get_workflow_handle(rollout_id)

    links = await approval_mails(mailbox)
    assert set(links) == {ALICE, CAROL}, "only the policy's approvers get links, not the requester"
    state = await progress(handle)
    assert state.phase == Phase.AWAITING_APPROVAL and state.digest
    mail = mailbox.events("approval-request")[0]
    body = mail.get_content()
    assert f"    {UPDATE}" in body and "(update profile security)" in body
    assert state.digest in body and "cluster-a (3 hosts in all)" in body

    # The Teams card for the channel: the whole command and the digest, and no link with a token.
    await wait_for(lambda: teams.posts, timeout=20)
    card = json.dumps(teams.cards()[0])
    assert UPDATE in card and state.digest in card
    assert re.findall(r"https?://[^\s\"]+", card) == [
        "http://adaptivecards.io/schemas/adaptive-card.json"
    ]
    assert all(token_of(url) not in card for pair in links.values() for url in pair.values())

    async with httpx.AsyncClient(base_url=guarded.url) as http:
        page = await http.get("/approve", params={"t": token_of(links[ALICE]["approve"])})
        assert page.status_code == 200
        assert f"<pre id='command'>{UPDATE.replace('&', '&amp;')}</pre>" in page.text
        assert f"<code id='digest'>{state.digest}</code>" in page.text
        assert "cluster-a (3 hosts)" in page.text and 'id="confirm"' in page.text
        assert touched(fleet) == []
        done = await http.post(
            "/approve",
            data={"t": token_of(links[ALICE]["approve"]), "digest": state.digest},
        )
        assert done.status_code == 200 and f"approved by {ALICE}" in done.text

    summary = await Rollouts(temporal_client).result(rollout_id)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    assert (await progress(handle)).approved_by == [ALICE]
    assert sorted(touched(fleet)) == ["a1", "a2", "a3"]
    assert all(UPDATE in map(unwrap_command, fleet.command_log(h)) for h in ("a1", "a2", "a3"))
    request = await Rollouts(temporal_client).request(rollout_id)
    assert request.update_profile == "security" and request.update_command == UPDATE


async def test_a_link_approval_is_refused_when_the_digest_changed(
    fleet: Lab,
    guarded: Guarded,
    temporal_client: Client,
    mailbox: Mailbox,
    link_server: LinkServer,
) -> None:
    rollouts = Rollouts(temporal_client, guarded.settings.task_queue)
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": ["cluster-a"],
            "pilotHostCount": 1,
            "requesterEmail": BOB,
            "updateCommand": UPDATE,
            "updateProfile": "security",
            "serviceList": SERVICES,
            "approvalTimeout": 600,
        }
    )
    handle = await rollouts.start(rollout, f"policy-digest-{uuid.uuid4().hex[:6]}")
    links = await approval_mails(mailbox)
    alice = token_of(links[ALICE]["approve"])
    digest = (await progress(handle)).digest
    assert digest

    async with httpx.AsyncClient(base_url=guarded.url, timeout=30) as http:
        # The page confirmed showed another digest than the one signed now: refused.
        stale = await http.post("/approve", data={"t": alice, "digest": "sha256:" + "0" * 64})
        assert stale.status_code == 409 and "the page you confirmed showed sha256:000" in stale.text

        # The approval server's inventory changes after the request (a3 is gone): what it would
        # sign is no longer what the workflow runs, so the page and the POST both refuse.
        listing = yaml.safe_load(guarded.inventory.read_text())
        del listing["all"]["children"]["cluster-a"]["hosts"]["a3"]
        guarded.inventory.write_text(yaml.safe_dump(listing))
        page = await http.get("/approve", params={"t": token_of(links[CAROL]["approve"])})
        assert page.status_code == 409 and f"the rollout reports {digest}" in page.text
        assert 'id="confirm"' not in page.text
        refused = await http.post("/approve", data={"t": token_of(links[CAROL]["approve"])})
        assert refused.status_code == 409 and "refusing to sign" in refused.text

    # An approval server that does not sign (no policy of its own): the worker refuses the
    # unsigned decision, whatever link it carries.
    async with httpx.AsyncClient(base_url=link_server.url, timeout=30) as http:
        unsigned = await http.post("/approve", data={"t": token_of(links[CAROL]["approve"])})
        assert unsigned.status_code == 409 and "the decision carries no proof" in unsigned.text

    state = await progress(handle)
    assert state.phase == Phase.AWAITING_APPROVAL and state.approved_by == []
    assert touched(fleet) == []
    await handle.cancel()


async def test_links_never_go_to_an_address_the_request_names(
    fleet: Lab, guarded: Guarded, temporal_client: Client, mailbox: Mailbox
) -> None:
    """A raw Temporal client skips the edge and names Mallory's second address as approver: the
    worker's policy refuses the rollout, and no e-mail (no link) goes to anyone."""
    rollouts = Rollouts(temporal_client, guarded.settings.task_queue)
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": ["cluster-a"],
            "pilotHostCount": 1,
            "requesterEmail": BOB,
            "approverEmails": ["mallory.alt@example.net"],
            "updateCommand": UPDATE,
            "serviceList": SERVICES,
        }
    )
    handle = await rollouts.start(rollout, f"policy-mallory-{uuid.uuid4().hex[:6]}")
    summary = await rollouts.result(handle.id)
    assert summary.phase != Phase.SUCCEEDED
    assert "mallory.alt@example.net may not approve cluster-a" in summary.message
    assert mailbox.events("approval-request") == []
    assert touched(fleet) == []
