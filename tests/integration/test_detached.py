"""The update run detached (activities/detached.py) on real-apt lab hosts: a real `apt-get
dist-upgrade` whose SSH connection is cut half-way is attached to again and reports its own
result, two attempts at once run it once, a runner that dies is reported as such, never started
again, and a command that overruns or keeps asking is killed with its whole run on the host."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import Awaitable
from datetime import UTC, datetime

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.detached import finish_detached, run_directory
from activities.host_steps import HostStepActivities
from activities.ssh import CommandResult, HostSession, SshRunner
from activities.vault import VaultCredentialSource
from lab.apt_lab import AptLab
from lab.processes import OpenBaoProcess
from tests.integration.apt_fixtures import apt_runner, module_apt_lab, reset_lab
from tests.integration.test_host_output import credentials, target
from tests.integration.test_rollout import rollout
from tests.support import wait_for
from workflows.models import HostJob, HostStepInput, HostTarget, StepResult
from workflows.targets import UPDATE_PROFILES

HOSTS = ["d1", "d2"]
RUNS = "/var/lib/patchpilot/runs"
PROFILE = UPDATE_PROFILES["full"]


detached_lab = module_apt_lab("det", HOSTS, "127.0.8.")
lab = reset_lab("detached_lab", HOSTS)
runner = apt_runner


async def run_detached(
    session: HostSession, command: str, directory: str, timeout: float, *, what: str
) -> CommandResult:
    """The detached command's own result (finish_detached without its package report)."""
    return (await finish_detached(session, command, directory, timeout, what=what)).result


def slow_upgrade(lab: AptLab, host: str, seconds: int) -> None:
    """pp-slow 1.0 on the host, its 1.1 postinst taking `seconds`."""
    lab.install(host, "pp-slow")
    (lab.host(host).root / "aptfs" / "upper" / "etc" / "pp-slow.seconds").write_text(f"{seconds}\n")


def configuring(lab: AptLab, host: str) -> bool:
    """pp-slow's postinst is running: dpkg is half-way through the upgrade."""
    return (lab.host(host).run_dir / "pp-slow.configuring").exists()


async def test_a_connection_cut_mid_upgrade_is_attached_again_and_the_upgrade_runs_once(
    lab: AptLab, runner: SshRunner
) -> None:
    slow_upgrade(lab, "d1", 4)
    directory = run_directory(RUNS, "rollout-cut", "run1")
    async with runner.session(target(lab, "d1"), credentials(lab)) as session:
        update = asyncio.ensure_future(
            run_detached(session, PROFILE, directory, 120, what="update command")
        )
        await wait_for(lambda: configuring(lab, "d1"), timeout=60)
        assert lab.cut_connections("d1") >= 1
        result = await update
    # The real result of the one run: apt's own output and exit status.
    assert result.ok, result.tail()
    assert "Setting up pp-slow (1.1)" in result.stdout
    assert "Setting up pp-hello (1.1)" in result.stdout
    # dpkg's log: each package upgraded exactly once, no second apt run.
    assert lab.upgrade_runs("d1", "pp-slow") == 1 and lab.upgrade_runs("d1", "pp-hello") == 1
    startups = [line for line in lab.dpkg_log("d1") if "startup archives unpack" in line]
    assert len(startups) == 1, lab.dpkg_log("d1")
    versions = await lab.run("d1", "dpkg-query -W -f='${Version}' pp-slow pp-hello")
    assert str(versions.stdout) == "1.11.1"
    # The run directory on the host holds what happened.
    run_dir = lab.host("d1").state_dir / "runs" / directory.rsplit("/", 1)[1]
    assert (run_dir / "exit").read_text().strip() == "0"
    assert (run_dir / "command").read_text().strip() == PROFILE


async def test_two_attempts_at_once_run_the_update_once_and_both_see_its_result(
    lab: AptLab, runner: SshRunner
) -> None:
    slow_upgrade(lab, "d2", 2)
    directory = run_directory(RUNS, "rollout-twice", "run1")
    async with runner.session(target(lab, "d2"), credentials(lab)) as session:
        first, second = await asyncio.gather(
            run_detached(session, PROFILE, directory, 120, what="update command"),
            run_detached(session, PROFILE, directory, 120, what="update command"),
        )
        # A later attempt (a retry after a dead worker) attaches to the finished run.
        third = await run_detached(session, PROFILE, directory, 120, what="update command")
    assert first.ok and second.ok and third.ok
    assert first.stdout == second.stdout == third.stdout
    assert lab.upgrade_runs("d2", "pp-slow") == 1
    assert len([line for line in lab.dpkg_log("d2") if "startup archives unpack" in line]) == 1


async def test_a_runner_that_died_is_reported_and_never_started_again(
    lab: AptLab, runner: SshRunner
) -> None:
    directory = run_directory(RUNS, "rollout-killed", "run1")
    async with runner.session(target(lab, "d1"), credentials(lab)) as session:
        update = asyncio.ensure_future(
            run_detached(session, "echo started; sleep 60", directory, 60, what="update command")
        )
        pid_file = lab.host("d1").state_dir / "runs" / directory.rsplit("/", 1)[1] / "pid"
        await wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "", 30)
        # What a reboot or an OOM kill does to the update's processes.
        killed = await lab.run("d1", f"kill -KILL -$(cat {directory}/pid)")
        assert killed.exit_status == 0, killed.stderr
        with pytest.raises(ApplicationError) as failed:
            await update
        assert failed.value.type == "UpdateVanished" and failed.value.non_retryable
        assert "ended without an exit status" in failed.value.message
        assert "dpkg --configure -a" in failed.value.message
        # A retry attaches, sees the dead run, and does not start the command again.
        with pytest.raises(ApplicationError) as again:
            await run_detached(session, "echo started; sleep 60", directory, 60, what="update")
        assert again.value.type == "UpdateVanished"
    output = lab.host("d1").state_dir / "runs" / directory.rsplit("/", 1)[1] / "stdout"
    assert output.read_text() == "started\n"


async def test_an_update_that_overruns_is_killed_on_the_host_with_its_run(
    lab: AptLab, runner: SshRunner
) -> None:
    directory = run_directory(RUNS, "rollout-slow", "run1")
    async with runner.session(target(lab, "d2"), credentials(lab)) as session:
        with pytest.raises(ApplicationError) as failed:
            await run_detached(session, "sleep 301", directory, 2, what="update command")
        assert failed.value.type == "CommandTimedOut"
        message = failed.value.message
        assert "update command on d2" in message and "did not finish within 2s" in message
        assert message.endswith(": sleep 301")
        left = await session.run("ps -eo args= | grep -x 'sleep 301' || true", 10)
    assert left.stdout.strip() == "", "the detached run was left running"


def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_retry_that_cannot_reach_the_host_says_the_update_may_be_running(
    lab: AptLab, openbao: OpenBaoProcess
) -> None:
    # A worker lost half-way through the upgrade, and Temporal's next attempt cannot reach the
    # host: "cannot connect" alone would read as though nothing had run.
    lab.seed_vault(openbao.address, openbao.root_token)
    slow_upgrade(lab, "d2", 4)
    ssh = SshRunner(lab.known_hosts_path, connect_timeout=5)
    steps = HostStepActivities(
        VaultCredentialSource(openbao.address, token=openbao.root_token), ssh
    )
    job = HostJob.from_rollout("rollout-unreachable", rollout(["det"], updateCommand=PROFILE))

    def attempt(number: int, host: HostTarget) -> Awaitable[StepResult]:
        env = ActivityEnvironment()
        env.info = dataclasses.replace(
            ActivityEnvironment.default_info(),
            attempt=number,
            workflow_run_id="run-1",
            scheduled_time=datetime.now(UTC),
        )
        step = HostStepInput(job=job, host=host, timeout_seconds=120, command=PROFILE)
        return env.run(steps.perform_update, step)  # type: ignore[no-any-return]

    try:
        first = asyncio.ensure_future(attempt(1, target(lab, "d2")))
        await wait_for(lambda: configuring(lab, "d2") or first.done(), timeout=60)
        assert not first.done(), first.exception()
        first.cancel()  # the worker is gone; the upgrade goes on, detached, on the host
        with contextlib.suppress(asyncio.CancelledError):
            await first
        unreachable = target(lab, "d2", port=closed_port())
        with pytest.raises(ApplicationError) as retried:
            await attempt(2, unreachable)
        said = retried.value.message
        assert said.startswith("cannot connect to d2") and "Connection refused" in said
        assert "may already be running on d2" in said and "outcome is unknown" in said
        assert "rollout-unreachable" in said  # the run directory on the host
        assert retried.value.type == "HostUnreachable" and not retried.value.non_retryable
        # A first attempt that cannot connect ran nothing, and says only that.
        with pytest.raises(ApplicationError) as fresh:
            await attempt(1, target(lab, "d1", port=closed_port()))
        assert fresh.value.message.startswith("cannot connect to d1")
        assert "may already be running" not in fresh.value.message
        # The attempt that reaches the host again collects the one run's result.
        result = await attempt(3, target(lab, "d2"))
    finally:
        ssh.close_all()
    assert result.packages is not None
    assert "pp-slow" in [change.name for change in result.packages.upgraded]
    assert lab.upgrade_runs("d2", "pp-slow") == 1
