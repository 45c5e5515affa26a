"""What an approval is bound to: a digest of exactly what will run, and the statement a decision
signs. Pure (hashing and canonical JSON only), so the workflow, the front ends that sign and the
activities that verify all compute the same bytes.

The digest covers every input that changes what runs on a host: the clusters in order, each
resolved host (name, address, port, login user and its command overrides, which run too), the
update command, every script, the services, the reboot policy and the Vault path prefix the keys
come from. Anything else (timeouts, chat thread, concurrency) changes when things run, not what.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from workflows.models import HostTarget, RolloutInput

# ssh-keygen -Y's namespace for PatchPilot decisions: a signature made for anything else (a git
# commit, a file) does not verify as a decision, and the reverse (OpenSSH PROTOCOL.sshsig).
NAMESPACE = "patchpilot-decision@patchpilot"
STATEMENT_HEADER = b"patchpilot decision v1\n"
Decision = Literal["approve", "reject"]


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def rollout_digest(rollout: RolloutInput, targets: Mapping[str, Sequence[HostTarget]]) -> str:
    """`sha256:<64 hex>` over what will run: `targets` is cluster -> resolved hosts, in the
    rollout's order; a change to any host's address, user, command override or to any command
    or script of `rollout` gives another digest."""
    hosts = {
        cluster: [
            host.model_dump(mode="json", by_alias=True, exclude={"cluster"})
            | {"commands": host.commands.model_dump(mode="json", by_alias=True)}
            for host in targets.get(cluster, [])
        ]
        for cluster in rollout.target_clusters
    }
    what = {
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
    return "sha256:" + hashlib.sha256(_canonical(what)).hexdigest()


@dataclass(frozen=True)
class DecisionStatement:
    """What one signature says: `approver` (a person of the policy) decided `decision` on rollout
    `rollout_id` at `decided_at` (ISO 8601, UTC), for exactly what `digest` covers. `signer` is
    who vouches: the approver's own key, or a front end that verified them (e.g. "slack-bot")."""

    rollout_id: str
    decision: Decision
    approver: str
    decided_at: str
    digest: str
    signer: str

    def to_bytes(self) -> bytes:
        """The exact bytes that are signed: a fixed header, then canonical JSON."""
        return STATEMENT_HEADER + _canonical(asdict(self))
