"""Every step's time limit is a setting, and a step that overruns it is killed on the host, named,
and not run again (real Temporal, OpenBao and sshd lab hosts)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
from temporalio.client import Client, WorkflowFailureError

from activities.ssh import unwrap_commands
from bot.settings import Settings
from bot.worker import WorkerParts
from lab import Lab
from tests.integration.test_rollout import approve, commands, rollout, start
from tests.support import Mailbox
from workflows.models import STEP_TIME_LIMIT, HostState, RolloutInput, RolloutProgress
from workflows.targets import DEFAULT_COMMANDS


def test_the_step_limits_default_to_three_minutes_as_before() -> None:
    defaults = rollout(["cluster-a"])
    assert timedelta(minutes=3) == STEP_TIME_LIMIT
    assert defaults.service_stop_timeout == STEP_TIME_LIMIT
    assert defaults.service_start_timeout == STEP_TIME_LIMIT
    assert defaults.maintenance_timeout == STEP_TIME_LIMIT
    wire = RolloutInput.model_validate(
        {**defaults.model_dump(by_alias=True), "serviceStartTimeout": 200}
    )
    assert wire.service_start_timeout == timedelta(seconds=200)


# A command that takes far longer than its limit: it prints, as every command does, and sleeps in
# a child process, which the kill must reach too. "slee[p]" keeps pgrep from finding itself; the
# number is this process's own, because a lab host sees every process on the machine (another
# test run's sleep would look like this one's).
SECONDS = 6000 + os.getpid() % 3000
SLOW = f"sleep {SECONDS} && "
STILL_RUNNING = f"pgrep -f 'slee[p] {SECONDS}' || true"


@pytest.mark.parametrize(
    ("command", "setting", "step", "what"),
    [
        ("maintenance_on", "maintenanceTimeout", "maintenance-on", "maintenance on"),
        ("service_stop", "serviceStopTimeout", "stop-services", "stopping nginx"),
        ("service_start", "serviceStartTimeout", "start-services", "starting postgresql"),
    ],
)
async def test_a_step_that_overruns_its_setting_is_killed_named_and_not_retried(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
    command: str,
    setting: str,
    step: str,
    what: str,
) -> None:
    slow = SLOW + getattr(DEFAULT_COMMANDS, command)
    fleet.write_inventory(host_vars={"a1": {f"patchpilot_{command}": slow}})
    began = time.monotonic()
    handle = await start(temporal_client, worker_settings, rollout(["cluster-a"], **{setting: 2}))
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    reason = str(failed.value.cause)
    assert f"host a1 failed at step {step}" in reason
    assert f"{what} on a1 (" in reason
    assert "did not finish within 2s and was killed on the host" in reason
    assert "timed out (start-to-close)" not in reason
    assert time.monotonic() - began < 60
    # One SSH command carried the slow command (a service step sends all its services in one:
    # the later ones are in it, never run): a retry would send a second.
    sent = [unwrap_commands(line) for line in fleet.command_log("a1")]
    assert sum(any(c.startswith(SLOW) for c in line) for line in sent) == 1, "the step was retried"
    left = await fleet.run("a1", STILL_RUNNING)
    assert str(left.stdout).strip() == "", "the overrunning command still runs on the host"
    assert fleet.update_count("a1") == (1 if command == "service_start" else 0)
    assert commands(fleet, "a2") == []
    progress = await handle.query("progress", result_type=RolloutProgress)
    assert {h.name: h.state for h in progress.hosts()}["a1"] == HostState.FAILED
    assert f"a1 at step {step}" in mailbox.events("failure")[0]["Subject"]


async def test_a_slow_service_start_within_its_setting_succeeds(
    fleet: Lab, worker: WorkerParts, temporal_client: Client, worker_settings: Settings
) -> None:
    slow = "sleep 3 && systemctl start {service}"
    fleet.write_inventory(host_vars={"b1": {"patchpilot_service_start": slow}})
    handle = await start(
        temporal_client,
        worker_settings,
        rollout(["cluster-b"], pilotHostCount=0, serviceStartTimeout=8, maxConcurrency=3),
    )
    await approve(handle)
    summary = await handle.result()
    assert summary.patched == 3
    assert fleet.service_state("b1", "nginx") == "active"
    assert sum(c.startswith("sleep 3 && systemctl start") for c in commands(fleet, "b1")) == 2
