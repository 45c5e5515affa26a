"""What an approval is bound to: a digest of exactly what will run, and the statement a decision
signs. Pure (hashing and canonical JSON only), so the workflow, the front ends that sign and the
activities that verify all compute the same bytes.

The digest covers every input that changes what runs on a host, and who asked: the requester,
the clusters in order, each resolved host (name, address, port, login user and its command
overrides, which run too), the update command, every script, the services, the reboot policy,
the Vault path prefix the keys come from, and `repairInterruptedDpkg` when set (it runs `dpkg
--configure -a` on hosts, workflows/repair.py; left out when off, so that the digests of rollouts
and standing grants signed before it existed stay the same). Anything else (timeouts, chat
thread, concurrency) changes when things run, not what.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field

from workflows.fields import ContractModel, Email
from workflows.targets import HostTarget

# ssh-keygen -Y's namespace for PatchPilot decisions: a signature made for anything else (a git
# commit, a file) does not verify as a decision, and the reverse (OpenSSH PROTOCOL.sshsig).
NAMESPACE = "patchpilot-decision@patchpilot"
STATEMENT_HEADER = b"patchpilot decision v1\n"
GRANT_HEADER = b"patchpilot standing grant v1\n"
Decision = Literal["approve", "reject"]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class WhatRuns(Protocol):
    """The fields of a rollout the digest covers; `RolloutInput` and `HostJob` both have them."""

    @property
    def requester_email(self) -> str: ...
    @property
    def target_clusters(self) -> list[str]: ...
    @property
    def update_command(self) -> str: ...
    @property
    def pre_downtime_scripts(self) -> list[str]: ...
    @property
    def pre_update_scripts(self) -> list[str]: ...
    @property
    def post_update_scripts(self) -> list[str]: ...
    @property
    def service_list(self) -> list[str]: ...
    @property
    def reboot_policy(self) -> str: ...
    @property
    def secret_path_prefix(self) -> str: ...
    @property
    def repair_interrupted_dpkg(self) -> bool: ...


class DecisionProof(ContractModel):
    """The signature on a decision, sent with it (`ApprovalDecision.proof`): who signed (the
    approver's policy name for their own key, or a front end's name), when the decision was
    made, the digest it covers and the armored SSH signature of the `DecisionStatement`."""

    signer: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    decided_at: datetime
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    signature: str = Field(min_length=1, max_length=4000)


class ApprovalDecision(ContractModel):
    """Argument of the `approve` and `reject` updates. Under a policy, `proof` is required: the
    signature of the decision on exactly what runs (`workflows.proof`), verified by the workflow
    and again by every host activity before it connects."""

    model_config = ConfigDict(extra="ignore")

    approver: Email
    comment: str = Field(default="", max_length=2000)
    proof: DecisionProof | None = None


class StandingGrant(ContractModel):
    """A schedule's standing approval (`RolloutInput.standingGrants`): `approver` (e-mail) lets
    runs of schedule `schedule_id` go ahead for exactly `digest` until `expires_at`, signed with
    their own key (`signer`: their policy name). See `GrantStatement`."""

    approver: str = Field(max_length=254)
    schedule_id: str = Field(min_length=1, max_length=200)
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    expires_at: datetime
    signer: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    signature: str = Field(min_length=1, max_length=4000)
    comment: str = Field(default="", max_length=2000)

    def statement(self) -> GrantStatement:
        return GrantStatement(
            schedule_id=self.schedule_id,
            approver=self.approver.lower(),
            digest=self.digest,
            expires_at=instant(self.expires_at),
            signer=self.signer,
        )


def rollout_digest(rollout: WhatRuns, targets: Mapping[str, Sequence[HostTarget]]) -> str:
    """`sha256:<64 hex>` over what will run: `targets` is cluster -> resolved hosts, in the
    rollout's order; a change to any host's address, user, command override, to any command
    or script of `rollout`, to `repairInterruptedDpkg`, or to its requester gives another
    digest."""
    hosts = {
        cluster: [
            host.model_dump(mode="json", by_alias=True, exclude={"cluster"})
            | {"commands": host.commands.model_dump(mode="json", by_alias=True)}
            for host in targets.get(cluster, [])
        ]
        for cluster in rollout.target_clusters
    }
    what: dict[str, object] = {
        "requester": rollout.requester_email.lower(),
        "clusters": list(rollout.target_clusters),
        "hosts": hosts,
        "updateCommand": rollout.update_command,
        "preDowntimeScripts": rollout.pre_downtime_scripts,
        "preUpdateScripts": rollout.pre_update_scripts,
        "postUpdateScripts": rollout.post_update_scripts,
        "serviceList": rollout.service_list,
        "rebootPolicy": rollout.reboot_policy,
        "secretPathPrefix": rollout.secret_path_prefix,
    }
    if rollout.repair_interrupted_dpkg:  # a command on hosts: bound like the update command
        what["repairInterruptedDpkg"] = True
    return "sha256:" + hashlib.sha256(_canonical(what)).hexdigest()


@dataclass(frozen=True)
class DecisionStatement:
    """What one signature says: `approver` (the e-mail of a person of the policy) decided
    `decision` on rollout `rollout_id` at `decided_at` (`instant`: UTC, seconds), for exactly what
    `digest` covers. `signer` is who vouches: the approver's own key (their policy name), or a
    front end that verified them (a `frontends` name of the policy, e.g. "slack")."""

    rollout_id: str
    decision: Decision
    approver: str
    decided_at: str
    digest: str
    signer: str

    def to_bytes(self) -> bytes:
        """The exact bytes that are signed: a fixed header, then canonical JSON."""
        return STATEMENT_HEADER + _canonical(asdict(self))

    @classmethod
    def of(
        cls, rollout_id: str, decision: Decision, approver: str, proof: DecisionProof
    ) -> DecisionStatement:
        """The statement `proof` claims to sign for `approver`'s `decision` on `rollout_id`."""
        return cls(
            rollout_id=rollout_id,
            decision=decision,
            approver=approver.lower(),
            decided_at=instant(proof.decided_at),
            digest=proof.digest,
            signer=proof.signer,
        )


@dataclass(frozen=True)
class GrantStatement:
    """A standing approval an approver signs with their own key for a Temporal Schedule: runs
    that schedule `schedule_id` starts may go ahead without asking, for exactly what `digest`
    covers, until `expires_at` (`instant`)."""

    schedule_id: str
    approver: str
    digest: str
    expires_at: str
    signer: str

    def to_bytes(self) -> bytes:
        return GRANT_HEADER + _canonical(asdict(self))


def instant(moment: datetime) -> str:
    """`moment` as signed statements spell it: UTC, whole seconds, `2026-11-30T12:00:00Z`; a
    naive datetime is taken as UTC (Temporal's clock is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
