"""The decision half of the rollout: the worker's approval rules for it, the `approve` and
`reject` updates, a schedule's standing approval, and the approvals carried into a continued run.
Kept apart so `system_patch.py` reads as the rollout itself; the pure rules are in
`workflows.approval`, the checks with keys and the policy run on the worker
(`activities/trust.py`), which checks them again before any host step connects.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import names
    from workflows.approval import (
        ApprovalRules,
        ApprovalRulesRequest,
        DecisionCheck,
        GrantCheck,
        check_decision,
        missing_approvals,
        standing_comment,
    )
    from workflows.models import ApprovalDecision, HostJob, Phase, RolloutInput
    from workflows.policies import failure_reason
    from workflows.proof import StandingGrant, rollout_digest
    from workflows.state import RolloutState

# Set by the server on every run a Temporal Schedule starts.
SCHEDULED_BY = SearchAttributeKey.for_keyword("TemporalScheduledById")
POLICY_CHECK = timedelta(seconds=30)
POLICY_RETRY = RetryPolicy(
    maximum_attempts=5, non_retryable_error_types=["DecisionRefused", "InventoryError"]
)


class DecisionUpdates:
    """The decision updates; the workflow sets `_rollout`, `_state`, `_job`, `_rules` (None
    until resolved) and `_digest`."""

    _rollout: RolloutInput
    _state: RolloutState
    _job: HostJob
    _rules: ApprovalRules | None
    _digest: str | None

    async def _resolve_rules(self) -> str | None:
        """Ask the worker's policy who must approve what was resolved; the refusal, if any.
        Sets the digest of what runs, the approvers (the policy's, narrowed by the request's)
        and what is missing, so progress and the approval request show them."""
        rollout, state = self._rollout, self._state
        request = ApprovalRulesRequest(
            rollout_id=state.progress.rollout_id,
            requester_email=rollout.requester_email,
            hosts_by_cluster={name: len(hosts) for name, hosts in state.targets.items()},
            update_command=rollout.update_command,
            update_profile=rollout.update_profile,
            has_scripts=bool(
                rollout.pre_downtime_scripts
                or rollout.pre_update_scripts
                or rollout.post_update_scripts
            ),
            dry_run=rollout.dry_run,
            approver_emails=rollout.approver_emails,
        )
        rules = await workflow.execute_local_activity(
            names.RESOLVE_APPROVAL_POLICY,
            request,
            result_type=ApprovalRules,
            start_to_close_timeout=POLICY_CHECK,
            retry_policy=POLICY_RETRY,
        )
        if rules.refusal:
            return rules.refusal
        self._rules = rules
        self._digest = rollout_digest(rollout, state.targets)
        state.progress.digest = self._digest
        state.progress.approver_emails = rules.approvers()
        state.progress.approvals_missing = missing_approvals(rules, state.progress.approved_by)
        # The approval request and the controls go to the approvers the rules name.
        self._rollout = rollout.model_copy(update={"approver_emails": rules.approvers()})
        return None

    async def _standing_approval(self) -> bool:
        """A schedule's standing approval, for runs a schedule started: under a policy the
        approvers' signed grants for this digest; without one, `preApprovedBy`."""
        rollout, state, rules = self._rollout, self._state, self._rules
        schedule = workflow.info().typed_search_attributes.get(SCHEDULED_BY)
        if rules is None or not (rollout.standing_grants or rollout.pre_approved_by):
            return False
        if not schedule:
            workflow.logger.warning("standing approval ignored: a schedule did not start this run")
            return False
        if not rules.enforced:
            return self._pre_approved(schedule)
        valid = await self._verified_grants(rollout.standing_grants)
        missing = missing_approvals(rules, valid)
        if missing:
            state.progress.message = (
                "the schedule's standing grants do not cover this run (what runs changed, or "
                f"a grant expired): asking for approval ({'; '.join(missing)})"
            )
            return False
        state.grants = [g for g in rollout.standing_grants if g.approver.lower() in valid]
        state.progress.approved_by = valid
        state.decide(", ".join(valid), "", approved=True)
        state.progress.decision_comment = f"standing grants in schedule {schedule}"
        return True

    async def _verified_grants(self, grants: list[StandingGrant]) -> list[str]:
        """The approvers whose grants the worker verified for this run and digest."""
        return await workflow.execute_local_activity(
            names.VERIFY_STANDING_GRANTS,
            GrantCheck(
                rollout_id=self._state.progress.rollout_id, digest=self._digest or "", grants=grants
            ),
            result_type=list[str],
            start_to_close_timeout=POLICY_CHECK,
            retry_policy=POLICY_RETRY,
        )

    def _pre_approved(self, schedule: str) -> bool:
        decision = self._rollout.pre_approved_by
        assert decision is not None
        try:
            self._check_decision(decision, approving=True)
        except ValueError as refused:
            workflow.logger.warning("standing pre-approval refused: %s", refused)
            return False
        self._state.decide(decision.approver, decision.comment, approved=True)
        self._state.progress.decision_comment = standing_comment(decision, schedule)
        return True

    async def _recheck_carried(self) -> str | None:
        """A continued run verifies the approvals it was handed, as the first run did; the
        problem, if any (a forged `continued` input carries no valid approvals)."""
        rules, state = self._rules, self._state
        if rules is None or not rules.enforced:
            return None
        approved: list[str] = []
        for decision in state.approvals:
            try:
                await self._verify(decision, "approve")
            except ApplicationError as refused:
                return f"a carried approval does not verify: {refused.message}"
            approved.append(decision.approver.lower())
        if state.grants:
            approved += await self._verified_grants(state.grants)
        missing = missing_approvals(rules, approved)
        return f"the carried approvals are not enough: {'; '.join(missing)}" if missing else None

    # ---- the updates -------------------------------------------------------------------------

    async def _rules_known(self) -> None:
        # A decision that comes while the hosts are still being resolved waits for the rules.
        progress = self._state.progress
        await workflow.wait_condition(
            lambda: self._rules is not None or progress.phase != Phase.RESOLVING
        )
        if self._rules is None:
            raise ApplicationError(
                f"this rollout never asked for a decision ({progress.phase.value}: "
                f"{progress.message or 'no reason given'})",
                type="DecisionRefused",
                non_retryable=True,
            )

    @workflow.update(name="approve")
    async def approve(self, decision: ApprovalDecision) -> str:
        await self._rules_known()
        self._recheck(decision, approving=True)
        await self._verify(decision, "approve")
        self._recheck(decision, approving=True)
        assert self._rules is not None
        approved_by = [*self._state.progress.approved_by, decision.approver.lower()]
        missing = missing_approvals(self._rules, approved_by)
        self._state.add_approval(decision, missing)
        if missing:
            return f"approved by {decision.approver}; still needed: {'; '.join(missing)}"
        return f"approved by {decision.approver}"

    @approve.validator
    def _validate_approve(self, decision: ApprovalDecision) -> None:
        self._check_decision(decision, approving=True)

    @workflow.update(name="reject")
    async def reject(self, decision: ApprovalDecision) -> str:
        await self._rules_known()
        self._recheck(decision, approving=False)
        await self._verify(decision, "reject")
        self._recheck(decision, approving=False)
        self._state.decide(decision.approver, decision.comment, approved=False)
        return f"rejected by {decision.approver}"

    @reject.validator
    def _validate_reject(self, decision: ApprovalDecision) -> None:
        self._check_decision(decision, approving=False)

    def _check_decision(self, decision: ApprovalDecision, *, approving: bool) -> None:
        state = self._state
        check_decision(
            decision,
            self._rollout,
            self._rules,
            approved=state.approved,
            decided_by=state.progress.decided_by,
            approved_by=state.progress.approved_by,
            approving=approving,
            digest=self._digest,
        )

    def _recheck(self, decision: ApprovalDecision, *, approving: bool) -> None:
        # Another decision may have come while the signature was checked; an exception other
        # than ApplicationError in a handler would fail the workflow task, not the update.
        try:
            self._check_decision(decision, approving=approving)
        except ValueError as refused:
            raise ApplicationError(
                str(refused), type="DecisionRefused", non_retryable=True
            ) from None

    async def _verify(self, decision: ApprovalDecision, verdict: str) -> None:
        """The worker checks the decision's signature with its own policy and keys; a refusal
        fails the update (the decision is not recorded) with the worker's reason."""
        if self._rules is None or not self._rules.enforced:
            return
        check = DecisionCheck(
            rollout_id=self._state.progress.rollout_id,
            decision="approve" if verdict == "approve" else "reject",
            approval=decision,
            digest=self._digest or "",
        )
        try:
            await workflow.execute_local_activity(
                names.VERIFY_DECISION,
                check,
                result_type=str,
                start_to_close_timeout=POLICY_CHECK,
                retry_policy=POLICY_RETRY,
            )
        except ActivityError as error:
            raise ApplicationError(
                failure_reason(error), type="DecisionRefused", non_retryable=True
            ) from None
