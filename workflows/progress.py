"""What a rollout reports: its progress (the `progress` query), each host's step (the host
workflow's `host_progress` query), its summary, and what one run carries to the next.

Each of these is one Temporal payload (2 MB at most) that lists every host of a 10,000-host rollout,
so each keeps its per-host part small.
"""

from __future__ import annotations

import functools
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer

from workflows.fields import ContractModel
from workflows.gates import GateSettings
from workflows.proof import ApprovalDecision, StandingGrant
from workflows.targets import DEFAULT_COMMANDS, HostCommands, HostTarget, MaintenanceWindow


class HostState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


class Phase(StrEnum):
    RESOLVING = "resolving-hosts"
    AWAITING_APPROVAL = "awaiting-approval"
    PREFLIGHT = "vault-preflight"
    PATCHING = "patching"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    APPROVAL_TIMED_OUT = "approval-timed-out"
    CANCELLED = "cancelled"
    DRY_RUN = "dry-run"
    DRY_RUN_DONE = "dry-run-done"

    @property
    def ok(self) -> bool:
        """The rollout ended as asked: every host patched (within the error budget), or a dry run
        that inspected every host. What `watch`, `result` and the demo exit 0 for."""
        return self in (Phase.SUCCEEDED, Phase.DRY_RUN_DONE)


class HostInspection(ContractModel):
    """A dry run's findings for one host; nothing on the host was changed."""

    hostname: str
    cluster: str
    preconditions_ok: bool
    reason: str = ""
    pending_updates: list[str] = Field(default_factory=list)
    reboot_required: bool | None = None
    # What `apt-get -s` says the update would do: "upgrade NAME OLD → NEW", "install NAME NEW",
    # "remove NAME OLD" (HostCommands.simulate_update; empty where it gives nothing).
    would_change: list[str] = Field(default_factory=list)


class HostProgress(ContractModel):
    name: str
    cluster: str
    pilot: bool = False
    state: HostState = HostState.PENDING
    step: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    failure_reason: str | None = None
    in_maintenance: bool | None = False
    rebooted: bool = False
    note: str | None = None
    # What the update did to the host's packages, in one line (PackageReport.summary_line).
    packages: str | None = None
    # What the preconditions reported but did not refuse: held packages, a reboot already
    # pending, a dpkg repaired (HostPatchResult.notes).
    # A factory, not `= []`: pydantic-core deep-copies an unhashable default for every host
    # read without it (copy.deepcopy, 10 % of a worker reading 10,000 hosts' progress).
    notes: list[str] = Field(default_factory=list)

    @model_serializer(mode="wrap")
    def _omit_defaults(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        # A 10,000-host progress answer or summary must stay under Temporal's 2 MB payload
        # limit: fields still at their default are left out unless a reader asks for them all
        # (`model_dump(context={"full": True})`).
        data: dict[str, Any] = handler(self)
        if isinstance(info.context, dict) and info.context.get("full"):
            return data
        for name, key, default in _defaults(type(self)):
            if getattr(self, name) == default:
                data.pop(key, None)
                data.pop(name, None)
        return data


@functools.cache
def _defaults(model: type[ContractModel]) -> tuple[tuple[str, str, Any], ...]:
    """(field name, JSON key, default) of each of `model`'s fields that has a default, once per
    model (not per host and per answer)."""
    return tuple(
        (name, field.alias or name, field.get_default(call_default_factory=True))
        for name, field in model.model_fields.items()
        if not field.is_required()
    )


class ClusterProgress(ContractModel):
    name: str
    hosts: list[HostProgress] = Field(default_factory=list)
    note: str | None = None

    def count(self, state: HostState) -> int:
        return sum(1 for host in self.hosts if host.state == state)


class RolloutProgress(ContractModel):
    rollout_id: str
    phase: Phase
    dry_run: bool = False  # inspect only: its hosts are found ready or refused, never patched
    requester_email: str
    approver_emails: list[str]
    decided_by: str | None = None
    decision_comment: str | None = None
    # Under a policy: the digest of what runs (the approvals sign it), who approved so far, and
    # what is still missing ("cluster-a: 1 more of alice@…, carol@…").
    digest: str | None = None
    approved_by: list[str] = Field(default_factory=list)
    approvals_missing: list[str] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    waiting_for_window: str | None = None
    clusters: list[ClusterProgress] = Field(default_factory=list)
    # Set while paused (`pause` update): by whom and since when; no new host starts meanwhile.
    paused_by: str | None = None
    paused_since: datetime | None = None
    # Every control of the running rollout, oldest first ("paused by bob@example.com", …).
    controls: list[str] = Field(default_factory=list)
    # The health gate now (workflows/gating.py): "cluster-a: soaking 10 min after the pilots;
    # next wave at 14:32 UTC"; and every gate decision so far with its numbers, oldest first.
    gate: str | None = None
    soak_until: datetime | None = None
    gates: list[str] = Field(default_factory=list)

    def hosts(self) -> list[HostProgress]:
        return [host for cluster in self.clusters for host in cluster.hosts]


# A dry run's words for its inspected hosts' states: done when the preconditions held, failed
# when they did not (it patches nothing). Every channel and view says these.
DRY_RUN_STATES = {"done": "ready", "failed": "refused"}


class RolloutSummary(ContractModel):
    rollout_id: str
    phase: Phase
    patched: int
    failed: int
    skipped: int
    duration_seconds: float
    message: str
    hosts: list[HostProgress] = Field(default_factory=list)
    dry_run: list[HostInspection] | None = None
    controls: list[str] = Field(default_factory=list)  # pause, resume, skip, abort: who, when
    gates: list[str] = Field(default_factory=list)  # each gate decision and its numbers

    def counts(self) -> list[tuple[str, int]]:
        """The counts as a reader should read them, in order: `[("patched", n), ("failed", n),
        ("skipped", n)]`; for a dry run, which patches nothing (`patched` is 0),
        `[("ready", n), ("refused", n), ("skipped", n)]`: hosts whose inspection found the
        preconditions held, and hosts they refused. Every channel's summary says these words."""
        if self.dry_run is None:
            return [("patched", self.patched), ("failed", self.failed), ("skipped", self.skipped)]
        ready = sum(1 for found in self.dry_run if found.preconditions_ok)
        return [
            (DRY_RUN_STATES["done"], ready),
            (DRY_RUN_STATES["failed"], len(self.dry_run) - ready),
            ("skipped", self.skipped),
        ]


class HostStepReport(ContractModel):
    """Answer of a host workflow's `host_progress` query: the step its host is on now.

    The rollout's own `progress` leaves a running host's step empty; readers fill it in from this
    (`bot.rollouts.Rollouts.fill_running_steps`), so the rollout's history holds no event per step.
    """

    hostname: str
    step: str
    in_maintenance: bool | None = None


class RolloutCarry(ContractModel):
    """What a rollout run hands to the next when it continues as new: kept small, because it is
    one payload (2 MB limit) and a 10,000-host fleet must fit. The hosts it lists as finished are
    never started again, so no host is patched twice across runs."""

    started_at: datetime
    decided_by: str | None = None
    decision_comment: str | None = None
    runs: int = 1
    failures: int = 0
    # Hosts without their commands; `command_of[cluster][i]` indexes `command_sets` (-1: the
    # defaults), so group-level command overrides are carried once, not once per host.
    targets: dict[str, list[HostTarget]]
    command_sets: list[HostCommands] = Field(default_factory=list)
    command_of: dict[str, list[int]] = Field(default_factory=dict)
    windows: dict[str, list[MaintenanceWindow]] = Field(default_factory=dict)
    notes: dict[str, str] = Field(default_factory=dict)
    # Hosts patched successfully, by cluster (names only); every other finished host in full.
    patched: dict[str, list[str]] = Field(default_factory=dict)
    rebooted: dict[str, list[str]] = Field(default_factory=dict)
    finished: list[HostProgress] = Field(default_factory=list)
    # The accessor of the rollout's Vault child token, revoked when the last run ends.
    vault_token_accessor: str | None = None
    # The approvals (signed, verified again by the next run and by every host step) and the
    # standing grants of a scheduled run.
    approvals: list[ApprovalDecision] = Field(default_factory=list)
    grants: list[StandingGrant] = Field(default_factory=list)
    # A pause holds across runs; the controls so far go on into the summary.
    paused_by: str | None = None
    paused_since: datetime | None = None
    controls: list[str] = Field(default_factory=list)
    # Each cluster's gates as resolved, and the gate decisions so far.
    gate_settings: dict[str, GateSettings] = Field(default_factory=dict)
    gates: list[str] = Field(default_factory=list)


def pack_targets(
    targets: dict[str, list[HostTarget]],
) -> tuple[dict[str, list[HostTarget]], list[HostCommands], dict[str, list[int]]]:
    """Targets with each distinct command set kept once (see RolloutCarry)."""
    sets: list[HostCommands] = []
    packed: dict[str, list[HostTarget]] = {}
    index_of: dict[str, list[int]] = {}
    for cluster, hosts in targets.items():
        packed[cluster], index_of[cluster] = [], []
        for host in hosts:
            if host.commands == DEFAULT_COMMANDS:
                index = -1
            else:
                if host.commands not in sets:
                    sets.append(host.commands)
                index = sets.index(host.commands)
            packed[cluster].append(host.model_copy(update={"commands": DEFAULT_COMMANDS}))
            index_of[cluster].append(index)
    return packed, sets, index_of


def unpack_targets(carry: RolloutCarry) -> dict[str, list[HostTarget]]:
    targets: dict[str, list[HostTarget]] = {}
    for cluster, hosts in carry.targets.items():
        indexes = carry.command_of.get(cluster) or [-1] * len(hosts)
        targets[cluster] = [
            host if index < 0 else host.model_copy(update={"commands": carry.command_sets[index]})
            for host, index in zip(hosts, indexes, strict=True)
        ]
    return targets
