"""HostPatchWorkflow: the spec's steps 3-14 for one host, plus maintenance off.

It runs as a child of SystemPatchWorkflow with the id `patch-host-<hostname>`, so Temporal itself
refuses a second rollout that tries to patch the same host at the same time. The rollout learns a
host's step from this workflow's `host_progress` query (no signal per step: that would cost both
workflows a task and fill the rollout's history).

Short steps (preconditions, maintenance on and off, stopping and starting services, the reboot
decision) run as local activities: in the worker that runs the workflow task, their results
recorded as markers when the task completes, with no round trip through the server each. The long
ones (scripts, drain wait, update, boot wait, health wait) stay activities with heartbeats; the
two waits first look once as local activities (`_wait_step`), so a host that is ready costs no
activity for them. The reboot decision needs no step of its own when the update's command
brought back the host's boot id and reboot-required answer and no reboot is due
(workflows/reboots.py). The start notice goes out without the host waiting for it, and a notice no
channel sends is not scheduled (`HostNotices`). A ready host with the default maintenance
commands costs one activity (the update) plus its notices, and two workflow tasks plus one for
each notice it waits for.

The preconditions are local only where PatchPilot can tell its own maintenance flag
(`HostCommands.knows_own_flag`: the default check and setter, the flag holding the rollout id).
A local activity runs again when its workflow task is lost (its worker died, or evicted it from
its cache) before the task completes, and so do the steps after it in that task. A workflow
whose checks may have run in a lost task knows it (its history is longer than a first task's
three events, or the checks are being replayed without their marker): its preconditions then
take this rollout's flag for the one that task set (`resumed`), find the host perhaps with its
services stopped, and go on from there (a note says so) instead of refusing it "already in
maintenance"; until they have answered, the host's maintenance is reported unknown. Elsewhere
this rollout's flag is refused like anyone's: it can only be another inventory name of the same
machine, or a rollout id used again. (A first task that failed for another reason, or a cancel
that came before it, also lengthens the history: such a host then takes this rollout's flag for
its own too.) A host with its own maintenance commands keeps them as an activity, whose result is
in the history before anything changes the host.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import names
    from workflows.local_activity import run_local
    from workflows.models import (
        HOST_WORKFLOW_NAME,
        BootWait,
        HostPatchInput,
        HostPatchResult,
        HostStepInput,
        HostStepReport,
        RebootRequest,
        RebootResult,
        StepResult,
    )
    from workflows.notices import host_notice, notice_sent, send_notice, start_notice
    from workflows.packages import PackageReport
    from workflows.policies import (
        HEARTBEAT,
        MARGIN,
        ONE_TRY,
        QUICK_STEP,
        TRANSIENT_RETRY,
        UPDATE_RETRY,
        failure_reason,
    )
    from workflows.reboots import RebootLook, reboot_decision
    from workflows.targets import RESUMED_NOTE


# How long a wait step's first look may take before the heartbeating activity takes over.
FIRST_LOOK = timedelta(seconds=15)


class StepFailed(Exception):
    def __init__(self, step: str, reason: str, packages: PackageReport | None = None) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason
        self.packages = packages


def _report_of(error: ActivityError) -> PackageReport | None:
    """The package report a failed update left (its ApplicationError's first detail,
    activities/host_steps.py), so a host whose update failed still has its report."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.details:
        try:
            return PackageReport.model_validate(cause.details[0])
        except ValueError:
            return None
    return None


@workflow.defn(name=HOST_WORKFLOW_NAME)
class HostPatchWorkflow:
    @workflow.init
    def __init__(self, patch: HostPatchInput) -> None:
        self._job = patch.job
        self._host = patch.host
        self._step = names.STEP_PRECONDITIONS
        self._in_maintenance: bool | None = False
        self._rebooted = False
        self._reboot_note = ""
        self._packages: PackageReport | None = None
        self._notes: list[str] = []  # the preconditions' (held packages, …), for the summary
        self._start_notice: workflow.ActivityHandle[bool] | None = None
        # The shape since engine v5 (issue 16): the start notice is not waited for, and the drain
        # and health waits first look once as local activities. A host workflow started by an
        # older rollout (its input without the flag) keeps the old shape, so histories recorded
        # before replay and hosts in flight during an upgrade go on. Chosen over
        # workflow.patched, whose marker also upserts the TemporalChangeVersion search
        # attribute: a visibility write per host.
        self._first_looks = patch.first_looks
        self._notices = patch.notices
        # Since engine v8, in the same way (decided by the rollout, for this host's commands):
        # older histories checked with an activity.
        self._local_preconditions = patch.local_preconditions

    @workflow.query(name="host_progress")
    def host_progress(self) -> HostStepReport:
        return HostStepReport(
            hostname=self._host.name, step=self._step, in_maintenance=self._in_maintenance
        )

    @workflow.run
    async def run(self, patch: HostPatchInput) -> HostPatchResult:
        started = workflow.now()
        failed: StepFailed | None = None
        try:
            await self._patch()
        except StepFailed as error:
            failed = error
        await self._start_notice_sent()
        return HostPatchResult(
            hostname=self._host.name,
            ok=failed is None,
            step=failed.step if failed else names.STEP_DONE,
            failure_reason=failed.reason if failed else None,
            in_maintenance=self._in_maintenance,
            rebooted=self._rebooted,
            reboot_note="" if failed else self._reboot_note,
            packages=self._packages,
            notes=self._notes,
            started_at=started,
            finished_at=workflow.now(),
        )

    async def _patch(self) -> None:
        job = self._job
        # The checks may have run before in a task that was lost, and with it the maintenance it
        # set: when this is not the workflow's first task (started, task scheduled, task
        # started), or when it is replayed (a first task that ran past ~80 % of its timeout with
        # the checks still running is completed early by the SDK, without their marker; replayed
        # with their marker, the checks do not run again and this changes nothing). The checks
        # may then take this rollout's flag for their own; until they answer, whether the host
        # is in maintenance is not known.
        resumed = self._local_preconditions and (
            workflow.info().get_current_history_length() > 3 or workflow.unsafe.is_replaying()
        )
        if resumed:
            self._in_maintenance = None
        # sudo probe, maintenance check, health check, one check per service (and with
        # repairInterruptedDpkg, the repair and the audit after it).
        checked = await self._ssh_step(
            names.STEP_PRECONDITIONS,
            names.CHECK_HOST_PRECONDITIONS,
            commands=3 + len(job.service_list) + (2 if job.repair_interrupted_dpkg else 0),
            local=self._local_preconditions,
            resumed=resumed,
        )
        self._notes = list(checked.notes)
        # The checks answered: the host was in this workflow's maintenance, or in none.
        self._in_maintenance = RESUMED_NOTE in checked.notes
        if not self._notices.start:
            pass  # no channel of the worker sends it (workflows/notices.plan_host_notices)
        elif self._first_looks:
            # Sent while the host goes on: Slack's pacing may hold it, the host need not wait.
            notice = host_notice(self._job, self._host)
            self._start_notice = start_notice(names.SEND_START_NOTIFICATION, notice)
        else:
            await self._notify(names.STEP_START_NOTICE, names.SEND_START_NOTIFICATION)
        await self._scripts(
            names.STEP_PRE_DOWNTIME, names.RUN_PRE_DOWNTIME_SCRIPTS, job.pre_downtime_scripts
        )
        # Until the command has answered we cannot know whether the flag was written.
        self._in_maintenance = None
        await self._ssh_step(
            names.STEP_MAINTENANCE_ON,
            names.SET_MAINTENANCE_MODE,
            timeout=job.maintenance_timeout,
            local=True,
        )
        self._in_maintenance = True
        services = len(job.service_list)
        await self._ssh_step(
            names.STEP_STOP_SERVICES,
            names.STOP_SERVICES,
            timeout=job.service_stop_timeout,
            commands=services,
            local=True,
        )
        await self._wait_step(names.STEP_DRAIN, names.WAIT_FOR_WORKLOAD_DRAIN, job.drain_timeout)
        await self._scripts(
            names.STEP_PRE_UPDATE, names.RUN_PRE_UPDATE_SCRIPTS, job.pre_update_scripts
        )
        try:
            updated = await self._ssh_step(
                names.STEP_UPDATE,
                names.PERFORM_UPDATE,
                command=job.update_command,
                timeout=job.update_timeout,
                retry=UPDATE_RETRY,
            )
        except StepFailed as failed:
            self._packages = failed.packages  # what the failed update left (half-configured…)
            raise
        self._packages = updated.packages
        await self._reboot(updated.reboot_look)
        await self._ssh_step(
            names.STEP_START_SERVICES,
            names.START_SERVICES,
            timeout=job.service_start_timeout,
            commands=services,
            local=True,
        )
        await self._scripts(
            names.STEP_POST_UPDATE, names.RUN_POST_UPDATE_SCRIPTS, job.post_update_scripts
        )
        await self._wait_step(names.STEP_HEALTH, names.CHECK_SERVICE_HEALTH, job.health_timeout)
        await self._ssh_step(
            names.STEP_MAINTENANCE_OFF,
            names.CLEAR_MAINTENANCE_MODE,
            timeout=job.maintenance_timeout,
            local=True,
        )
        self._in_maintenance = False
        await self._start_notice_sent()  # the thread says "started" before "patched"
        if self._notices.success:
            await self._notify(names.STEP_SUCCESS_NOTICE, names.SEND_SUCCESS_NOTIFICATION)
        self._step = names.STEP_DONE

    async def _reboot(self, look: RebootLook | None) -> None:
        """Reboot per policy, then wait until the host answers with a new boot id. When the
        update's command brought the host's answer back (`look`) and no reboot is due, that is
        the decision, with no step on the host; a reboot is always decided by the activity,
        which reads the boot id it waits to see change right before it reboots."""
        job = self._job
        self._step = names.STEP_REBOOT
        if look is not None:
            reboot, reason = reboot_decision(job.reboot_policy, look.reboot_required)
            if not reboot:
                self._reboot_note = reason
                return
        try:
            # Local: run again after a lost worker, it finds the host either not yet rebooted
            # (and decides again) or back with a new boot id and nothing pending.
            result = await run_local(
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
        self._step = names.STEP_WAIT_FOR_BOOT
        try:
            await workflow.execute_activity(
                names.WAIT_FOR_HOST_BOOT,
                BootWait(
                    step=self._step_input(job.reboot_timeout),
                    boot_id_before=result.boot_id_before,
                ),
                result_type=StepResult,
                start_to_close_timeout=job.reboot_timeout + MARGIN,
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
        return HostStepInput(
            job=self._job,
            host=self._host,
            scripts=scripts or [],
            command=command,
            timeout_seconds=timeout.total_seconds(),
        )

    async def _scripts(self, step: str, activity_name: str, scripts: list[str]) -> None:
        """An optional step: it runs only when the rollout lists scripts for it."""
        if scripts:
            timeout = self._job.script_timeout
            await self._ssh_step(
                step, activity_name, scripts=scripts, timeout=timeout, commands=len(scripts)
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
        commands: int = 1,
        local: bool = False,
        resumed: bool = False,
    ) -> StepResult:
        """One activity on the host, with heartbeats.

        `timeout` (default QUICK_STEP) limits each of the step's `commands` on the host (the
        activity kills one that overruns and reports it, non-retryable); Temporal's own limit is
        all of them plus MARGIN, so the activity's precise report comes first.

        `local`: a local activity with the same limit and retry policy. It needs no heartbeat: a
        lost worker shows as the workflow task's timeout, and the next worker runs it again.
        `resumed`: the step's `HostStepInput.resumed` (the preconditions' own-flag check).
        """
        self._step = step
        limit = timeout or QUICK_STEP
        step_input = self._step_input(limit, scripts=scripts, command=command)
        if resumed:
            step_input = step_input.model_copy(update={"resumed": True})
        try:
            if local:
                return await run_local(
                    activity_name,
                    step_input,
                    result_type=StepResult,
                    start_to_close_timeout=limit * max(1, commands) + MARGIN,
                    retry_policy=retry,
                )
            return await workflow.execute_activity(
                activity_name,
                step_input,
                result_type=StepResult,
                start_to_close_timeout=limit * max(1, commands) + MARGIN,
                # Every host activity heartbeats from the start (activities/host_steps.py), so a
                # lost worker costs HEARTBEAT, not the step's whole limit (16 min for the
                # preconditions, found by bench/soak.py).
                heartbeat_timeout=HEARTBEAT,
                retry_policy=retry,
            )
        except ActivityError as error:
            raise StepFailed(step, failure_reason(error), _report_of(error)) from error
        except asyncio.CancelledError:
            raise StepFailed(step, "cancelled while this step was running") from None

    async def _wait_step(self, step: str, activity_name: str, timeout: timedelta) -> None:
        """A wait (drain, health) for up to `timeout`. With first looks it looks once as
        a local activity, which on a ready host ends the step with no activity and no workflow
        task of its own; only a host not ready yet (or a look that failed: the activity then
        retries and says why) gets the heartbeating activity that waits."""
        if self._first_looks:
            self._step = step
            look = min(timeout, FIRST_LOOK)
            try:
                seen = await run_local(
                    activity_name,
                    self._step_input(look).model_copy(update={"first_look": True}),
                    result_type=StepResult,
                    start_to_close_timeout=look + FIRST_LOOK,
                    retry_policy=ONE_TRY,
                )
                if seen.ok:
                    return
            except ActivityError:
                pass
            except asyncio.CancelledError:
                raise StepFailed(step, "cancelled while this step was running") from None
        await self._ssh_step(step, activity_name, timeout=timeout)

    async def _start_notice_sent(self) -> None:
        """Wait for the start notice if one is on its way (a failure is a log line)."""
        if self._start_notice is not None:
            handle, self._start_notice = self._start_notice, None
            # Cancelled: the host's own result says so.
            with contextlib.suppress(asyncio.CancelledError):
                await notice_sent(names.SEND_START_NOTIFICATION, handle)

    async def _notify(self, step: str, activity_name: str) -> None:
        self._step = step
        # A cancel while telling is not the host's failure: the notice is all that was left.
        with contextlib.suppress(asyncio.CancelledError):
            await send_notice(activity_name, host_notice(self._job, self._host))
