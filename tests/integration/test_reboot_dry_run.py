"""Reboots and dry runs on the real sshd lab: the lab's `reboot` drops the connections, keeps sshd
down for a moment and brings the host back with a new boot id."""

from __future__ import annotations

import pytest
from temporalio.client import Client, WorkflowFailureError

from activities.doctor import PREFLIGHT
from activities.ssh import unwrap_commands
from bot.settings import Settings
from bot.worker import WorkerParts
from lab import Lab
from tests.integration.test_rollout import approve, commands, rollout, start
from tests.support import Mailbox, record_history
from workflows.families import READ_OS_RELEASE
from workflows.models import Phase, RolloutProgress
from workflows.targets import DEFAULT_COMMANDS

KERNEL = "linux-image-amd64/stable-security 6.1.119-1 amd64 [upgradable from: 6.1.115-1]"


async def test_if_required_reboots_only_the_host_that_needs_it_and_waits_for_a_new_boot_id(
    fleet: Lab, worker: WorkerParts, temporal_client: Client, worker_settings: Settings
) -> None:
    fleet.reboot_delay = 1.5
    fleet.set_pending_updates("a2", [KERNEL])
    boot_before = {host: fleet.boot_id(host) for host in ["a1", "a2", "a3"]}
    handle = await start(temporal_client, worker_settings, rollout(["cluster-a"], pilotHostCount=0))
    await approve(handle)
    summary = await handle.result()
    await record_history(temporal_client, handle.id, "rebooted")
    assert summary.phase == Phase.SUCCEEDED
    assert [fleet.reboot_count(h) for h in ["a1", "a2", "a3"]] == [0, 1, 0]
    assert fleet.boot_id("a2") != boot_before["a2"]
    assert fleet.boot_id("a1") == boot_before["a1"]
    assert not fleet.reboot_required("a2")
    a2 = [c for line in fleet.command_log("a2") for c in unwrap_commands(line)]
    reboot_at = next(i for i, c in enumerate(a2) if "systemctl reboot" in c)
    start_at = next(i for i, c in enumerate(a2) if c.startswith("systemctl start"))
    assert reboot_at < start_at, "services were started before the host came back"
    assert fleet.service_state("a2", "nginx") == "active" and not fleet.in_maintenance("a2")
    hosts = {host.name: host for host in summary.hosts}
    assert hosts["a2"].rebooted and not hosts["a1"].rebooted


async def test_never_policy_does_not_reboot_and_says_a_reboot_is_pending(
    fleet: Lab, worker: WorkerParts, temporal_client: Client, worker_settings: Settings
) -> None:
    fleet.set_pending_updates("b1", [KERNEL])
    handle = await start(
        temporal_client,
        worker_settings,
        rollout(["cluster-b"], pilotHostCount=0, rebootPolicy="never"),
    )
    await approve(handle)
    summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED
    assert fleet.reboot_count("b1") == 0 and fleet.reboot_required("b1")
    b1 = next(host for host in summary.hosts if host.name == "b1")
    assert b1.note == "a reboot is pending but the policy is never"


async def test_host_that_never_comes_back_is_a_clear_failure(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
) -> None:
    fleet.set_fault("b1", "reboot-never-returns")
    handle = await start(
        temporal_client,
        worker_settings,
        rollout(["cluster-b"], rebootPolicy="always", rebootTimeout=5),
    )
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    message = str(failed.value.cause)
    assert "host b1 failed at step wait-for-boot" in message
    assert "did not come back after the reboot" in message
    assert commands(fleet, "b2") == []
    alert = mailbox.events("failure")[0]
    assert "b1 at step wait-for-boot" in alert["Subject"]
    progress = await handle.query("progress", result_type=RolloutProgress)
    assert progress.hosts()[0].in_maintenance is True


async def test_dry_run_reports_and_changes_nothing(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
) -> None:
    fleet.set_pending_updates("a3", [KERNEL])
    fleet.set_reboot_required("a1")
    fleet.set_fault("a2", "unhealthy:nginx")
    handle = await start(temporal_client, worker_settings, rollout(["cluster-a"], dryRun=True))
    summary = await handle.result()  # no approval was given
    await record_history(temporal_client, handle.id, "dry-run")
    assert summary.phase == Phase.DRY_RUN_DONE and summary.dry_run is not None
    found = {i.hostname: i for i in summary.dry_run}
    assert found["a1"].reboot_required and found["a3"].reboot_required
    assert found["a2"].reboot_required is False
    assert found["a3"].pending_updates == [KERNEL]
    assert len(found["a1"].pending_updates) == 2
    assert not found["a2"].preconditions_ok and "service nginx" in found["a2"].reason
    read_only = (
        "true",
        "test -e /var/lib/patchpilot/maintenance",
        "systemctl is-active ",
        DEFAULT_COMMANDS.list_updates,  # `case`s over the OS family: apt list --upgradable
        DEFAULT_COMMANDS.reboot_required_check,  # test -e /var/run/reboot-required
        PREFLIGHT,  # the pre-flight doctor: reads dpkg's state, locks, free space
        DEFAULT_COMMANDS.simulate_update,  # apt-get -s: simulates, locks and changes nothing
        READ_OS_RELEASE,  # the OS family, where the doctor did not run (a2's nginx refused it)
    )
    for host in ["a1", "a2", "a3"]:
        sent = commands(fleet, host)
        assert sent, f"{host} was not inspected"
        for command in sent:
            assert command.startswith(read_only), f"{host}: not a read-only command: {command}"
        assert fleet.update_count(host) == 0 and not fleet.in_maintenance(host)
    assert mailbox.events("approval-request") == []
    body = mailbox.events("summary")[0].get_content()
    assert "Dry run — nothing was changed" in body and KERNEL in body
    # Nothing was patched, and the e-mail does not say otherwise (a2's nginx refused it).
    assert summary.patched == 0 and "ready 2, refused 1, skipped 0, duration" in body
    assert mailbox.events("summary")[0]["Subject"].endswith("(2 ready, 1 refused)")
