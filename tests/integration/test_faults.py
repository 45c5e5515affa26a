"""Faults on real parts: a dead worker, a restarted Temporal, unreachable, re-keyed and cut hosts,
revoked and unavailable Vault, cancellation. Each asserts what an operator would check after."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import hvac
import pytest
from pydantic import SecretStr
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.preconditions import RESUMED_NOTE
from bot.settings import Settings
from bot.worker import WorkerParts
from lab import Lab, OpenBaoProcess, free_port, start_openbao, start_temporal_dev_server
from tests.integration.test_rollout import UPDATE, approve, commands, rollout, start
from tests.support import (
    SECRET_PREFIX,
    Mailbox,
    record_history,
    running_worker,
    wait_for,
    worker_env,
)
from workflows import names
from workflows.models import HostState, Phase, RolloutProgress, RolloutSummary
from workflows.policies import host_workflow_id

PATCHPILOT = str(Path(sys.executable).parent / "patchpilot")


def spawn_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PATCHPILOT, "worker", "--no-policy"],
        env={**os.environ, **worker_env(settings)},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        process.wait(timeout=20)


async def progress_of(handle) -> RolloutProgress:
    return await handle.query("progress", result_type=RolloutProgress)


async def test_worker_killed_during_an_update_resumes_and_finishes(
    fleet: Lab, temporal_client: Client, worker_settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    first = spawn_worker(worker_settings, log)
    slow_update = f"sleep 2 && {UPDATE}"
    try:
        handle = await start(
            temporal_client, worker_settings, rollout(["cluster-a"], updateCommand=slow_update)
        )
        await approve(handle)
        await wait_for(lambda: any(slow_update in c for c in commands(fleet, "a2")), timeout=60)
        stop(first, signal.SIGKILL)
        second = spawn_worker(worker_settings, log)
        try:
            summary = await asyncio.wait_for(handle.result(), timeout=120)
        finally:
            stop(second)
    finally:
        stop(first, signal.SIGKILL)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    assert fleet.update_count("a1") == 1 and fleet.update_count("a3") == 1
    assert 1 <= fleet.update_count("a2") <= 2
    for host in ["a1", "a2", "a3"]:
        assert not fleet.in_maintenance(host)
        assert fleet.service_state(host, "nginx") == "active"


async def test_a_worker_too_busy_to_heartbeat_twice_in_one_update_does_not_fail_the_host(
    fleet: Lab, temporal_client: Client, worker_settings: Settings, tmp_path: Path
) -> None:
    """A worker frozen (SIGSTOP) past HEARTBEAT is alive but silent, as an overloaded one was at
    10,000 hosts: each attempt of the update it holds times out, and the next attaches to the
    same run on the host. Two such timeouts in one update used to fail the host (and stop the
    rollout); the update now runs once and the host is patched."""
    log = tmp_path / "worker.log"
    release = fleet.host("a1").lab_dir / "release-update"  # /var/lib/patchpilot-lab on a1
    # The update lasts until the test lets it end, however late each retry is picked up.
    held_update = (
        "until [ -e /var/lib/patchpilot-lab/release-update ]; do sleep 0.2; done && " + UPDATE
    )
    host_workflow = temporal_client.get_workflow_handle(host_workflow_id("a1"))

    def attaches() -> int:
        return sum(held_update in c for c in commands(fleet, "a1"))

    async def retried_after(attempt: int) -> bool:
        pending = (await host_workflow.describe()).raw_description.pending_activities
        return any(
            a.activity_type.name == names.PERFORM_UPDATE and a.attempt > attempt for a in pending
        )

    worker = spawn_worker(worker_settings, log)
    try:
        handle = await start(
            temporal_client,
            worker_settings,
            rollout(["cluster-a"], updateCommand=held_update, hostPattern="a1"),
        )
        await approve(handle)
        for attempt in (1, 2):
            await wait_for(lambda: attaches() >= attempt, timeout=60)  # noqa: B023
            os.killpg(worker.pid, signal.SIGSTOP)
            # Frozen until Temporal has given up on this attempt (heartbeat timeout) and
            # scheduled the next one.
            await wait_for(lambda: retried_after(attempt), timeout=60, interval=0.5)  # noqa: B023
            os.killpg(worker.pid, signal.SIGCONT)
        await wait_for(lambda: attaches() >= 3, timeout=60)
        release.touch()
        summary = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        release.touch()  # a failed test leaves no update running on a1 for the next one
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGCONT)
        stop(worker)
    release.unlink()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 1
    assert fleet.update_count("a1") == 1
    assert not fleet.in_maintenance("a1")


async def lose_the_worker_while_a1_stops_its_services(
    fleet: Lab, client: Client, settings: Settings, log: Path, *, then_cut_a1: bool = False
) -> RolloutProgress:
    """The preconditions, maintenance on and the stop run as local activities in one workflow
    task: a worker lost before that task completes leaves a1 in this rollout's maintenance with
    its services stopping, and the next worker runs all three again."""
    fleet.set_fault("a1", "hang-command:systemctl stop")
    first = spawn_worker(settings, log)
    try:
        handle = await start(client, settings, rollout(["cluster-a"]))
        await approve(handle)
        await wait_for(
            lambda: any(c.startswith("systemctl stop") for c in commands(fleet, "a1")), timeout=60
        )
        stop(first, signal.SIGKILL)  # well before the task's 10 s, so nothing of it is kept
        assert fleet.in_maintenance("a1")
        fleet.clear_fault("a1", "hang-command:systemctl stop")
        if then_cut_a1:
            fleet.stop_host("a1")
        second = spawn_worker(settings, log)
        try:
            with contextlib.suppress(WorkflowFailureError):
                await asyncio.wait_for(handle.result(), timeout=120)
            return await progress_of(handle)
        finally:
            stop(second)
    finally:
        stop(first, signal.SIGKILL)


async def test_a_worker_lost_after_maintenance_on_goes_on_with_the_host_it_left(
    fleet: Lab, temporal_client: Client, worker_settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    ended = await lose_the_worker_while_a1_stops_its_services(
        fleet, temporal_client, worker_settings, log
    )
    assert ended.phase == Phase.SUCCEEDED
    assert [h.state for h in ended.hosts()] == [HostState.DONE] * 3
    a1 = next(host for host in ended.hosts() if host.name == "a1")
    assert a1.notes == [RESUMED_NOTE]
    checked = [c for c in commands(fleet, "a1") if c.startswith("test -e /var/lib/patchpilot/")]
    assert len(checked) == 2  # checked again, and the second look found its own flag
    assert [fleet.update_count(h) for h in ["a1", "a2", "a3"]] == [1, 1, 1]
    assert not fleet.in_maintenance("a1")
    assert all(fleet.service_state("a1", s) == "active" for s in ["nginx", "postgresql"])


async def test_a_host_lost_with_the_worker_is_not_reported_out_of_maintenance(
    fleet: Lab, temporal_client: Client, worker_settings: Settings, tmp_path: Path
) -> None:
    # The next worker cannot reach a1 to learn whose maintenance it is in: it says so.
    log = tmp_path / "worker.log"
    ended = await lose_the_worker_while_a1_stops_its_services(
        fleet, temporal_client, worker_settings, log, then_cut_a1=True
    )
    assert ended.phase == Phase.FAILED
    a1 = next(host for host in ended.hosts() if host.name == "a1")
    assert a1.state == HostState.FAILED and a1.step == names.STEP_PRECONDITIONS
    assert a1.in_maintenance is None  # unknown, not "not in maintenance"
    assert fleet.in_maintenance("a1") and fleet.update_count("a1") == 0


async def test_temporal_restarted_mid_rollout_with_the_same_database(
    fleet: Lab, openbao: OpenBaoProcess, worker_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    db_file = tmp_path / "temporal.db"
    server = start_temporal_dev_server(port=port, db_file=db_file, log_file=tmp_path / "t1.log")
    settings = worker_settings.model_copy(update={"temporal_address": server.address})
    worker = spawn_worker(settings, tmp_path / "worker.log")
    try:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        slow_update = f"sleep 1 && {UPDATE}"
        handle = await start(
            client, settings, rollout(["cluster-b"], pilotHostCount=0, updateCommand=slow_update)
        )
        await approve(handle)
        await wait_for(lambda: any(slow_update in c for c in commands(fleet, "b1")), timeout=60)
        server.stop()
        await asyncio.sleep(1)
        server = start_temporal_dev_server(port=port, db_file=db_file, log_file=tmp_path / "t2.log")
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        handle = client.get_workflow_handle(handle.id, result_type=RolloutSummary)
        summary = await asyncio.wait_for(handle.result(), timeout=150)
    finally:
        stop(worker)
        server.stop()
    assert summary.phase == Phase.SUCCEEDED
    assert [fleet.update_count(h) for h in ["b1", "b2", "b3"]] == [1, 1, 1]


async def test_unreachable_host_fails_preconditions_and_nothing_later_is_touched(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
) -> None:
    fleet.stop_host("a2")
    handle = await start(temporal_client, worker_settings, rollout(["cluster-a", "cluster-b"]))
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert "host a2 failed at step preconditions: cannot connect to a2" in str(failed.value.cause)
    assert "Connection refused" in str(failed.value.cause)
    assert fleet.update_count("a1") == 1  # the pilot had finished
    for host in ["a3", "b1", "b2", "b3"]:
        assert commands(fleet, host) == []
    alert = mailbox.events("failure")
    assert len(alert) == 1 and "a2 at step preconditions" in alert[0]["Subject"]
    states = {h.name: h.state for h in (await progress_of(handle)).hosts()}
    assert states["a2"] == HostState.FAILED and states["a3"] == HostState.SKIPPED


async def test_rekeyed_host_is_refused_and_runs_no_command(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
) -> None:
    fleet.rekey_host("b1")
    handle = await start(temporal_client, worker_settings, rollout(["cluster-b"]))
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert "host key of b1" in str(failed.value.cause)
    assert "refusing to connect, no command was run" in str(failed.value.cause)
    assert commands(fleet, "b1") == [] and commands(fleet, "b2") == []
    assert "b1 at step preconditions" in mailbox.events("failure")[0]["Subject"]


def test_no_code_path_disables_host_key_checking() -> None:
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for package in ("activities", "bot", "workflows"):
        for path in (root / package).rglob("*.py"):
            text = path.read_text()
            for needle in ("known_hosts=None", "known_hosts = None", "StrictHostKeyChecking=no"):
                if needle in text:
                    offenders.append(f"{path.relative_to(root)}: {needle}")
    assert offenders == []


async def test_connection_lost_during_update_is_never_success(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
) -> None:
    slow_update = f"sleep 5 && {UPDATE}"
    handle = await start(
        temporal_client,
        worker_settings,
        rollout(["cluster-a"], pilotHostCount=0, updateCommand=slow_update, updateTimeout=15),
    )
    await approve(handle)
    await wait_for(lambda: any(slow_update in c for c in commands(fleet, "a1")), timeout=60)
    # The host goes away for good with the update half-way: PatchPilot tries to attach to the
    # detached run again until updateTimeout, then says it cannot know (a cut connection to a
    # host that stays up is attached to again: tests/integration/test_apt_lab.py).
    fleet.stop_host("a1")
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    reason = str(failed.value.cause)
    assert "runs detached" in reason and "could not be reached again within 15s" in reason
    assert "outcome is unknown until the host answers" in reason
    progress = await progress_of(handle)
    a1 = progress.hosts()[0]
    assert a1.state == HostState.FAILED and a1.step == "update" and a1.in_maintenance is True
    assert fleet.in_maintenance("a1")
    assert commands(fleet, "a2") == []
    assert sum(slow_update in c for c in commands(fleet, "a1")) == 1, "the update was retried"
    assert "Maintenance mode: in maintenance" in mailbox.events("failure")[0].get_content()


async def test_revoked_vault_token_is_a_clear_non_retried_failure(
    fleet: Lab,
    openbao: OpenBaoProcess,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
    known_secrets: list[str],
) -> None:
    admin = hvac.Client(url=openbao.address, token=openbao.root_token)
    token = admin.auth.token.create(policies=["root"], ttl="10m")["auth"]["client_token"]
    admin.auth.token.revoke(token)
    known_secrets.append(token)
    settings = worker_settings.model_copy(update={"vault_token": SecretStr(token)})
    async with running_worker(temporal_client, settings) as parts:
        handle = await start(temporal_client, settings, rollout(["cluster-a"]))
        await approve(handle)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert "Vault preflight failed" in str(failed.value.cause)
    assert "403 permission denied" in str(failed.value.cause)
    assert parts.vault.reads <= 1, "a 403 must not be retried"
    assert all(commands(fleet, h.name) == [] for h in fleet.hosts)
    assert token not in str(failed.value.cause)
    assert "Vault preflight failed" in mailbox.events("failure")[0].get_content()


async def test_vault_down_is_retried_until_it_is_back(
    fleet: Lab, temporal_client: Client, worker_settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    vault = start_openbao(port=port, log_file=tmp_path / "bao1.log")
    fleet.seed_vault(vault.address, vault.root_token, prefix=SECRET_PREFIX)
    vault.stop()  # down before the rollout needs it
    settings = worker_settings.model_copy(
        update={"vault_addr": vault.address, "vault_token": SecretStr(vault.root_token)}
    )
    try:
        async with running_worker(temporal_client, settings):
            handle = await start(temporal_client, settings, rollout(["cluster-b"]))
            await approve(handle)
            await asyncio.sleep(3)  # the preflight meets a refused connection a few times
            vault = start_openbao(port=port, log_file=tmp_path / "bao2.log")
            fleet.seed_vault(vault.address, vault.root_token, prefix=SECRET_PREFIX)
            summary = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        vault.stop()
    assert summary.phase == Phase.SUCCEEDED
    history = await handle.fetch_history()
    # The preflight is a local activity: its attempts are in its marker, not in activity events.
    markers = [
        json.loads(e.marker_recorded_event_attributes.details["data"].payloads[0].data)
        for e in history.events
        if e.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]
    attempts = [m["attempt"] for m in markers if m["activity_type"] == names.VAULT_CLIENT]
    assert attempts and max(attempts) >= 2, "the preflight should have been retried"


async def test_cli_cancel_during_a_wave_finishes_the_host_in_flight(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
) -> None:
    # The update waits for a go-ahead file in the host's own state, so the cancel lands mid-update.
    gated_update = f"while [ ! -e /var/lib/patchpilot-lab/go ]; do sleep 0.1; done && {UPDATE}"
    handle = await start(
        temporal_client,
        worker_settings,
        rollout(["cluster-a"], pilotHostCount=0, updateCommand=gated_update),
    )
    await approve(handle)
    await wait_for(lambda: any(gated_update in c for c in commands(fleet, "a1")), timeout=60)
    env = {**os.environ, **worker_env(worker_settings)}
    cancelled = await asyncio.to_thread(
        subprocess.run,
        [PATCHPILOT, "cancel", handle.id],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cancelled.returncode == 0, cancelled.stderr
    await asyncio.sleep(1)
    (fleet.host("a1").lab_dir / "go").touch()
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    await record_history(temporal_client, handle.id, "cancelled")
    progress = await progress_of(handle)
    assert progress.phase == Phase.CANCELLED
    assert [h.state for h in progress.hosts()] == [
        HostState.DONE,
        HostState.SKIPPED,
        HostState.SKIPPED,
    ]
    assert fleet.update_count("a1") == 1 and not fleet.in_maintenance("a1")
    assert commands(fleet, "a2") == [] and commands(fleet, "a3") == []
    summary = mailbox.events("summary")
    assert summary and "cancelled" in summary[-1].get_content()
