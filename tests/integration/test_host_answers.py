"""Whole rollouts on the real lab whose hosts answer in ways that used to be misread: Latin-1 text
from the update and the health check, a boot id that is empty, sudo (Ansible's become)."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import Client, WorkflowFailureError

from bot.settings import Settings
from bot.worker import WorkerParts
from lab import Lab
from tests.integration.test_rollout import UPDATE, approve, commands, rollout, start
from tests.support import Mailbox
from workflows.models import HostState, Phase, RolloutProgress
from workflows.targets import UPDATE_PROFILES

LATIN1_LINE = r"printf 'Param\351trage de nginx (1.22.1-9+deb12u2) ...\n'"


async def test_a_successful_update_that_prints_latin1_is_a_success(
    fleet: Lab, worker: WorkerParts, temporal_client: Client, worker_settings: Settings
) -> None:
    update = f"{LATIN1_LINE} && {UPDATE}"
    handle = await start(
        temporal_client, worker_settings, rollout(["cluster-b"], updateCommand=update)
    )
    await approve(handle)
    summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    for host in ["b1", "b2", "b3"]:
        assert fleet.update_count(host) == 1 and not fleet.in_maintenance(host)
        assert fleet.service_state(host, "nginx") == "active"


async def test_a_failing_update_in_latin1_keeps_its_exit_code_and_its_text(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
) -> None:
    update = r"printf 'E: \311chec de la mise \340 jour\n' >&2; exit 100"
    handle = await start(
        temporal_client,
        worker_settings,
        rollout(["cluster-a"], pilotHostCount=0, updateCommand=update),
    )
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    reason = str(failed.value.cause)
    assert "host a1 failed at step update" in reason
    assert "update command on a1 exited 100: E: \ufffdchec de la mise \ufffd jour" in reason
    assert "lost the SSH connection" not in reason
    assert sum(update in c for c in commands(fleet, "a1")) == 1, "the update was retried"
    alert = mailbox.events("failure")[0].get_content()
    assert "exited 100" in alert


async def test_a_healthy_host_whose_health_check_prints_latin1_is_patched(
    fleet: Lab, worker: WorkerParts, temporal_client: Client, worker_settings: Settings
) -> None:
    health = r"printf 'Syst\350me en bonne sant\351\n'"
    fleet.write_inventory(host_vars={"a1": {"patchpilot_health_check": health}})
    handle = await start(temporal_client, worker_settings, rollout(["cluster-a"]))
    await approve(handle)
    summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    assert commands(fleet, "a1").count(health) == 1, "the health check was retried"
    assert fleet.update_count("a1") == 1


async def test_an_empty_boot_id_refuses_the_reboot_before_it_happens(
    fleet: Lab, worker: WorkerParts, temporal_client: Client, worker_settings: Settings
) -> None:
    # As on hosts where the default boot id source does not exist (ansible/ansible#72629).
    empty = "cat /nonexistent 2>/dev/null; true"
    fleet.write_inventory(host_vars={"b1": {"patchpilot_boot_id": empty}})
    boot_before = fleet.boot_id("b1")
    handle = await start(
        temporal_client,
        worker_settings,
        rollout(["cluster-b"], pilotHostCount=0, rebootPolicy="always"),
    )
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    reason = str(failed.value.cause)
    assert "host b1 failed at step reboot" in reason
    assert f"reading the boot id on b1 ({empty}) printed nothing, not a boot id" in reason
    assert "did not come back" not in reason and "old boot id" not in reason
    assert fleet.reboot_count("b1") == 0 and fleet.boot_id("b1") == boot_before
    assert fleet.update_count("b1") == 1 and fleet.in_maintenance("b1")
    assert commands(fleet, "b2") == []


async def test_become_patches_through_sudo_and_a_password_prompt_stops_at_preconditions(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
) -> None:
    fleet.write_inventory(group_vars={"cluster-a": {"ansible_become": "yes"}})
    fleet.set_fault("a2", "sudo-needs-password")
    handle = await start(temporal_client, worker_settings, rollout(["cluster-a"]))
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    reason = str(failed.value.cause)
    assert "host a2 failed at step preconditions" in reason
    assert "sudo -n -u root does not work on a2" in reason
    assert "sudo: a password is required" in reason
    # The pilot a1 was patched, every one of its commands through sudo as root.
    assert fleet.update_count("a1") == 1 and not fleet.in_maintenance("a1")
    a1_sudo = fleet.sudo_calls("a1")
    # One sudo per SSH command (a batch of checks is one), every one as root.
    assert len(a1_sudo) == len(fleet.command_log("a1")) and {u for u, _ in a1_sudo} == {"root"}
    assert any(UPDATE in command for _, command in a1_sudo)  # inside the detached run's line
    # a2 ran nothing but the sudo probe.
    assert commands(fleet, "a2") == ["true"] and fleet.update_count("a2") == 0
    assert not fleet.in_maintenance("a2")
    progress = await handle.query("progress", result_type=RolloutProgress)
    states = {h.name: h.state for h in progress.hosts()}
    assert states["a2"] == HostState.FAILED and states["a3"] == HostState.SKIPPED
    assert "a password is required" in mailbox.events("failure")[0].get_content()


@pytest.mark.parametrize("become", [False, True])
async def test_the_update_profile_runs_without_questions_with_and_without_sudo(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    become: bool,
) -> None:
    fleet.write_inventory(group_vars={"cluster-b": {"patchpilot_become": become}})
    profile = UPDATE_PROFILES["full"]
    handle = await start(
        temporal_client,
        worker_settings,
        rollout(["cluster-b"], pilotHostCount=0, maxConcurrency=3, updateCommand=profile),
    )
    await approve(handle)
    summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    for host in ["b1", "b2", "b3"]:
        assert fleet.update_count(host) == 1
        assert fleet.apt_environments(host) == [
            "DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a DPKG_FORCE=confdef,confold"
        ]
        assert profile in commands(fleet, host)
        assert bool(fleet.sudo_calls(host)) is become


async def test_an_update_that_keeps_asking_fails_fast_and_is_not_retried(
    fleet: Lab, worker: WorkerParts, temporal_client: Client, worker_settings: Settings
) -> None:
    asking = "while :; do printf 'Do you want to continue? [Y/n] '; read answer; done"
    handle = await start(
        temporal_client,
        worker_settings,
        rollout(["cluster-a"], pilotHostCount=0, updateCommand=asking, updateTimeout=3600),
    )
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), timeout=60)
    reason = str(failed.value.cause)
    assert "host a1 failed at step update" in reason
    assert "update command on a1" in reason and "waits for input that never comes" in reason
    assert "'Do you want to continue? [Y/n]'" in reason
    assert commands(fleet, "a1").count(asking) == 1, "the update was retried"
    assert fleet.in_maintenance("a1") and commands(fleet, "a2") == []
