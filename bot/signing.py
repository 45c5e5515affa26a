"""Signing decisions where they are made (README "Trust model"): the Slack bot for a click it
verified, the approval server for a personal link it verified, a person with their own key
(`patchpilot approve --key`). The digest signed is computed here, from the rollout's own input and
this process's own inventory, never taken from the workflow: what is signed is what was shown.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from activities.inventory import InventoryActivities, InventoryError
from activities.proof import ProofError, sign_statement
from activities.trust import resolve_targets
from bot.rollouts import Problem, RolloutError, Rollouts
from workflows.models import ApprovalDecision, RolloutInput
from workflows.proof import DecisionProof, DecisionStatement, StandingGrant, rollout_digest


@dataclass(frozen=True)
class Signer:
    """A private key (OpenSSH ed25519, a file or the key's text) and the name the policy knows
    its public key by: a `frontends` name, or a person's name for their own key."""

    key: Path | str
    name: str

    def proof(
        self,
        rollout_id: str,
        decision: Literal["approve", "reject"],
        approver: str,
        digest: str,
        at: datetime | None = None,
    ) -> DecisionProof:
        """The signed proof of `approver`'s `decision` on `rollout_id` for `digest`. Raises
        ProofError when the key cannot be used."""
        moment = (at or datetime.now(UTC)).replace(microsecond=0)
        proof = DecisionProof(signer=self.name, decided_at=moment, digest=digest, signature="-")
        statement = DecisionStatement.of(rollout_id, decision, approver, proof)
        return proof.model_copy(update={"signature": sign_statement(statement, self.key)})

    def grant(
        self, schedule_id: str, approver: str, digest: str, expires_at: datetime, comment: str = ""
    ) -> StandingGrant:
        """A standing grant for the runs of `schedule_id` (see `StandingGrant`); a person signs
        it with their own key. Raises ProofError when the key cannot be used."""
        grant = StandingGrant(
            approver=approver.lower(),
            schedule_id=schedule_id,
            digest=digest,
            expires_at=expires_at.replace(microsecond=0),
            signer=self.name,
            signature="-",
            comment=comment,
        )
        signature = sign_statement(grant.statement(), self.key)
        return grant.model_copy(update={"signature": signature})


def digest_here(rollout: RolloutInput, inventory: Path | str | None) -> str:
    """The digest of what `rollout` runs, with hosts from this process's `inventory`. Raises
    RolloutError (REFUSED) without an inventory or when it cannot be read."""
    if inventory is None:
        raise RolloutError(
            "cannot sign: PATCHPILOT_INVENTORY is not set here, and the digest a decision signs "
            "is computed from this inventory, not taken from the workflow",
            Problem.REFUSED,
        )
    try:
        targets = resolve_targets(
            InventoryActivities(inventory), rollout.target_clusters, rollout.host_pattern
        )
    except InventoryError as error:
        raise RolloutError(f"cannot sign: {error}", Problem.REFUSED) from None
    return rollout_digest(rollout, targets)


async def signed_decision(
    rollouts: Rollouts,
    rollout_id: str,
    approver: str,
    comment: str,
    *,
    approve: bool,
    signer: Signer,
    inventory: Path | str | None,
) -> tuple[ApprovalDecision, RolloutInput, str]:
    """`approver`'s decision on `rollout_id`, signed by `signer` for the digest computed here;
    also the rollout's input and that digest (for showing). Raises RolloutError when the
    workflow reports another digest (the inventories differ, or someone tampered with the
    rollout) or the key cannot be used."""
    rollout = await rollouts.request(rollout_id)
    # Off the event loop: the inventory may be read by Ansible (a subprocess) the first time.
    digest = await asyncio.to_thread(digest_here, rollout, inventory)
    reported = (await rollouts.progress(rollout_id, steps=False)).digest
    if reported is not None and reported != digest:
        raise RolloutError(
            f"refusing to sign: the rollout reports {reported}, but what it runs with this "
            f"inventory is {digest} (the inventories differ, or the rollout was tampered with)",
            Problem.REFUSED,
        )
    try:
        proof = signer.proof(rollout_id, "approve" if approve else "reject", approver, digest)
    except ProofError as error:
        raise RolloutError(str(error), Problem.REFUSED) from None
    decision = ApprovalDecision(approver=approver, comment=comment, proof=proof)
    return decision, rollout, digest
