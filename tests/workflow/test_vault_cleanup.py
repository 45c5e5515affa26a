"""Every way a rollout ends runs VaultCleanupActivity once with the preflight's token accessor:
success, failure, cancel, a dry run; a rollout that never reached Vault (rejected) has nothing to
revoke. Real Temporal dev server, stand-in activities; tests/integration/test_vault_tokens.py
checks the same endings against OpenBao's own token lookup."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import Client, WorkflowFailureError

from tests.workflow.fake_fleet import FakeFleet
from tests.workflow.test_system_patch import ALICE, decide, rollout, running, start
from workflows import names
from workflows.models import Phase

ACCESSOR = "fake-accessor"


def one_cluster() -> dict[str, list[str]]:
    prefix = uuid.uuid4().hex[:6]
    return {f"{prefix}-c": [f"{prefix}-h1", f"{prefix}-h2"]}


async def test_success_and_failure_revoke_the_preflight_token_once(
    temporal_client: Client,
) -> None:
    clusters = one_cluster()
    fleet = FakeFleet(clusters)
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters)))
        await decide(handle, "approve", ALICE)
        assert (await handle.result()).phase == Phase.SUCCEEDED
    assert fleet.revoked == [ACCESSOR]

    clusters = one_cluster()
    pilot = next(iter(clusters.values()))[0]
    failing = FakeFleet(clusters, fail={(pilot, names.PERFORM_UPDATE): "boom"})
    async with running(temporal_client, failing) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters)))
        await decide(handle, "approve", ALICE)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert failing.revoked == [ACCESSOR]


async def test_cancel_revokes_after_the_host_in_flight_finished(temporal_client: Client) -> None:
    clusters = one_cluster()
    first = next(iter(clusters.values()))[0]
    release = asyncio.Event()
    fleet = FakeFleet(clusters, block={(first, names.PERFORM_UPDATE): release})
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters)))
        await decide(handle, "approve", ALICE)
        started = fleet.started.setdefault((first, names.PERFORM_UPDATE), asyncio.Event())
        await asyncio.wait_for(started.wait(), 30)
        await handle.cancel()
        await asyncio.sleep(0.5)
        assert fleet.revoked == [], "revoked while a host still needed Vault"
        release.set()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert fleet.revoked == [ACCESSOR]


async def test_rejected_rollout_has_no_token_and_a_dry_run_releases_its_own(
    temporal_client: Client,
) -> None:
    clusters = one_cluster()
    fleet = FakeFleet(clusters)
    async with running(temporal_client, fleet) as queue:
        handle = await start(temporal_client, queue, rollout(list(clusters)))
        await decide(handle, "reject", ALICE)
        assert (await handle.result()).phase == Phase.REJECTED
        assert fleet.revoked == []  # no preflight ran: no token was made
        dry = await start(temporal_client, queue, rollout(list(clusters), dryRun=True))
        assert (await dry.result()).phase == Phase.DRY_RUN_DONE
    # No preflight in a dry run: the cleanup revokes what its inspections made, by rollout id.
    assert fleet.revoked == [None]


async def test_continue_as_new_keeps_the_token_until_the_last_run(temporal_client: Client) -> None:
    prefix = uuid.uuid4().hex[:6]
    clusters = {f"{prefix}-c": [f"{prefix}-h{i:02}" for i in range(24)]}
    fleet = FakeFleet(clusters)
    async with running(temporal_client, fleet) as queue:
        handle = await start(
            temporal_client,
            queue,
            rollout(list(clusters), maxConcurrency=3, historyEventBudget=200),
        )
        await decide(handle, "approve", ALICE)
        assert (await handle.result()).patched == 24
    runs = [run async for run in temporal_client.list_workflows(f"WorkflowId = '{handle.id}'")]
    assert len(runs) >= 2
    assert fleet.revoked == [ACCESSOR]  # once, by the last run, with the first run's accessor
