"""Who may decide a rollout and when it counts as approved: the rules the `approve` and `reject`
update validators apply, the approvals each cluster needs, and a schedule's standing approval.
Pure: the workflow passes in what it knows.

Under a policy (`PATCHPILOT_POLICY`) the worker answers `ResolveApprovalPolicyActivity` with each
cluster's approvers and `minApprovals` (`ApprovalRules`); a multi-cluster rollout needs every
cluster's approvals. Without one (`--no-policy`, development) the rollout's own `approverEmails`
approve it and one approval is enough, as before policies existed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from workflows.fields import ContractModel, Email
from workflows.models import ApprovalDecision, RolloutInput
from workflows.proof import StandingGrant

NO_APPROVERS = "approverEmails: at least one approver is needed (a dry run needs none)"


class ClusterApprovers(ContractModel):
    """Who may approve a rollout on `cluster` (e-mails; never the requester) and how many
    distinct approvals it needs."""

    cluster: str
    approvers: list[Email] = Field(default_factory=list)
    min_approvals: int = Field(default=1, ge=1)


class ApprovalRulesRequest(ContractModel):
    """Input of `ResolveApprovalPolicyActivity`: the request as the workflow resolved it."""

    rollout_id: str
    requester_email: Email
    hosts_by_cluster: dict[str, int]
    update_command: str
    update_profile: str | None = None
    has_scripts: bool = False
    dry_run: bool = False
    approver_emails: list[Email] = Field(default_factory=list)


class ApprovalRules(ContractModel):
    """Answer of `ResolveApprovalPolicyActivity`. `enforced`: decisions need verified proofs
    (the worker has a policy); `refusal`: why the policy refuses this rollout outright."""

    enforced: bool
    clusters: list[ClusterApprovers] = Field(default_factory=list)
    refusal: str | None = None
    # The policy's `operators` of the clusters: they may control the rollout too.
    operators: list[Email] = Field(default_factory=list)

    def approvers(self) -> list[str]:
        """Everyone who may approve some cluster of the rollout, in first-seen order."""
        seen: dict[str, None] = {}
        for cluster in self.clusters:
            seen.update(dict.fromkeys(cluster.approvers))
        return list(seen)


class DecisionCheck(ContractModel):
    """Input of `VerifyDecisionActivity`: one decision and what its proof must cover."""

    rollout_id: str
    decision: Literal["approve", "reject"]
    approval: ApprovalDecision
    digest: str


class GrantCheck(ContractModel):
    """Input of `VerifyStandingGrantsActivity`: a scheduled run's grants and its digest."""

    rollout_id: str
    digest: str
    grants: list[StandingGrant] = Field(default_factory=list)


def unenforced_rules(rollout: RolloutInput) -> ApprovalRules:
    """Development mode (no policy): the rollout's own approvers, one approval for all."""
    approvers = [email for email in rollout.approver_emails if email != rollout.requester_email]
    return ApprovalRules(
        enforced=False,
        clusters=[
            ClusterApprovers(cluster=name, approvers=approvers, min_approvals=1)
            for name in rollout.target_clusters
        ],
    )


def missing_approvals(rules: ApprovalRules, approved_by: list[str]) -> list[str]:
    """What is still missing, one line per cluster ("cluster-a: 1 more of alice@…, carol@…");
    empty when every cluster has its `minApprovals` distinct approvers in `approved_by`."""
    given = {email.lower() for email in approved_by}
    missing = []
    for cluster in rules.clusters:
        have = len(given & set(cluster.approvers))
        if have < cluster.min_approvals:
            others = [email for email in cluster.approvers if email not in given]
            missing.append(
                f"{cluster.cluster}: {cluster.min_approvals - have} more of {', '.join(others)}"
            )
    if not rules.enforced and given and missing:
        return []  # development mode: any one of the rollout's approvers approves it all
    return missing


def check_decision(
    decision: ApprovalDecision,
    rollout: RolloutInput,
    rules: ApprovalRules | None,
    *,
    approved: bool | None,
    decided_by: str | None,
    approved_by: list[str],
    approving: bool,
    digest: str | None,
) -> None:
    """Raise ValueError with the reason when `decision` is refused: the rollout is not waiting
    for decisions (still resolving, or already decided), the requester approves their own
    rollout, the person is not an approver or already approved, or, under a policy, the decision
    has no proof or its proof covers something other than what runs (`digest`). While `rules`
    are not known yet only the first two are checked. The signature itself is verified by the
    worker (`VerifyDecisionActivity`)."""
    who = decision.approver.lower()
    if approved is not None:
        verdict = "approved" if approved else "rejected"
        by = f" by {decided_by}" if decided_by else ""
        raise ValueError(f"this rollout was already {verdict}{by}; the decision is final")
    if approving and who == rollout.requester_email:
        raise ValueError(
            f"{who} requested this rollout and cannot approve it; another approver must"
        )
    if rules is None or digest is None:
        return  # still resolving: the update waits for the rules, then checks the rest
    approvers = rules.approvers()
    if who not in approvers:
        raise ValueError(
            f"{who} is not an approver of this rollout (approvers: {', '.join(approvers)})"
        )
    if approving and who in approved_by:
        raise ValueError(f"{who} already approved this rollout; another approver must")
    if not rules.enforced:
        return
    if decision.proof is None:
        raise ValueError(
            "the decision carries no proof: under the policy a decision is signed (by Slack, "
            "a personal link, or `patchpilot approve --key`)"
        )
    if decision.proof.digest != digest:
        raise ValueError(
            f"the proof is signed for {decision.proof.digest}, but this rollout runs {digest}: "
            "what was approved is not what would run"
        )


def check_controller(person: str, rollout: RolloutInput, operators: Sequence[str] = ()) -> None:
    """Raise ValueError unless `person` may pause, resume, skip or abort the rollout: its
    requester, one of its approvers, or (under a policy) one of the clusters' `operators`."""
    who = person.lower()
    allowed = [rollout.requester_email, *rollout.approver_emails, *operators]
    if who not in allowed:
        raise ValueError(
            f"{who} may not control this rollout: only its requester, an approver or an "
            f"operator ({', '.join(dict.fromkeys(allowed))})"
        )


def standing_comment(decision: ApprovalDecision, schedule: str) -> str:
    """How a schedule's standing pre-approval reads in progress and notices."""
    comment = f": {decision.comment}" if decision.comment else ""
    return f"standing pre-approval in schedule {schedule}{comment}"
