"""The contract between the bot, the workflows and the activities: the rollout's input, the host
job every host is patched with, and what each workflow and activity takes and returns.

Everything here travels through Temporal, so it must never carry a secret: no private key, no Slack
token, and a Vault token only under payload encryption (see RolloutInput.vault_token). Field names
on the wire are the spec's camelCase names. Field types live in `workflows.fields`, the
inventory's view of hosts in `workflows.targets`, progress and summaries in `workflows.progress`;
their names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from workflows import vault_address
from workflows.fields import (
    NAME_PATTERN,
    SECRET_PREFIX_PATTERN,
    SERVICE_PATTERN,
    ClusterName,
    ContractModel,
    Email,
    HostCount,
    HostName,
    HostPattern,
    PositiveDuration,
    PositiveHostCount,
    RebootPolicy,
    ServiceName,
    ShellCommand,
    describe_validation_error,
)
from workflows.gates import AlertMatcher, GateQuery, GateSettings, SoakDuration
from workflows.host_notices import HostNotices
from workflows.packages import PackageReport
from workflows.progress import (
    ClusterProgress,
    HostInspection,
    HostProgress,
    HostState,
    HostStepReport,
    Phase,
    RolloutCarry,
    RolloutProgress,
    RolloutSummary,
    pack_targets,
    unpack_targets,
)
from workflows.proof import ApprovalDecision, DecisionProof, StandingGrant
from workflows.reboots import RebootLook, RebootResult
from workflows.targets import (
    MAINTENANCE_FLAG,
    ClusterHosts,
    ClusterHostsRequest,
    HostCommands,
    HostTarget,
    MaintenanceWindow,
)

__all__ = [
    "DEFAULT_TASK_QUEUE",
    "HOST_WORKFLOW_NAME",
    "MAINTENANCE_FLAG",
    "NAME_PATTERN",
    "SERVICE_PATTERN",
    "WORKFLOW_NAME",
    "ApprovalDecision",
    "BootWait",
    "ClusterHosts",
    "ClusterHostsRequest",
    "ClusterProgress",
    "DecisionProof",
    "GateSettings",
    "HostCommands",
    "HostInspection",
    "HostJob",
    "HostPatchInput",
    "HostPatchResult",
    "HostProgress",
    "HostState",
    "HostStepInput",
    "HostStepReport",
    "HostTarget",
    "MaintenanceWindow",
    "Phase",
    "RebootRequest",
    "RebootResult",
    "RolloutCarry",
    "RolloutControl",
    "RolloutInput",
    "RolloutNotice",
    "RolloutProgress",
    "RolloutSummary",
    "StandingGrant",
    "StepResult",
    "VaultCleanupInput",
    "VaultPreflightInput",
    "VaultPreflightResult",
    "describe_validation_error",
    "pack_targets",
    "unpack_targets",
]

# The time limit of a step that has no setting of its own, and the default of those that do.
STEP_TIME_LIMIT = timedelta(minutes=3)

WORKFLOW_NAME = "SystemPatchWorkflow"
HOST_WORKFLOW_NAME = "HostPatchWorkflow"
DEFAULT_TASK_QUEUE = "system-patching"


class RolloutControl(ContractModel):
    """Argument of the pause, resume, skip and abort updates: who asks, for skip the host, why."""

    model_config = ConfigDict(extra="ignore")

    person: Email
    host: HostName | None = None
    reason: str = Field(default="", max_length=500)


class RolloutInput(ContractModel):
    """Input of SystemPatchWorkflow: the spec's fields plus optional extensions."""

    target_clusters: list[ClusterName] = Field(min_length=1)
    pilot_host_count: int = Field(ge=0)
    approver_emails: list[Email] = Field(default_factory=list)
    requester_email: Email
    vault_address: str | None = None
    vault_token: str | None = Field(default=None, repr=False)
    secret_path_prefix: Annotated[str, StringConstraints(pattern=SECRET_PREFIX_PATTERN)] = (
        "patch-deploy"
    )
    update_command: ShellCommand
    service_list: list[ServiceName] = Field(default_factory=list)
    pre_downtime_scripts: list[ShellCommand] = Field(default_factory=list)
    pre_update_scripts: list[ShellCommand] = Field(default_factory=list)
    post_update_scripts: list[ShellCommand] = Field(default_factory=list)
    # A number or a percentage of the cluster; hosts in flight at once (a sliding window).
    max_concurrency: PositiveHostCount = 1
    # Host failures tolerated (a number, or a percentage of the cluster being patched); the
    # rollout stops when failures EXCEED it. A failed pilot always stops it.
    max_failures: HostCount = 0
    # Like Ansible's `serial`: batch sizes after the pilots, the last one repeating, each batch
    # finishing before the next starts, e.g. [1, 5, "25%"]. Empty: a sliding window instead.
    waves: list[PositiveHostCount] = Field(default_factory=list, max_length=100)
    # Continue as new before a run's history passes this many events (Temporal warns at 10,240).
    history_event_budget: int = Field(default=5000, ge=200, le=10000)
    # Set by the rollout itself when it continues as new; refused from users (see at_edge).
    continued: RolloutCarry | None = None
    approval_timeout: PositiveDuration = timedelta(hours=24)
    drain_timeout: PositiveDuration = timedelta(minutes=10)
    health_timeout: PositiveDuration = timedelta(minutes=5)
    update_timeout: PositiveDuration = timedelta(hours=1)
    script_timeout: PositiveDuration = timedelta(minutes=15)
    # Per command: each service's stop and start, maintenance on and off (STEP_TIME_LIMIT).
    service_stop_timeout: PositiveDuration = STEP_TIME_LIMIT
    service_start_timeout: PositiveDuration = STEP_TIME_LIMIT
    maintenance_timeout: PositiveDuration = STEP_TIME_LIMIT
    reboot_policy: RebootPolicy = "if-required"
    reboot_timeout: PositiveDuration = timedelta(minutes=10)
    repair_interrupted_dpkg: bool = False  # dpkg --configure -a first (workflows/repair.py)
    dry_run: bool = False
    # A schedule's standing approval; honoured only for runs a Temporal Schedule started.
    pre_approved_by: ApprovalDecision | None = None
    # Under a policy a schedule's standing approval is these grants, signed by the approvers.
    standing_grants: list[StandingGrant] = Field(default_factory=list, max_length=20)
    # The update profile (policy `updateProfiles`) `updateCommand` was taken from, for people.
    update_profile: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    # Empty: each cluster's windows from the inventory (patchpilot_windows), else always open.
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
    window_cutoff: PositiveDuration = Field(default=timedelta(minutes=15), validate_default=True)
    # Ansible `--limit` pattern: only the target clusters' hosts it matches (`web0[12]*`, `!a3`).
    host_pattern: HostPattern | None = None
    # Health gates after the pilots and each wave (workflows/gating.py); unset: the cluster's
    # patchpilot_soak_time, patchpilot_gate_timeout, _alert_matchers, _gate_queries group vars.
    soak_time: SoakDuration | None = None
    gate_timeout: PositiveDuration | None = None
    alert_matchers: list[AlertMatcher] = Field(default_factory=list, max_length=20)
    gate_queries: list[GateQuery] = Field(default_factory=list, max_length=20)
    # Where chat notifications for this rollout go (set by the Slack bot; not secrets).
    slack_channel: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,32}$")] | None = None
    slack_thread_ts: Annotated[str, StringConstraints(pattern=r"^\d{1,12}\.\d{1,8}$")] | None = None

    @field_validator("vault_address")
    @classmethod
    def _vault_address_is_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value == "":
            return None
        # The worker sends its own Vault credentials there: https unless loopback, and at the
        # edge one of the addresses the worker trusts (workflows/vault_address.py).
        vault_address.check_transport(value)
        trusted = (info.context or {}).get("trusted_vault_addresses")
        if trusted is not None:
            vault_address.check_trusted(value, trusted)
        return value.rstrip("/")

    @field_validator("secret_path_prefix")
    @classmethod
    def _no_relative_segments(cls, value: str) -> str:
        if any(segment in (".", "..") for segment in value.split("/")):
            raise ValueError(f"{value!r} must not contain '.' or '..' segments (pattern)")
        return value

    @field_validator("continued")
    @classmethod
    def _continued_is_internal(
        cls, value: RolloutCarry | None, info: ValidationInfo
    ) -> RolloutCarry | None:
        if value is not None and (info.context or {}).get("edge"):
            raise ValueError("is set by PatchPilot when a rollout continues as new; leave it out")
        return value

    @field_validator("vault_token")
    @classmethod
    def _no_token_in_plain_history(cls, value: str | None, info: ValidationInfo) -> str | None:
        context = info.context or {}
        if value and context.get("edge") and not context.get("payload_encryption"):
            # Without payload encryption the token would sit in Temporal's history in plain text.
            raise ValueError(
                "is refused: a Vault token in the workflow input would be stored in plain text in "
                "Temporal history. Give the worker its own Vault credentials (VAULT_TOKEN, or "
                "VAULT_ROLE_ID + VAULT_SECRET_ID) and leave vaultToken out, or configure payload "
                "encryption (PATCHPILOT_CODEC_KEYS)"
            )
        return value or None

    @classmethod
    def at_edge(
        cls,
        raw: dict[str, Any],
        *,
        payload_encryption: bool = False,
        trusted_vault_addresses: Sequence[str] | None = None,
    ) -> RolloutInput:
        """Validate input from a user (CLI, chat): also refuses a token that would leak and, when
        `trusted_vault_addresses` is given, a `vaultAddress` that is not one of them."""
        context: dict[str, Any] = {"edge": True, "payload_encryption": payload_encryption}
        if trusted_vault_addresses is not None:
            context["trusted_vault_addresses"] = list(trusted_vault_addresses)
        return cls.model_validate(raw, context=context)

    @field_validator("target_clusters", "approver_emails", "service_list")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        seen: set[str] = set()
        for item in value:
            if item in seen:
                raise ValueError(f"{item!r} is listed twice")
            seen.add(item)
        return value

    @field_validator("window_cutoff")
    @classmethod
    def _cutoff_fits_the_windows(cls, cutoff: timedelta, info: ValidationInfo) -> timedelta:
        for index, window in enumerate(info.data.get("maintenance_windows", [])):
            if cutoff >= window.duration:
                raise ValueError(
                    f"{cutoff} must be shorter than maintenanceWindows[{index}].duration "
                    f"({window.duration}), or no host could ever start"
                )
        return cutoff

    @model_validator(mode="after")
    def _requester_is_not_the_only_approver(self) -> RolloutInput:
        if self.dry_run:
            return self  # a dry run changes nothing and needs no approval
        # No approvers: under a policy the policy names them; without one the worker refuses
        # (`workflows.approval.NO_APPROVERS`), and so do the CLI and Slack edges.
        if set(self.approver_emails) == {self.requester_email}:
            raise ValueError(
                "approverEmails: the requester cannot approve their own rollout, so at least one "
                "approver other than the requester is needed"
            )
        return self


class VaultPreflightInput(ContractModel):
    vault_address: str | None = None
    vault_token: str | None = Field(default=None, repr=False)
    secret_path_prefix: str
    probe_host: HostName | None = None


class HostJob(ContractModel):
    """How every host of one rollout is patched: built once per rollout from its RolloutInput
    (same field names), then carried by each host workflow's input and each host step's input.
    It lists no hosts, so its size does not grow with the fleet."""

    rollout_id: str
    requester_email: Email
    approver_emails: list[Email] = Field(default_factory=list)
    # What the approvals cover (workflows.proof.rollout_digest), verified again by each host step.
    target_clusters: list[ClusterName] = Field(default_factory=list)
    host_pattern: str | None = None
    approvals: list[ApprovalDecision] = Field(default_factory=list)
    grants: list[StandingGrant] = Field(default_factory=list)
    vault_address: str | None = None
    # Set only when the rollout's input had one, which needs payload encryption (RolloutInput).
    vault_token: str | None = Field(default=None, repr=False)
    secret_path_prefix: str
    update_command: ShellCommand
    service_list: list[ServiceName] = Field(default_factory=list)
    pre_downtime_scripts: list[ShellCommand] = Field(default_factory=list)
    pre_update_scripts: list[ShellCommand] = Field(default_factory=list)
    post_update_scripts: list[ShellCommand] = Field(default_factory=list)
    drain_timeout: PositiveDuration
    health_timeout: PositiveDuration
    update_timeout: PositiveDuration
    script_timeout: PositiveDuration
    # Defaults, so a job recorded before these existed still reads.
    service_stop_timeout: PositiveDuration = STEP_TIME_LIMIT
    service_start_timeout: PositiveDuration = STEP_TIME_LIMIT
    maintenance_timeout: PositiveDuration = STEP_TIME_LIMIT
    reboot_policy: RebootPolicy = "if-required"
    reboot_timeout: PositiveDuration
    repair_interrupted_dpkg: bool = False  # in the digest when set (workflows/proof.py)
    slack_channel: str | None = None
    slack_thread_ts: str | None = None

    @classmethod
    def from_rollout(cls, rollout_id: str, rollout: RolloutInput) -> HostJob:
        """The job of `rollout`: each of its fields is the rollout's field of the same name."""
        own = ("rollout_id", "approvals", "grants")
        shared = {name: getattr(rollout, name) for name in cls.model_fields if name not in own}
        return cls(rollout_id=rollout_id, **shared)


class HostPatchInput(ContractModel):
    """Input of the per-host child workflow."""

    job: HostJob
    host: HostTarget
    first_looks: bool = False  # the v5 shape (workflows/host_patch.py); False in older histories
    notices: HostNotices = Field(default_factory=HostNotices)
    local_preconditions: bool = False  # the v8 shape, as first_looks


class HostStepInput(ContractModel):
    """Input of every per-host activity: the job, the host, and this step's own scripts, command
    and time limit."""

    job: HostJob
    host: HostTarget
    scripts: list[str] = Field(default_factory=list)
    command: str | None = None
    timeout_seconds: float = 300.0
    first_look: bool = False  # a wait step's one look (local); StepResult.ok False: not yet
    # Preconditions run again after a lost workflow task (workflows/host_patch.py). Left out of
    # the payload when off, so older workers still read every other step's input.
    resumed: bool = Field(default=False, exclude_if=lambda on: not on)

    @property
    def rollout_id(self) -> str:
        # Logs and metrics label every step with it (bot/observability.py).
        return self.job.rollout_id


class StepResult(ContractModel):
    ok: bool = True  # False only from a first look (HostStepInput.first_look); failures raise
    detail: str = ""
    # The update step's: what it did to the host's packages (workflows/packages.py).
    packages: PackageReport | None = None
    notes: list[str] = Field(default_factory=list)  # the preconditions': held packages, …
    # The update step's, when its SSH command brought them back (workflows/reboots.py). Left
    # out when absent; a worker older than engine v10 refuses a result holding it (unknown
    # fields are an error): workers are upgraded together (README, "Changing workflow code").
    reboot_look: RebootLook | None = Field(default=None, exclude_if=lambda look: look is None)


class VaultPreflightResult(StepResult):
    """Result of VaultClientActivity: the rollout's child token's accessor (None: the rollout
    brought its own), which revokes but cannot authenticate (Vault, "Token accessors")."""

    token_accessor: str | None = None


class VaultCleanupInput(ContractModel):
    """Input of VaultCleanupActivity, which revokes a rollout's child token(s) when it ends."""

    rollout_id: str
    vault_address: str | None = None
    token_accessor: str | None = None


class RebootRequest(ContractModel):
    step: HostStepInput
    policy: RebootPolicy


class BootWait(ContractModel):
    step: HostStepInput
    boot_id_before: str


class RolloutNotice(ContractModel):
    """What the notification activities need; never a secret."""

    rollout_id: str
    requester_email: Email
    approver_emails: list[Email] = Field(default_factory=list)
    target_clusters: list[str] = Field(default_factory=list)
    hostname: str | None = None
    cluster: str | None = None
    step: str | None = None
    failure_details: str | None = None
    hosts_by_cluster: dict[str, list[str]] = Field(default_factory=dict)
    # With the hosts: the `--limit` pattern that selected them, and per cluster what to know
    # (e.g. one machine listed under two names, patched once).
    host_pattern: str | None = None
    cluster_notes: dict[str, str] = Field(default_factory=dict)
    summary: RolloutSummary | None = None
    pilot_host_count: int = 0
    update_command: str = ""
    # For the approval request: the command's profile, the scripts by kind, the digest signed.
    update_profile: str | None = None
    scripts: dict[str, list[str]] = Field(default_factory=dict)
    digest: str | None = None
    repair_interrupted_dpkg: bool = False
    service_list: list[str] = Field(default_factory=list)
    slack_channel: str | None = None
    slack_thread_ts: str | None = None
    wave: str | None = None
    waiting: str | None = None


class HostPatchResult(ContractModel):
    hostname: str
    ok: bool
    step: str | None = None
    failure_reason: str | None = None
    in_maintenance: bool | None = False
    rebooted: bool = False
    reboot_note: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    packages: PackageReport | None = None
    notes: list[str] = Field(default_factory=list)  # reported, not refused (StepResult.notes)
