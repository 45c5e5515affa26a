"""Control of a running rollout: the `pause`, `resume`, `skip` and `abort` updates.

Each is a Temporal update whose validator refuses, with the reason, anyone but the requester or an
approver (`approval.check_controller`) and what makes no sense now (resume when not paused, skip a
host that already started, anything after the end). What was done is kept in the progress
(`pausedBy`, `controls`) and so in the history, the continue-as-new carry and the summary.
`SystemPatchWorkflow` inherits them; its rollout loop reads `paused` and `aborted_by`.
"""

from __future__ import annotations

import asyncio

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.approval import ApprovalRules, check_controller
    from workflows.models import HostState, Phase, RolloutControl, RolloutInput
    from workflows.state import RolloutState

# Phases in which a rollout can still be controlled.
LIVE = (Phase.RESOLVING, Phase.AWAITING_APPROVAL, Phase.PREFLIGHT, Phase.PATCHING)


class RolloutAborted(Exception):
    """Raised inside the workflow when the `abort` update ended the rollout."""


class RolloutControls:
    """The control updates and what the rollout loop asks of them; the workflow sets `_rollout`,
    `_state`, `aborted_by`, `_cancel_requested` and `_stop_reason`."""

    _rollout: RolloutInput
    _state: RolloutState
    _rules: ApprovalRules | None
    _cancel_requested: bool
    _stop_reason: str | None
    aborted_by: str | None = None

    @property
    def paused(self) -> bool:
        """True while a pause holds: no new host starts."""
        return self._state.progress.paused_by is not None

    def _ending_or_paused(self) -> bool:
        return self.aborted_by is not None or self.paused

    def held(self) -> bool:
        """Paused, and nothing (a cancel, an abort, a stop) ends the rollout instead."""
        ending = self._cancel_requested or self.aborted_by or self._stop_reason is not None
        return self.paused and not ending

    async def hold(self) -> None:
        """Wait while paused (no timer: a pause holds until `resume`, `abort` or a cancel)."""
        try:
            await workflow.wait_condition(lambda: not self.held())
        except asyncio.CancelledError:
            self._cancel_requested = True

    def raise_if_aborted(self) -> None:
        """After an `abort`: every host not started is skipped, and the rollout ends."""
        if self.aborted_by is not None:
            self._state.skip_pending(f"not started: aborted by {self.aborted_by}")
            raise RolloutAborted(
                f"aborted by {self.aborted_by}; hosts in progress finished, no further host "
                "was started"
            )

    def _record(self, line: str) -> str:
        stamp = workflow.now().strftime("%Y-%m-%d %H:%M:%S UTC")
        self._state.progress.controls.append(f"{stamp} {line}")
        return line

    def _check(self, control: RolloutControl) -> None:
        operators = self._rules.operators if self._rules else []
        check_controller(control.person, self._rollout, operators)
        if self._state.progress.phase not in LIVE or self.aborted_by is not None:
            raise ValueError(f"this rollout has ended ({self._state.progress.phase.value})")

    @workflow.update(name="pause")
    def pause(self, control: RolloutControl) -> str:
        """Hosts in flight finish every step; no new host starts until `resume`."""
        progress = self._state.progress
        progress.paused_by, progress.paused_since = control.person, workflow.now()
        return self._record(f"paused by {control.person}")

    @pause.validator
    def _validate_pause(self, control: RolloutControl) -> None:
        self._check(control)
        if self.paused:
            raise ValueError(f"already paused by {self._state.progress.paused_by}")

    def _pause_lasted(self) -> str:
        """While paused, what the record of its end adds: ` (paused by <who> for <N> s)`, N in
        whole seconds of workflow time; else the empty string."""
        progress = self._state.progress
        if progress.paused_by is None or progress.paused_since is None:
            return ""
        seconds = int((workflow.now() - progress.paused_since).total_seconds())
        return f" (paused by {progress.paused_by} for {seconds} s)"

    @workflow.update(name="resume")
    def resume(self, control: RolloutControl) -> str:
        """New hosts start again; the record says who paused and for how long."""
        progress = self._state.progress
        line = self._record(f"resumed by {control.person}{self._pause_lasted()}")
        progress.paused_by, progress.paused_since = None, None
        return line

    @resume.validator
    def _validate_resume(self, control: RolloutControl) -> None:
        self._check(control)
        if not self.paused:
            raise ValueError("the rollout is not paused")

    @workflow.update(name="skip")
    def skip(self, control: RolloutControl) -> str:
        """A pending host is never started; the summary names it with who and why."""
        host = self._state.host(str(control.host))
        host.state = HostState.SKIPPED
        why = f': "{control.reason}"' if control.reason else ""
        host.note = f"skipped by {control.person}{why}"
        return self._record(f"skipped host {control.host} by {control.person}{why}")

    @skip.validator
    def _validate_skip(self, control: RolloutControl) -> None:
        self._check(control)
        if not control.host:
            raise ValueError("skip needs the host to skip")
        try:
            host = self._state.host(control.host)
        except KeyError:
            raise ValueError(f"{control.host} is not a host of this rollout") from None
        if host.state != HostState.PENDING:
            raise ValueError(
                f"{control.host} is {host.state.value}; only a pending host can be skipped"
            )

    @workflow.update(name="abort")
    def abort(self, control: RolloutControl) -> str:
        """As a cancel: hosts in flight finish their steps, every other host is skipped."""
        self.aborted_by = control.person
        return self._record(f"aborted by {control.person}{self._pause_lasted()}")

    @abort.validator
    def _validate_abort(self, control: RolloutControl) -> None:
        self._check(control)
