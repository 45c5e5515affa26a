"""The `approve` and `reject` updates of SystemPatchWorkflow and a schedule's standing approval:
the decision half of the rollout, kept apart so `system_patch.py` reads as the rollout itself.
The rules the validators apply are the pure functions of `workflows.approval`."""

from __future__ import annotations

from temporalio import workflow
from temporalio.common import SearchAttributeKey

with workflow.unsafe.imports_passed_through():
    from workflows.approval import check_decision, standing_comment
    from workflows.models import ApprovalDecision, RolloutInput
    from workflows.state import RolloutState

# Set by the server on every run a Temporal Schedule starts.
SCHEDULED_BY = SearchAttributeKey.for_keyword("TemporalScheduledById")


class DecisionUpdates:
    """The decision updates; the workflow sets `_rollout` and `_state`."""

    _rollout: RolloutInput
    _state: RolloutState

    def _standing_approval(self) -> bool:
        """A schedule's pre-approval counts only for runs that schedule started."""
        decision = self._rollout.pre_approved_by
        if decision is None:
            return False
        schedule = workflow.info().typed_search_attributes.get(SCHEDULED_BY)
        if not schedule:
            workflow.logger.warning("preApprovedBy ignored: this run was not started by a schedule")
            return False
        try:
            self._validate_decision(decision, approving=True)
        except ValueError as refused:
            workflow.logger.warning("standing pre-approval refused: %s", refused)
            return False
        self._state.decide(decision.approver, decision.comment, approved=True)
        self._state.progress.decision_comment = standing_comment(decision, schedule)
        return True

    @workflow.update(name="approve")
    def approve(self, decision: ApprovalDecision) -> str:
        self._state.decide(decision.approver, decision.comment, approved=True)
        return f"approved by {decision.approver}"

    @approve.validator
    def _validate_approve(self, decision: ApprovalDecision) -> None:
        self._validate_decision(decision, approving=True)

    @workflow.update(name="reject")
    def reject(self, decision: ApprovalDecision) -> str:
        self._state.decide(decision.approver, decision.comment, approved=False)
        return f"rejected by {decision.approver}"

    @reject.validator
    def _validate_reject(self, decision: ApprovalDecision) -> None:
        self._validate_decision(decision, approving=False)

    def _validate_decision(self, decision: ApprovalDecision, *, approving: bool) -> None:
        state = self._state
        check_decision(
            decision,
            self._rollout,
            approved=state.approved,
            decided_by=state.progress.decided_by,
            approving=approving,
        )
