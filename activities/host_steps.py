"""The per-host activities of the spec (steps 3 and 5-13) plus maintenance off.

Each one fetches its own SSH credentials (never passed through Temporal), opens one verified
connection, runs its commands and raises a non-retryable ApplicationError when a retry cannot help.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import package_report
from activities.attempts import (
    heartbeat,
    is_retry,
    keep_heartbeating,
    time_left,
    unreachable_on_retry,
)
from activities.checks import run_all, run_in_order
from activities.detached import finish_detached, run_directory
from activities.host_values import (
    HostValueError,
    boot_id,
    package_lines,
    read_look,
    reboot_look,
    yes_no,
)
from activities.preconditions import RESUMED_NOTE, precondition_problem, render
from activities.ssh import CommandResult, HostSession, SshRunner
from activities.trust import Trust
from activities.vault import VaultCredentialSource
from workflows import names
from workflows.models import (
    BootWait,
    HostInspection,
    HostStepInput,
    RebootRequest,
    RebootResult,
    StepResult,
)
from workflows.reboots import look_commands, reboot_decision
from workflows.targets import is_no_op

__all__ = ["HostStepActivities", "StepError", "render"]

POLL_SECONDS = 2.0
# Errors of an SSH attempt that a host coming back from a reboot gives: keep polling.
_NOT_BACK_YET = ("HostUnreachable", "SshConnectionLost", "SshChannelFailed", "UnusableHostValue")


class StepError(ApplicationError):
    """A host step's failure; `details`: what the workflow reads back from it (a failed
    update's package report, workflows/host_patch.py)."""

    def __init__(
        self,
        message: str,
        *details: object,
        retryable: bool = False,
        kind: str = "StepFailed",
    ) -> None:
        super().__init__(message, *details, type=kind, non_retryable=not retryable)


def _must_succeed(session: HostSession, result: CommandResult, what: str) -> None:
    if not result.ok:
        raise StepError(
            f"{what} on {session.host.name} exited {result.exit_status}: {result.tail()}"
        )


class HostStepActivities:
    def __init__(
        self, vault: VaultCredentialSource, ssh: SshRunner, trust: Trust | None = None
    ) -> None:
        self._trust = trust
        self._vault = vault
        self._ssh = ssh

    @asynccontextmanager
    async def _session(
        self, step: HostStepInput, *, approval_needed: bool = True
    ) -> AsyncIterator[HostSession]:
        ticker = asyncio.ensure_future(keep_heartbeating())
        try:
            await self._admit(step, approval_needed=approval_needed)
            async with self._connected(step) as session:
                yield session
        finally:
            ticker.cancel()

    async def _admit(self, step: HostStepInput, *, approval_needed: bool = True) -> None:
        """The host gate (activities/trust.py), before anything connects or a step answers
        without connecting: the worker's own policy and inventory must allow `step`."""
        if self._trust is not None:
            await self._trust.admit(step, approval_needed=approval_needed)

    @asynccontextmanager
    async def _connected(self, step: HostStepInput) -> AsyncIterator[HostSession]:
        credentials = await self._vault.credentials(
            step.job.vault_address,
            step.job.secret_path_prefix,
            step.host.name,
            token=step.job.vault_token,
            rollout_id=step.job.rollout_id,  # read with the rollout's child token
            user=step.host.user,  # the principal of a certificate, in certificate mode
        )
        async with self._ssh.session(step.host, credentials) as session:
            yield session

    async def _must(
        self, session: HostSession, command: str, what: str, timeout: float
    ) -> CommandResult:
        result = await session.run(command, timeout, what=what, heartbeat=heartbeat)
        _must_succeed(session, result, what)
        return result

    async def _each_must(
        self, session: HostSession, commands: list[tuple[str, str]], timeout: float
    ) -> None:
        """`_must` for each of `commands` ((command, what)) in order, stopping at the first that
        fails, `timeout` seconds each: in one SSH command (activities/checks.py run_in_order)."""
        ran = await run_in_order(session, commands, timeout, heartbeat=heartbeat)
        for result, (_, what) in zip(ran, commands, strict=False):
            _must_succeed(session, result, what)

    async def _run_scripts(self, step: HostStepInput, what: str) -> StepResult:
        async with self._session(step) as session:
            for index, script in enumerate(step.scripts, start=1):
                await self._must(session, script, f"{what} #{index}", step.timeout_seconds)
        return StepResult(detail=f"{len(step.scripts)} {what} ran")

    # ---- spec step 3 --------------------------------------------------------------------------

    @activity.defn(name=names.CHECK_HOST_PRECONDITIONS)
    async def check_host_preconditions(self, step: HostStepInput) -> StepResult:
        """Reachable (with a verified host key), sudo working (with become), healthy, not
        already in maintenance, the package manager ready (activities/doctor.py); otherwise a
        non-retryable error whose type is the refusal's kind (DpkgInterrupted, PackageLockHeld,
        LowDiskSpace, UnknownOsFamily, SudoNeedsPassword, HostUnhealthy, …) and whose message
        is its sentence: each is its own reason in the host result and the failure alert. The
        doctor's notes (held packages, a reboot already pending, a dpkg repaired when the rollout
        opted in) are the result's `notes`, carried to the host's result and the summary."""
        notes: list[str] = []
        repair = step.job.repair_interrupted_dpkg
        async with self._session(step) as session:
            problem = await precondition_problem(session, step, notes, repair=repair)
        if problem:
            raise StepError(problem, kind=problem.kind)
        checked = "reachable" if RESUMED_NOTE in notes else "reachable, healthy, not in maintenance"
        detail = "; ".join([checked, *notes])
        return StepResult(detail=detail, notes=notes)

    # ---- dry run ------------------------------------------------------------------------------

    @activity.defn(name=names.INSPECT_HOST)
    async def inspect_host(self, step: HostStepInput) -> HostInspection:
        """Preconditions, pending updates and reboot need, read-only: nothing is changed."""
        commands = step.host.commands
        name = step.host.name
        pending: list[str] = []
        would_change: list[str] = []
        required = False
        problem: str | None = None
        async with self._session(step, approval_needed=False) as session:
            try:
                problem = await precondition_problem(session, step, inspecting=True)
                listed = await session.run(commands.list_updates, step.timeout_seconds)
                pending = package_lines(listed, name, "listing pending updates")
                checked = await session.run(commands.reboot_required_check, step.timeout_seconds)
                required = yes_no(checked, name, "the reboot-required check")
                simulated = await session.run(commands.simulate_update, step.timeout_seconds)
                if simulated.ok:  # what apt would do; a host without it says nothing
                    would_change = package_report.simulated_changes(simulated.stdout)
            except HostValueError as error:
                problem = problem or error.message
                reason = error.message
            else:
                reason = problem or ""
        kernel = any(line.startswith(("linux-image", "kernel")) for line in pending)
        return HostInspection(
            hostname=name,
            cluster=step.host.cluster,
            preconditions_ok=problem is None,
            reason=reason,
            pending_updates=pending,
            reboot_required=required or kernel,
            would_change=would_change,
        )

    # ---- reboots ------------------------------------------------------------------------------

    @activity.defn(name=names.REBOOT_HOST)
    async def reboot_host(self, request: RebootRequest) -> RebootResult:
        """Reboot when the policy says so; the boot id read first tells when it is back. A boot id
        or reboot-required answer that cannot be used refuses the reboot (UnusableHostValue)."""
        step = request.step
        commands = step.host.commands
        if request.policy != step.job.reboot_policy:  # the approvals cover the job's policy
            raise StepError("the reboot policy asked for is not the rollout's", kind="NotApproved")
        async with self._session(step) as session:
            # One SSH command for both (activities/checks.py); the boot id is judged first.
            checks = [
                (commands.boot_id, "reading the boot id"),
                (commands.reboot_required_check, "the reboot-required check"),
            ]
            look = read_look(await run_all(session, checks, 30), step.host.name)
            reboot, reason = reboot_decision(request.policy, look.reboot_required)
            if not reboot:
                return RebootResult(rebooted=False, boot_id_before=look.boot_id, reason=reason)
            try:
                await self._must(session, commands.reboot, "reboot command", 60)
            except ApplicationError as error:
                if error.type != "SshConnectionLost":  # the reboot took the connection with it
                    raise
        return RebootResult(rebooted=True, boot_id_before=look.boot_id, reason=reason)

    @activity.defn(name=names.WAIT_FOR_HOST_BOOT)
    async def wait_for_host_boot(self, wait: BootWait) -> StepResult:
        """Back means: SSH answers (host key verified) AND the boot id differs from before."""
        step = wait.step
        loop = asyncio.get_running_loop()
        deadline = loop.time() + time_left(step.timeout_seconds)
        last = "no answer yet"
        while loop.time() < deadline:
            try:
                async with self._session(step) as session:
                    result = await session.run(step.host.commands.boot_id, 30)
                new_id = boot_id(result, step.host.name)
                if new_id != wait.boot_id_before:
                    return StepResult(detail=f"back with boot id {new_id}")
                last = f"still up with the old boot id {new_id}"
            except ApplicationError as error:
                if error.type not in _NOT_BACK_YET:
                    raise
                last = error.message
            heartbeat()
            await asyncio.sleep(POLL_SECONDS)
        raise StepError(
            f"{step.host.name} did not come back within {step.timeout_seconds:g}s after the "
            f"reboot ({last})",
            kind="HostDidNotReturn",
        )

    # ---- spec steps 5-13 ----------------------------------------------------------------------

    @activity.defn(name=names.RUN_PRE_DOWNTIME_SCRIPTS)
    async def run_pre_downtime_scripts(self, step: HostStepInput) -> StepResult:
        return await self._run_scripts(step, "pre-downtime script")

    @activity.defn(name=names.SET_MAINTENANCE_MODE)
    async def set_maintenance_mode(self, step: HostStepInput) -> StepResult:
        async with self._session(step) as session:
            command = render(step.host.commands.maintenance_on, rollout_id=step.job.rollout_id)
            await self._must(session, command, "maintenance on", step.timeout_seconds)
        return StepResult(detail="maintenance mode on")

    @activity.defn(name=names.STOP_SERVICES)
    async def stop_services(self, step: HostStepInput) -> StepResult:
        stops = [
            (render(step.host.commands.service_stop, service=s), f"stopping {s}")
            for s in step.job.service_list
        ]
        async with self._session(step) as session:
            await self._each_must(session, stops, step.timeout_seconds)
        return StepResult(detail=f"stopped {', '.join(step.job.service_list) or 'no services'}")

    @activity.defn(name=names.WAIT_FOR_WORKLOAD_DRAIN)
    async def wait_for_workload_drain(self, step: HostStepInput) -> StepResult:
        """Poll the drain check until it passes (DrainTimeout after the step's limit). With
        `first_look`: one check, `ok` False when the host has not drained yet. A drain check that
        does nothing (`true`, the default: workflows/targets.is_no_op) passes without a session."""
        if is_no_op(step.host.commands.drain_check):
            await self._admit(step)  # gated like every host step, though nothing connects
            return StepResult(detail="nothing to drain (the drain check is a no-op)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + time_left(step.timeout_seconds)
        async with self._session(step) as session:
            while True:
                remaining = max(1.0, deadline - loop.time())
                result = await session.run(
                    step.host.commands.drain_check,
                    remaining,
                    what="the drain check",
                    heartbeat=heartbeat,
                )
                if result.ok:
                    return StepResult(detail="drained")
                if step.first_look:
                    return StepResult(ok=False, detail=f"not drained yet: {result.tail()}")
                if loop.time() >= deadline:
                    raise StepError(
                        f"{step.host.name} did not drain within {step.timeout_seconds:g}s: "
                        f"{result.tail()}",
                        kind="DrainTimeout",
                    )
                heartbeat()
                await asyncio.sleep(POLL_SECONDS)

    @activity.defn(name=names.RUN_PRE_UPDATE_SCRIPTS)
    async def run_pre_update_scripts(self, step: HostStepInput) -> StepResult:
        return await self._run_scripts(step, "pre-update script")

    @activity.defn(name=names.PERFORM_UPDATE)
    async def perform_update(self, step: HostStepInput) -> StepResult:
        if not step.command:
            raise StepError("no update command given")
        # Detached on the host (activities/detached.py): a retry attaches to the same run.
        run_key = (activity.info().workflow_run_id if activity.in_activity() else None) or "direct"
        directory = run_directory(step.host.commands.run_dir, step.job.rollout_id, run_key)
        # The reboot decision's look rides on the update's SSH command (workflows/reboots.py).
        look = look_commands(step.job.reboot_policy, step.host.commands)
        connected = False
        try:
            async with self._session(step) as session:
                connected = True
                finished = await finish_detached(
                    session,
                    step.command,
                    directory,
                    time_left(step.timeout_seconds),
                    limit=step.timeout_seconds,
                    what="update command",
                    heartbeat=heartbeat,
                    before=package_report.BEFORE,
                    after=package_report.AFTER,
                    look=look,
                )
                result = finished.result
                printed = (finished.report, finished.report_known)
                report = await package_report.read(session, directory, result, printed)
        except ApplicationError as error:
            if connected or not is_retry() or error.type != "HostUnreachable":
                raise
            raise unreachable_on_retry(error, "the update", step.host.name, directory) from None
        if not result.ok:
            said = f"; packages: {report.summary_line()}" if report else ""
            raise StepError(
                f"update command on {step.host.name} exited {result.exit_status}: "
                f"{result.tail()}{said}",
                *([report.model_dump(mode="json")] if report else []),
            )
        return StepResult(
            detail=result.stdout.strip()[-500:],
            packages=report,
            reboot_look=reboot_look(finished.look, step.host.name),
        )

    @activity.defn(name=names.START_SERVICES)
    async def start_services(self, step: HostStepInput) -> StepResult:
        # Reverse of the stop order, so a service comes up after what it depends on.
        starts = [
            (render(step.host.commands.service_start, service=s), f"starting {s}")
            for s in reversed(step.job.service_list)
        ]
        async with self._session(step) as session:
            await self._each_must(session, starts, step.timeout_seconds)
        return StepResult(
            detail=f"started {', '.join(reversed(step.job.service_list)) or 'no services'}"
        )

    @activity.defn(name=names.RUN_POST_UPDATE_SCRIPTS)
    async def run_post_update_scripts(self, step: HostStepInput) -> StepResult:
        return await self._run_scripts(step, "post-update script")

    @activity.defn(name=names.CHECK_SERVICE_HEALTH)
    async def check_service_health(self, step: HostStepInput) -> StepResult:
        """Poll until every service is healthy, or fail when the health timeout is reached
        (HealthCheckFailed). With `first_look`: one round of checks, `ok` False when a service
        is not healthy yet."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + time_left(step.timeout_seconds)
        async with self._session(step) as session:
            while True:
                unhealthy: dict[str, str] = {}
                services = step.job.service_list
                checks = [
                    (render(step.host.commands.service_health, service=s), f"checking {s}")
                    for s in services
                ]
                # Every service in one SSH command (activities/checks.py), within what is left.
                left = max(1.0, deadline - loop.time())
                results = await run_all(session, checks, left, total=left)
                for service, result in zip(services, results, strict=True):
                    if not result.ok:
                        unhealthy[service] = result.stdout.strip() or result.tail()
                if not unhealthy:
                    return StepResult(detail="all services healthy")
                if step.first_look:
                    return StepResult(ok=False, detail=f"not healthy yet: {', '.join(unhealthy)}")
                if loop.time() >= deadline:
                    states = ", ".join(f"{name}: {state}" for name, state in unhealthy.items())
                    raise StepError(
                        f"services on {step.host.name} not healthy after "
                        f"{step.timeout_seconds:g}s ({states})",
                        kind="HealthCheckFailed",
                    )
                heartbeat()
                await asyncio.sleep(min(POLL_SECONDS, max(0.0, deadline - loop.time())))

    @activity.defn(name=names.CLEAR_MAINTENANCE_MODE)
    async def clear_maintenance_mode(self, step: HostStepInput) -> StepResult:
        async with self._session(step) as session:
            command = render(step.host.commands.maintenance_off, rollout_id=step.job.rollout_id)
            await self._must(session, command, "maintenance off", step.timeout_seconds)
        return StepResult(detail="maintenance mode off")

    def all(self) -> list[object]:
        return [
            self.check_host_preconditions,
            self.run_pre_downtime_scripts,
            self.set_maintenance_mode,
            self.stop_services,
            self.wait_for_workload_drain,
            self.run_pre_update_scripts,
            self.perform_update,
            self.start_services,
            self.run_post_update_scripts,
            self.check_service_health,
            self.clear_maintenance_mode,
            self.reboot_host,
            self.wait_for_host_boot,
            self.inspect_host,
        ]
