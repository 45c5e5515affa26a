"""`vaultAddress` cannot send the worker's Vault credentials elsewhere: a listener on an address
the worker does not trust receives nothing, from the CLI or from a rollout started past it."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest
from temporalio.client import Client, WorkflowFailureError

from bot.settings import Settings
from lab import Lab, OpenBaoProcess, free_port
from tests.integration.test_rollout import BOB, acli, approve, commands, rollout, start
from tests.support import approle, running_worker
from workflows.models import Phase


class Listener:
    """A TCP listener on loopback that records every connection and every byte it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.address = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.received = b""
        self._socket = socket.create_server(("127.0.0.1", self.port))
        self._socket.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            with connection:
                connection.settimeout(1)
                with contextlib.suppress(OSError):
                    self.received += connection.recv(65536)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    started = Listener()
    yield started
    started.close()


async def test_cli_dry_run_with_an_untrusted_vault_address_is_refused_and_sends_nothing(
    fleet: Lab, worker, temporal_client: Client, worker_settings: Settings, listener: Listener
) -> None:
    before = [execution.id async for execution in temporal_client.list_workflows()]
    refused = await acli(
        worker_settings,
        "start",
        "--dry-run",
        "--clusters",
        "cluster-a",
        "--requester",
        BOB,
        "--update",
        "apt-get -y upgrade",
        "--vault-address",
        listener.address,
    )
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "vaultAddress:" in refused.stderr
    assert "not a Vault address this worker trusts" in refused.stderr
    assert [execution.id async for execution in temporal_client.list_workflows()] == before
    assert listener.connections == 0 and listener.received == b""


async def test_a_dry_run_started_past_the_edge_is_refused_by_the_worker_and_sends_nothing(
    fleet: Lab,
    temporal_client: Client,
    worker_settings: Settings,
    listener: Listener,
    openbao: OpenBaoProcess,
) -> None:
    # AppRole credentials are the worker's too: they must not reach the listener either.
    role_id, secret_id = approle(openbao, "trust-check")
    settings = worker_settings.model_copy(
        update={"vault_token": None, "vault_role_id": role_id, "vault_secret_id": secret_id}
    )
    async with running_worker(temporal_client, settings):
        handle = await start(
            temporal_client,
            settings,
            rollout(["cluster-a"], dryRun=True, vaultAddress=listener.address),
        )
        summary = await handle.result()
    assert summary.phase == Phase.DRY_RUN_DONE
    assert summary.dry_run is not None and len(summary.dry_run) == 3
    for inspection in summary.dry_run:
        assert not inspection.preconditions_ok
        assert inspection.reason.startswith("vaultAddress: ")
        assert "not a Vault address this worker trusts" in inspection.reason
    assert all(commands(fleet, host) == [] for host in ["a1", "a2", "a3"])
    assert listener.connections == 0 and listener.received == b""


async def test_an_approved_rollout_to_an_untrusted_address_stops_at_the_preflight(
    fleet: Lab, worker, temporal_client: Client, worker_settings: Settings, listener: Listener
) -> None:
    handle = await start(
        temporal_client, worker_settings, rollout(["cluster-b"], vaultAddress=listener.address)
    )
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    message = str(failed.value.cause)
    assert "Vault preflight failed: vaultAddress: " in message
    assert "no host was touched" in message
    assert all(commands(fleet, host) == [] for host in ["b1", "b2", "b3"])
    assert listener.connections == 0 and listener.received == b""


async def test_an_address_the_worker_trusts_is_used(
    fleet: Lab, temporal_client: Client, worker_settings: Settings, openbao: OpenBaoProcess
) -> None:
    # The same OpenBao by another name, trusted through PATCHPILOT_VAULT_TRUSTED_ADDRESSES.
    alias = openbao.address.replace("127.0.0.1", "localhost")
    settings = worker_settings.model_copy(update={"vault_trusted_addresses": alias})
    async with running_worker(temporal_client, settings):
        handle = await start(temporal_client, settings, rollout(["cluster-b"], vaultAddress=alias))
        await approve(handle)
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
