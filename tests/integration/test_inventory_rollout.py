"""A real rollout from an INI inventory with host ranges, read by Ansible, on the sshd lab: one
machine listed under two names is patched once, and `patchpilot start --limit` patches exactly
the hosts the approval request lists."""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio.client import Client

from bot.settings import Settings
from lab import Lab
from tests.integration.test_rollout import ALICE, BOB, UPDATE, acli, commands
from tests.support import Mailbox, running_worker, wait_for
from workflows.models import ApprovalDecision, RolloutSummary

PREFIX = "inventory-ini"


def ini_inventory(fleet: Lab, path: Path) -> Path:
    """cluster-a as a range of addresses plus an alias of its first host; the lab's port and user
    for all hosts (the lab numbers cluster-a's hosts from 127.0.4.1)."""
    first, *_, last = (h.address for h in fleet.hosts if h.name in fleet.clusters["cluster-a"])
    prefix, low = first.rsplit(".", 1)
    high = last.rsplit(".", 1)[1]
    path.write_text(
        f"[cluster-a]\n{prefix}.[{low}:{high}]\nfirst-alias ansible_host={first}\n\n"
        f"[all:vars]\nansible_port={fleet.hosts[0].port}\nansible_user={fleet.user}\n"
        "patchpilot_drain_check=test ! -e /run/draining\n"
    )
    return path


async def test_ini_inventory_with_ranges_and_a_limit_patches_what_was_approved(
    fleet: Lab,
    worker_settings: Settings,
    temporal_client: Client,
    mailbox: Mailbox,
    openbao,
    tmp_path: Path,
) -> None:
    fleet.seed_vault(openbao.address, openbao.root_token, prefix=PREFIX)
    settings = worker_settings.model_copy(
        update={"inventory": ini_inventory(fleet, tmp_path / "hosts.ini")}
    )
    a1, a2, a3 = (h for h in fleet.hosts if h.name in fleet.clusters["cluster-a"])
    rollout_id = f"it-ini-{uuid.uuid4().hex[:6]}"
    async with running_worker(temporal_client, settings):
        started = await acli(
            settings,
            "start",
            "--cluster",
            "cluster-a",
            "--pilot",
            "1",
            "--approver",
            ALICE,
            "--requester",
            BOB,
            "--services",
            "nginx",
            "--update",
            UPDATE,
            "--secret-prefix",
            PREFIX,
            "--limit",
            f"!{a3.address}",
            "--id",
            rollout_id,
        )
        assert started.returncode == 0, started.stderr
        await wait_for(lambda: mailbox.events("approval-request"), timeout=30)
        request = mailbox.events("approval-request")[0].get_content().replace("\r\n", "\n")
        assert f"cluster-a (2 hosts): {a1.address}, {a2.address}\n" in request
        assert f"note: first-alias is {a1.address} ({a1.address}:{a1.port}): patched once" in (
            request
        )
        assert f"limit: !{a3.address} (Ansible host pattern" in request
        handle = temporal_client.get_workflow_handle(rollout_id, result_type=RolloutSummary)
        await handle.execute_update("approve", ApprovalDecision(approver=ALICE), result_type=str)
        summary = await handle.result()

    assert (summary.patched, summary.failed, summary.skipped) == (2, 0, 0), summary.message
    assert fleet.update_count(a1.name) == 1, "one machine, two names: patched once"
    assert fleet.update_count(a2.name) == 1
    assert commands(fleet, a3.name) == [], "the host the limit left out was touched"
    # The command override from [all:vars] reached the hosts.
    assert "test ! -e /run/draining" in commands(fleet, a1.name)
    # Pilots are the first hosts in inventory order: a1 finished before a2 started.
    assert fleet.command_log_timed(a1.name)[-1][0] < fleet.command_log_timed(a2.name)[0][0]


async def test_a_limit_that_selects_nothing_is_refused_at_the_edge(
    fleet: Lab, worker_settings: Settings, tmp_path: Path
) -> None:
    settings = worker_settings.model_copy(
        update={"inventory": ini_inventory(fleet, tmp_path / "hosts.ini")}
    )
    refused = await acli(
        settings,
        "start",
        "--cluster",
        "cluster-a",
        "--pilot",
        "1",
        "--approver",
        ALICE,
        "--requester",
        BOB,
        "--update",
        UPDATE,
        "--limit",
        "web0[1-3]",
    )
    assert refused.returncode == 2
    assert "hostPattern: 'web0[1-3]' selects no host of cluster-a" in refused.stderr
    assert "Use [x:y] inclusive subscripts" in refused.stderr
    assert all(commands(fleet, h.name) == [] for h in fleet.hosts)
