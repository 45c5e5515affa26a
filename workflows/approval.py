"""Who may decide a rollout: the rules the `approve` and `reject` update validators apply, and a
schedule's standing approval. Pure: the workflow passes in what it knows."""

from __future__ import annotations

from workflows.models import ApprovalDecision, RolloutInput


def check_decision(
    decision: ApprovalDecision,
    rollout: RolloutInput,
    *,
    approved: bool | None,
    decided_by: str | None,
    approving: bool,
) -> None:
    """Raise ValueError with the reason when `decision` is refused: the rollout is already
    decided, the requester approves their own rollout, or the person is not an approver."""
    who = decision.approver.lower()
    if approved is not None:
        verdict = "approved" if approved else "rejected"
        by = f" by {decided_by}" if decided_by else ""
        raise ValueError(f"this rollout was already {verdict}{by}; the decision is final")
    if approving and who == rollout.requester_email:
        raise ValueError(
            f"{who} requested this rollout and cannot approve it; another approver must"
        )
    if who not in rollout.approver_emails:
        raise ValueError(
            f"{who} is not an approver of this rollout (approvers: "
            f"{', '.join(rollout.approver_emails)})"
        )


def check_controller(person: str, rollout: RolloutInput) -> None:
    """Raise ValueError unless `person` may pause, resume, skip or abort the rollout: its
    requester or one of its approvers."""
    who = person.lower()
    if who != rollout.requester_email and who not in rollout.approver_emails:
        raise ValueError(
            f"{who} may not control this rollout: only its requester or an approver "
            f"({', '.join([rollout.requester_email, *rollout.approver_emails])})"
        )


def standing_comment(decision: ApprovalDecision, schedule: str) -> str:
    """How a schedule's standing pre-approval reads in progress and notices."""
    comment = f": {decision.comment}" if decision.comment else ""
    return f"standing pre-approval in schedule {schedule}{comment}"
