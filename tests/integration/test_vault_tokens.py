"""Each rollout's Vault child token on real OpenBao: made at the preflight, used by the host steps,
renewed while the rollout runs, revoked however the rollout ends (checked with OpenBao's own token
lookup); AppRole logins renewed and redone; the worker's own token revoked at shutdown."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
from temporalio.client import Client, WorkflowFailureError

from activities.vault_auth import WorkerVaultAuth
from bot.settings import Settings
from bot.worker import WorkerParts
from lab import Lab, OpenBaoProcess
from tests.integration.test_rollout import UPDATE, approve, commands, rollout, start
from tests.support import SECRET_PREFIX, approle, running_worker, wait_for
from workflows.models import ApprovalDecision, Phase


def root(openbao: OpenBaoProcess) -> hvac.Client:
    return hvac.Client(url=openbao.address, token=openbao.root_token)


def live(openbao: OpenBaoProcess, accessors: list[str]) -> list[str]:
    """The accessors whose tokens OpenBao still knows (auth/token/lookup-accessor)."""
    alive = []
    for accessor in accessors:
        try:
            root(openbao).auth.token.lookup_accessor(accessor)
        except hvac.exceptions.InvalidRequest:
            continue  # "invalid accessor": revoked or expired
        alive.append(accessor)
    return alive


async def test_success_failure_rejection_and_cancel_leave_no_live_child_token(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    openbao: OpenBaoProcess,
) -> None:
    made = worker.vault.auth.created
    ok = await start(temporal_client, worker_settings, rollout(["cluster-b"]))
    await approve(ok)
    assert (await ok.result()).phase == Phase.SUCCEEDED
    assert len(made) == 1 and live(openbao, made) == []

    fleet.set_fault("a1", "update-fail")
    failed = await start(temporal_client, worker_settings, rollout(["cluster-a"]))
    await approve(failed)
    with pytest.raises(WorkflowFailureError):
        await failed.result()
    assert len(made) == 2 and live(openbao, made) == []

    rejected = await start(temporal_client, worker_settings, rollout(["cluster-b"]))
    await rejected.execute_update(
        "reject", ApprovalDecision(approver="alice@example.com"), result_type=str
    )
    assert (await rejected.result()).phase == Phase.REJECTED
    assert len(made) == 2, "a rejected rollout never reaches Vault"

    fleet.reset()
    gated = f"while [ ! -e /var/lib/patchpilot-lab/go ]; do sleep 0.1; done && {UPDATE}"
    cancelled = await start(
        temporal_client,
        worker_settings,
        rollout(["cluster-a"], pilotHostCount=0, updateCommand=gated),
    )
    await approve(cancelled)
    await wait_for(lambda: any(gated in c for c in commands(fleet, "a1")), timeout=60)
    assert len(made) == 3 and live(openbao, made[2:]) == made[2:]
    await cancelled.cancel()
    await asyncio.sleep(1)
    (fleet.host("a1").lab_dir / "go").touch()
    with pytest.raises(WorkflowFailureError):
        await cancelled.result()
    assert len(made) == 3 and live(openbao, made) == []


async def test_host_steps_read_with_the_rollouts_policy_not_the_workers(
    fleet: Lab,
    temporal_client: Client,
    worker_settings: Settings,
    openbao: OpenBaoProcess,
) -> None:
    # The worker's root token may read every key; each rollout's token only cluster-b's.
    policy = f'path "secret/data/{SECRET_PREFIX}/b*" {{ capabilities = ["read"] }}'
    root(openbao).sys.create_or_update_policy("rollout-cluster-b", policy)
    settings = worker_settings.model_copy(
        update={"vault_rollout_policies": "rollout-cluster-b", "vault_cache_ttl": 0.1}
    )
    async with running_worker(temporal_client, settings) as parts:
        allowed = await start(temporal_client, settings, rollout(["cluster-b"]))
        await approve(allowed)
        assert (await allowed.result()).patched == 3
        refused = await start(temporal_client, settings, rollout(["cluster-a"]))
        await approve(refused)
        with pytest.raises(WorkflowFailureError) as failed:
            await refused.result()
    assert "Vault preflight failed" in str(failed.value.cause)
    assert "403" in str(failed.value.cause)
    assert all(commands(fleet, host) == [] for host in ["a1", "a2", "a3"])
    assert live(openbao, parts.vault.auth.created) == []


async def test_short_lived_approle_and_rollout_tokens_outlive_their_ttl(
    fleet: Lab, temporal_client: Client, worker_settings: Settings, openbao: OpenBaoProcess
) -> None:
    role_id, secret_id = approle(openbao, "short-ttl", token_ttl="3s")
    settings = worker_settings.model_copy(
        update={
            "vault_token": None,
            "vault_role_id": role_id,
            "vault_secret_id": secret_id,
            "vault_rollout_token_ttl": 3,
            "vault_cache_ttl": 0.1,  # every step reads Vault again
        }
    )
    began = time.monotonic()
    async with running_worker(temporal_client, settings) as parts:
        slow = rollout(["cluster-b"], updateCommand=f"sleep 2 && {UPDATE}")
        handle = await start(temporal_client, settings, slow)
        await approve(handle)
        summary = await handle.result()
    assert time.monotonic() - began > 6, "the rollout must outlive both TTLs to prove anything"
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    auth = parts.vault.auth
    assert len(auth.login_accessors) == 1, "renewed, not logged in again"
    # One token for the whole rollout, renewed: also across an update step that runs longer than
    # its TTL without reading Vault (the update sleeps 2 s, the TTL is 3 s).
    assert len(auth.created) == 1, auth.created
    # Revoked at the end, and the worker's own AppRole token at shutdown.
    assert live(openbao, [*auth.created, *auth.login_accessors]) == []


async def test_approle_at_its_max_ttl_logs_in_again_and_the_rollout_goes_on(
    fleet: Lab, temporal_client: Client, worker_settings: Settings, openbao: OpenBaoProcess
) -> None:
    role_id, secret_id = approle(openbao, "max-ttl", token_ttl="2s", token_max_ttl="3s")
    settings = worker_settings.model_copy(
        update={
            "vault_token": None,
            "vault_role_id": role_id,
            "vault_secret_id": secret_id,
            "vault_cache_ttl": 0.1,
        }
    )
    async with running_worker(temporal_client, settings) as parts:
        slow = rollout(["cluster-b"], updateCommand=f"sleep 2 && {UPDATE}")
        handle = await start(temporal_client, settings, slow)
        await approve(handle)
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    auth = parts.vault.auth
    assert len(auth.login_accessors) >= 2
    assert live(openbao, [*auth.created, *auth.login_accessors]) == []


def test_a_403_from_an_expired_approle_token_is_answered_by_one_new_login(
    openbao: OpenBaoProcess,
) -> None:
    role_id, secret_id = approle(openbao, "expires", token_ttl="1s", token_max_ttl="1s")
    auth = WorkerVaultAuth(role_id=role_id, secret_id=secret_id.get_secret_value())
    auth.worker_client(openbao.address)  # logs in; nothing renews it here
    time.sleep(1.5)
    info = auth.with_worker_client(openbao.address, lambda c: c.auth.token.lookup_self())
    assert info["data"]["accessor"] == auth.login_accessors[-1]
    assert len(auth.login_accessors) == 2
    # A 403 that is a real refusal (the token is alive) is not answered by logging in again.
    with pytest.raises(hvac.exceptions.Forbidden):
        auth.with_worker_client(openbao.address, lambda c: c.sys.list_auth_methods())
    assert len(auth.login_accessors) == 2
    auth.close()
    assert live(openbao, auth.login_accessors) == []


async def test_a_worker_with_vault_token_keeps_that_token_at_shutdown(
    temporal_client: Client, worker_settings: Settings, openbao: OpenBaoProcess
) -> None:
    async with running_worker(temporal_client, worker_settings):
        pass
    assert root(openbao).auth.token.lookup_self()["data"]["id"] == openbao.root_token


def test_config_check_says_when_the_worker_may_not_make_rollout_tokens(
    fleet: Lab, worker_settings: Settings, openbao: OpenBaoProcess
) -> None:
    from bot.cli.checks.vault import check_vault

    role_id, secret_id = approle(openbao, "config-check")
    settings = worker_settings.model_copy(
        update={"vault_token": None, "vault_role_id": role_id, "vault_secret_id": secret_id}
    )
    auth, kv = check_vault(settings, SECRET_PREFIX, timeout=5)
    assert auth.status == "ok" and kv.status == "ok", (auth, kv)
    # The same AppRole with a policy that only reads keys: rollouts would fail at the preflight.
    reads_only = f'path "secret/data/{SECRET_PREFIX}/*" {{ capabilities = ["read"] }}'
    root(openbao).sys.create_or_update_policy("keys-only", reads_only)
    root(openbao).auth.approle.create_or_update_approle(
        "config-check", token_policies=["keys-only"]
    )
    auth, kv = check_vault(settings, SECRET_PREFIX, timeout=5)
    assert auth.status == "fail", auth
    assert "may not create rollout tokens (auth/token/create)" in auth.detail
    assert "revoke them (auth/token/revoke-accessor)" in auth.detail
    assert "where every worker finds them (secret/data/patchpilot-rollout-tokens/*" in auth.detail
    assert 'path "auth/token/create"' in auth.fix
    assert 'path "secret/data/patchpilot-rollout-tokens/*"' in auth.fix


def preflight_accessor(history_json: str) -> str:
    """The child token's accessor the rollout's history holds (VaultClientActivity's result, a
    local activity: its result is in the marker the workflow task recorded)."""
    import re

    from tests.support import decoded_history

    found = re.search(r'"tokenAccessor"\s*:\s*"([^"]+)"', decoded_history(history_json))
    if found is None:
        raise AssertionError("no token accessor in the rollout's history")
    return found.group(1)


async def test_the_cleanup_revokes_the_token_of_a_worker_that_died(
    fleet: Lab,
    temporal_client: Client,
    worker_settings: Settings,
    openbao: OpenBaoProcess,
    tmp_path: Path,
) -> None:
    from tests.integration.test_faults import spawn_worker, stop

    slow_update = f"sleep 2 && {UPDATE}"
    first = spawn_worker(worker_settings, tmp_path / "worker.log")
    try:
        handle = await start(
            temporal_client, worker_settings, rollout(["cluster-a"], updateCommand=slow_update)
        )
        await approve(handle)
        await wait_for(lambda: any(slow_update in c for c in commands(fleet, "a2")), timeout=60)
    finally:
        stop(first, signal.SIGKILL)  # no shutdown: the token it made stays alive in OpenBao
    accessor = preflight_accessor((await handle.fetch_history()).to_json())
    assert live(openbao, [accessor]) == [accessor]
    async with running_worker(temporal_client, worker_settings) as second:
        summary = await asyncio.wait_for(handle.result(), timeout=120)
    assert summary.phase == Phase.SUCCEEDED
    # The second worker went on with the rollout's one token (from its entry in KV) and made
    # none of its own; the dead worker's token was revoked at the rollout's end all the same.
    assert second.vault.auth.created == []
    assert accessor in second.vault.auth.adopted
    assert live(openbao, [accessor]) == []
    assert rollout_tokens(openbao, handle.id) == []


def rollout_tokens(openbao: OpenBaoProcess, rollout_id: str) -> list[str]:
    """Accessors of the live tokens OpenBao holds for `rollout_id` (its `rollout` metadata)."""
    client = root(openbao)
    found = []
    for accessor in client.list("auth/token/accessors")["data"]["keys"]:
        try:
            data = client.auth.token.lookup_accessor(accessor)["data"]
        except hvac.exceptions.InvalidRequest:
            continue  # revoked meanwhile
        if (data.get("meta") or {}).get("rollout") == rollout_id:
            found.append(accessor)
    return found


def test_workers_racing_for_a_rollouts_token_keep_one_and_a_late_step_makes_none(
    openbao: OpenBaoProcess,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    rollout_id = "race-" + str(time.time_ns())
    workers = [WorkerVaultAuth(token=openbao.root_token) for _ in range(4)]
    # Four workers' first steps at once: each finds no entry, makes a token, and all but the
    # first to record theirs revoke their own and use the recorded one.
    with ThreadPoolExecutor(4) as pool:
        clients = list(
            pool.map(lambda auth: auth.rollout_client(openbao.address, rollout_id), workers)
        )
    tokens = {client.token for client in clients if client is not None}
    assert len(tokens) == 1 and len(clients) == 4
    made = [accessor for auth in workers for accessor in auth.created]
    kept = rollout_tokens(openbao, rollout_id)
    assert len(kept) == 1 and kept[0] in made, (kept, made)
    # A fifth worker runs the cleanup without ever holding the token: the entry names it.
    cleaner = WorkerVaultAuth(token=openbao.root_token)
    assert cleaner.revoke_rollout(openbao.address, rollout_id, None) == 1
    assert rollout_tokens(openbao, rollout_id) == [] and live(openbao, made) == []
    # A step that runs after the end finds the rollout ended: no new token (the worker's own
    # token serves it, as it does a step of a rollout that brought its own token).
    workers[0].drop_child(openbao.address, rollout_id)
    assert workers[0].rollout_client(openbao.address, rollout_id) is None
    assert rollout_tokens(openbao, rollout_id) == []
    # The same rollout id started again gets a token of its own at its preflight.
    accessor = workers[1].rollout_accessor(openbao.address, rollout_id)
    assert rollout_tokens(openbao, rollout_id) == [accessor]
    assert cleaner.revoke_rollout(openbao.address, rollout_id, accessor) >= 1
    assert rollout_tokens(openbao, rollout_id) == []


def test_a_worker_that_logs_out_takes_its_rollout_token_along_and_another_records_a_new_one(
    openbao: OpenBaoProcess,
) -> None:
    role_id, secret_id = approle(openbao, "handoff")
    first, second = (
        WorkerVaultAuth(role_id=role_id, secret_id=secret_id.get_secret_value()) for _ in range(2)
    )
    rollout_id = "logout-" + str(time.time_ns())
    made = first.rollout_accessor(openbao.address, rollout_id)
    assert second.rollout_client(openbao.address, rollout_id) is not None
    assert second.adopted == [made] and second.created == []
    # Revoking the first worker's AppRole login at its shutdown revokes its children (Vault's token
    # hierarchy), the rollout's token among them.
    first.close()
    assert live(openbao, [made]) == []
    # What a step does when Vault refuses the token it held (403, and the token is gone).
    second.drop_child(openbao.address, rollout_id)
    assert second.rollout_client(openbao.address, rollout_id) is not None
    assert len(second.created) == 1 and rollout_tokens(openbao, rollout_id) == second.created
    # The cleanup, given the preflight's accessor only, revokes the replacement its entry names.
    assert second.revoke_rollout(openbao.address, rollout_id, made) == 2
    assert rollout_tokens(openbao, rollout_id) == []
    second.close()
    assert live(openbao, [*first.login_accessors, *second.login_accessors]) == []
