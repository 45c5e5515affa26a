"""HostPatchWorkflow: the spec's steps 3-14 for one host, plus maintenance off.

It runs as a child of SystemPatchWorkflow with the id `patch-host-<hostname>`, so Temporal itself
refuses a second rollout that tries to patch the same host at the same time.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError

with workflow.unsafe.imports_passed_through():
    from workflows import names
    from workflows.models import (
        HOST_WORKFLOW_NAME,
        BootWait,
        HostPatchInput,
        HostPatchResult,
        HostStepInput,
        HostStepReport,
        RebootRequest,
        RebootResult,
        RolloutNotice,
        StepResult,
    )

TRANSIENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=3,
)
# A retried upgrade is usually harmless (package managers are idempotent); never more than twice.
# A retry follows a lost worker (heartbeat timeout), not a lost connection: when the SSH connection
# drops mid-update nobody knows what ran, so the host is reported as unknown and the rollout stops.
UPDATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=2,
    non_retryable_error_types=["SshConnectionLost"],
)
# A sealed or restarting Vault usually returns within half a minute.
VAULT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=6,
)
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
# Activities heartbeat every 5 s; a dead worker is noticed within this.
HEARTBEAT = timedelta(seconds=10)
QUICK_STEP = timedelta(minutes=3)
MARGIN = timedelta(seconds=60)


def host_workflow_id(hostname: str) -> str:
    return f"patch-host-{hostname}"


def failure_reason(error: BaseException) -> str:
    """The most specific human-readable message in a chain of Temporal failures."""
    messages: list[str] = []
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, TimeoutError):
            kind = current.type.name.lower().replace("_", "-") if current.type else "timeout"
            messages.append(f"timed out ({kind})")
        elif isinstance(current, ApplicationError | CancelledError) and current.message:
            messages.append(current.message)
        elif not isinstance(current, ActivityError) and str(current):
            messages.append(str(current))
        current = current.__cause__
    return messages[-1] if messages else type(error).__name__


async def send_notice(activity_name: str, notice: RolloutNotice) -> None:
    """Run a notification activity; a lost e-mail is worth a log line, never a failed rollout."""
    try:
        await workflow.execute_activity(
            activity_name,
            notice,
            result_type=bool,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=NOTIFY_RETRY,
        )
    except ActivityError as error:
        workflow.logger.warning("notification %s failed: %s", activity_name, error)


class StepFailed(Exception):
    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


@workflow.defn(name=HOST_WORKFLOW_NAME)
class HostPatchWorkflow:
    def __init__(self) -> None:
        self._step = names.STEP_PRECONDITIONS
        self._in_maintenance: bool | None = False
        self._rebooted = False
        self._reboot_note = ""

    @workflow.query(name="step")
    def step(self) -> str:
        return self._step

    @workflow.query(name="host_progress")
    def host_progress(self) -> HostStepReport:
        hostname = self._job.host.name if hasattr(self, "_job") else ""
        return HostStepReport(
            hostname=hostname, step=self._step, in_maintenance=self._in_maintenance
        )

    @workflow.run
    async def run(self, job: HostPatchInput) -> HostPatchResult:
        started = workflow.now()
        self._job = job
        try:
            await self._patch()
        except StepFailed as failed:
            return HostPatchResult(
                hostname=job.host.name,
                ok=False,
                step=failed.step,
                failure_reason=failed.reason,
                in_maintenance=self._in_maintenance,
                rebooted=self._rebooted,
                started_at=started,
                finished_at=workflow.now(),
            )
        return HostPatchResult(
            hostname=job.host.name,
            ok=True,
            step=names.STEP_DONE,
            in_maintenance=self._in_maintenance,
            rebooted=self._rebooted,
            reboot_note=self._reboot_note,
            started_at=started,
            finished_at=workflow.now(),
        )

    async def _patch(self) -> None:
        job = self._job
        script_timeout = timedelta(seconds=job.script_timeout_seconds)
        await self._ssh_step(names.STEP_PRECONDITIONS, names.CHECK_HOST_PRECONDITIONS)
        await self._notify(names.STEP_START_NOTICE, names.SEND_START_NOTIFICATION)
        if job.pre_downtime_scripts:
            await self._ssh_step(
                names.STEP_PRE_DOWNTIME,
                names.RUN_PRE_DOWNTIME_SCRIPTS,
                scripts=job.pre_downtime_scripts,
                timeout=script_timeout,
            )
        # Until the command has answered we cannot know whether the flag was written.
        self._in_maintenance = None
        await self._ssh_step(names.STEP_MAINTENANCE_ON, names.SET_MAINTENANCE_MODE)
        self._in_maintenance = True
        await self._ssh_step(names.STEP_STOP_SERVICES, names.STOP_SERVICES)
        await self._ssh_step(
            names.STEP_DRAIN,
            names.WAIT_FOR_WORKLOAD_DRAIN,
            timeout=timedelta(seconds=job.drain_timeout_seconds),
        )
        if job.pre_update_scripts:
            await self._ssh_step(
                names.STEP_PRE_UPDATE,
                names.RUN_PRE_UPDATE_SCRIPTS,
                scripts=job.pre_update_scripts,
                timeout=script_timeout,
            )
        await self._ssh_step(
            names.STEP_UPDATE,
            names.PERFORM_UPDATE,
            command=job.update_command,
            timeout=timedelta(seconds=job.update_timeout_seconds),
            retry=UPDATE_RETRY,
        )
        # Rollouts started before reboots existed replay without this step.
        if workflow.patched("reboot-after-update"):
            await self._reboot()
        await self._ssh_step(names.STEP_START_SERVICES, names.START_SERVICES)
        if job.post_update_scripts:
            await self._ssh_step(
                names.STEP_POST_UPDATE,
                names.RUN_POST_UPDATE_SCRIPTS,
                scripts=job.post_update_scripts,
                timeout=script_timeout,
            )
        await self._ssh_step(
            names.STEP_HEALTH,
            names.CHECK_SERVICE_HEALTH,
            timeout=timedelta(seconds=job.health_timeout_seconds),
        )
        await self._ssh_step(names.STEP_MAINTENANCE_OFF, names.CLEAR_MAINTENANCE_MODE)
        self._in_maintenance = False
        await self._notify(names.STEP_SUCCESS_NOTICE, names.SEND_SUCCESS_NOTIFICATION)
        await self._report(names.STEP_DONE)

    async def _report(self, step: str) -> None:
        self._step = step
        # The rollout learns a host's step from the `host_progress` query, not from a signal
        # per step: signals cost both workflows a task each and filled the rollout's history
        # (10 of its 22 events per host). Runs from before this change replay with signals.
        if workflow.patched("progress-by-query"):
            return
        parent = workflow.get_external_workflow_handle(self._job.parent_workflow_id)
        try:
            await parent.signal(
                "host_step",
                HostStepReport(
                    hostname=self._job.host.name, step=step, in_maintenance=self._in_maintenance
                ),
            )
        except Exception as error:  # progress reporting must never fail a host
            workflow.logger.warning("could not report step %s to the rollout: %s", step, error)

    async def _reboot(self) -> None:
        """Reboot per policy, then wait until the host answers with a new boot id."""
        job = self._job
        await self._report(names.STEP_REBOOT)
        try:
            result = await workflow.execute_activity(
                names.REBOOT_HOST,
                RebootRequest(step=self._step_input(QUICK_STEP), policy=job.reboot_policy),
                result_type=RebootResult,
                start_to_close_timeout=QUICK_STEP,
                retry_policy=TRANSIENT_RETRY,
            )
        except ActivityError as error:
            raise StepFailed(names.STEP_REBOOT, failure_reason(error)) from error
        self._reboot_note = result.reason
        if not result.rebooted:
            return
        self._rebooted = True
        timeout = timedelta(seconds=job.reboot_timeout_seconds)
        await self._report(names.STEP_WAIT_FOR_BOOT)
        try:
            await workflow.execute_activity(
                names.WAIT_FOR_HOST_BOOT,
                BootWait(step=self._step_input(timeout), boot_id_before=result.boot_id_before),
                result_type=StepResult,
                start_to_close_timeout=timeout + MARGIN,
                heartbeat_timeout=HEARTBEAT,
                retry_policy=TRANSIENT_RETRY,
            )
        except ActivityError as error:
            raise StepFailed(
                names.STEP_WAIT_FOR_BOOT,
                f"did not come back after the reboot: {failure_reason(error)}",
            ) from error

    def _step_input(
        self,
        timeout: timedelta,
        *,
        scripts: list[str] | None = None,
        command: str | None = None,
    ) -> HostStepInput:
        job = self._job
        return HostStepInput(
            rollout_id=job.rollout_id,
            host=job.host,
            vault_address=job.vault_address,
            vault_token=job.vault_token,
            secret_path_prefix=job.secret_path_prefix,
            service_list=job.service_list,
            scripts=scripts or [],
            command=command,
            timeout_seconds=timeout.total_seconds(),
        )

    async def _ssh_step(
        self,
        step: str,
        activity_name: str,
        *,
        scripts: list[str] | None = None,
        command: str | None = None,
        timeout: timedelta | None = None,
        retry: RetryPolicy = TRANSIENT_RETRY,
    ) -> StepResult:
        await self._report(step)
        step_input = self._step_input(timeout or QUICK_STEP, scripts=scripts, command=command)
        long_running = timeout is not None
        try:
            return await workflow.execute_activity(
                activity_name,
                step_input,
                result_type=StepResult,
                start_to_close_timeout=(timeout + MARGIN) if timeout else QUICK_STEP,
                heartbeat_timeout=HEARTBEAT if long_running else None,
                retry_policy=retry,
            )
        except ActivityError as error:
            raise StepFailed(step, failure_reason(error)) from error
        except asyncio.CancelledError:
            raise StepFailed(step, "cancelled while this step was running") from None

    async def _notify(self, step: str, activity_name: str) -> None:
        await self._report(step)
        job = self._job
        notice = RolloutNotice(
            rollout_id=job.rollout_id,
            requester_email=job.requester_email,
            approver_emails=job.approver_emails,
            hostname=job.host.name,
            cluster=job.host.cluster,
            slack_channel=job.slack_channel,
            slack_thread_ts=job.slack_thread_ts,
        )
        await send_notice(activity_name, notice)
