"""The contract between the bot, the workflows and the activities.

Everything here travels through Temporal, so it must never carry a secret: no private key, no Vault
token, no Slack token. Field names on the wire are the spec's camelCase names.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel

WORKFLOW_NAME = "SystemPatchWorkflow"
HOST_WORKFLOW_NAME = "HostPatchWorkflow"
DEFAULT_TASK_QUEUE = "system-patching"
MAINTENANCE_FLAG = "/var/lib/patchpilot/maintenance"

# Names end up in shell commands, workflow ids and file paths: keep them boring on purpose.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
SERVICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$"
SECRET_PREFIX_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"
EMAIL_PATTERN = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
MAX_COMMAND_LENGTH = 8192


def _check_name(value: str, what: str, pattern: str) -> str:
    if not re.fullmatch(pattern, value):
        raise ValueError(
            f"{what} {value[:80]!r} is not allowed: use letters, digits, '.', '_' or '-' "
            f"(starting with a letter or digit, at most {63 if pattern == NAME_PATTERN else 128} "
            "characters); shell metacharacters and spaces are refused"
        )
    return value


def _cluster_name(value: str) -> str:
    return _check_name(value, "cluster name", NAME_PATTERN)


def _host_name(value: str) -> str:
    return _check_name(value, "host name", NAME_PATTERN)


def _service_name(value: str) -> str:
    return _check_name(value, "service name", SERVICE_PATTERN)


def _email(value: str) -> str:
    value = value.strip()
    if len(value) > 254 or not EMAIL_PATTERN.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not a valid e-mail address")
    return value.lower()


def _shell_command(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    if len(value) > MAX_COMMAND_LENGTH:
        raise ValueError(f"is {len(value)} characters long; the limit is {MAX_COMMAND_LENGTH}")
    return value


ClusterName = Annotated[str, AfterValidator(_cluster_name)]
HostName = Annotated[str, AfterValidator(_host_name)]
ServiceName = Annotated[str, AfterValidator(_service_name)]
Email = Annotated[str, AfterValidator(_email)]
ShellCommand = Annotated[str, AfterValidator(_shell_command)]


class ContractModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are an error, not a surprise."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
    )


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration (seconds or ISO 8601, e.g. 'PT30M')")
    return value


PositiveDuration = Annotated[timedelta, AfterValidator(_positive)]


def _host_count(value: object, *, minimum: int, maximum: int = 100_000) -> int | str:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number of hosts")
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        number = int(value)
        if not minimum <= number <= maximum:
            raise ValueError(f"{number} must be between {minimum} and {maximum} hosts")
        return number
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{1,3})\s*%\s*", value)
        if match and minimum <= int(match.group(1)) <= 100:
            return f"{int(match.group(1))}%"
    raise ValueError(
        f"{str(value)[:40]!r} is neither a whole number of hosts nor a percentage of the "
        f"cluster like '25%' ({minimum}% to 100%)"
    )


# A number of hosts, or a percentage of the cluster ("25%"); see workflows.planning.resolve_amount.
HostCount = Annotated[int | str, BeforeValidator(lambda v: _host_count(v, minimum=0))]
PositiveHostCount = Annotated[
    int | str, BeforeValidator(lambda v: _host_count(v, minimum=1, maximum=1000))
]


RebootPolicy = Literal["if-required", "always", "never"]


class ApprovalDecision(ContractModel):
    """Argument of the `approve` and `reject` updates."""

    model_config = ConfigDict(extra="ignore")

    approver: Email
    comment: str = Field(default="", max_length=2000)


class MaintenanceWindow(ContractModel):
    """Opens at each fire time of `cron` (in `timezone`) and stays open for `duration`."""

    cron: str
    duration: PositiveDuration
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _valid_schedule(self) -> MaintenanceWindow:
        from workflows.windows import trigger

        trigger(self.cron, self.timezone)  # raises ValueError with the reason
        return self


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
    # A run continues as new before its history passes this many events (Temporal warns at
    # 10,240); lower it to see continue-as-new on small fleets.
    history_event_budget: int = Field(default=5000, ge=200, le=10000)
    # Set by the rollout itself when it continues as new; refused from users (see at_edge).
    continued: RolloutCarry | None = None
    approval_timeout: PositiveDuration = timedelta(hours=24)
    drain_timeout: PositiveDuration = timedelta(minutes=10)
    health_timeout: PositiveDuration = timedelta(minutes=5)
    update_timeout: PositiveDuration = timedelta(hours=1)
    script_timeout: PositiveDuration = timedelta(minutes=15)
    reboot_policy: RebootPolicy = "if-required"
    reboot_timeout: PositiveDuration = timedelta(minutes=10)
    dry_run: bool = False
    # A schedule's standing approval; honoured only for runs a Temporal Schedule started.
    pre_approved_by: ApprovalDecision | None = None
    # Empty: each cluster's windows from the inventory (patchpilot_windows), else always open.
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)
    window_cutoff: PositiveDuration = Field(default=timedelta(minutes=15), validate_default=True)
    # Where chat notifications for this rollout go (set by the Slack bot; not secrets).
    slack_channel: Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{1,32}$")] | None = None
    slack_thread_ts: Annotated[str, StringConstraints(pattern=r"^\d{1,12}\.\d{1,8}$")] | None = None

    @field_validator("vault_address")
    @classmethod
    def _vault_address_is_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+(:\d+)?/?", value):
            raise ValueError(
                f"{value[:80]!r} is not an http(s) URL like https://vault.example.com:8200"
            )
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
    def at_edge(cls, raw: dict[str, Any], *, payload_encryption: bool = False) -> RolloutInput:
        """Validate input from a user (CLI, chat): also refuses a token that would leak."""
        return cls.model_validate(
            raw, context={"edge": True, "payload_encryption": payload_encryption}
        )

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
        if not self.approver_emails:
            raise ValueError(
                "approverEmails: at least one approver is needed (a dry run needs none)"
            )
        if set(self.approver_emails) == {self.requester_email}:
            raise ValueError(
                "approverEmails: the requester cannot approve their own rollout, so at least one "
                "approver other than the requester is needed"
            )
        return self


class HostCommands(ContractModel):
    """Shell commands run on a host; overridable per host or group with `patchpilot_<field>` vars.

    `{service}` becomes the shell-quoted service name, `{rollout_id}` the quoted rollout id.
    """

    health_check: str = "true"
    maintenance_check: str = f"test -e {MAINTENANCE_FLAG}"
    maintenance_on: str = (
        f"mkdir -p {MAINTENANCE_FLAG.rsplit('/', 1)[0]} && echo {{rollout_id}} > {MAINTENANCE_FLAG}"
    )
    maintenance_off: str = f"rm -f {MAINTENANCE_FLAG}"
    drain_check: str = "true"
    service_stop: str = "systemctl stop {service}"
    service_start: str = "systemctl start {service}"
    service_health: str = "systemctl is-active {service}"
    # Exit 0 = a reboot is pending (RHEL family: "! needs-restarting -r").
    reboot_required_check: str = "test -e /var/run/reboot-required"
    # Detached, so the SSH command answers before the connection drops.
    reboot: str = "setsid sh -c 'sleep 1; systemctl reboot' >/dev/null 2>&1 </dev/null &"
    boot_id: str = "cat /proc/sys/kernel/random/boot_id"
    # One line per pending update (RHEL family: "dnf -q check-update; [ $? -ne 1 ]").
    list_updates: str = "apt list --upgradable 2>/dev/null | grep -v '^Listing'"


_DEFAULT_COMMANDS = HostCommands()


class HostTarget(ContractModel):
    """One host as the inventory describes it (no credentials: those come from Vault)."""

    name: HostName
    cluster: ClusterName
    address: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    commands: HostCommands = Field(default_factory=HostCommands)

    @model_serializer(mode="wrap")
    def _omit_default_commands(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Most hosts use the default commands: leaving them out keeps a 10,000-host rollout's
        # payloads (activity results, continue-as-new input) under Temporal's 2 MB limit.
        data: dict[str, Any] = handler(self)
        if self.commands == _DEFAULT_COMMANDS:
            data.pop("commands", None)
        return data


class ClusterHostsRequest(ContractModel):
    target_cluster: ClusterName


class ClusterHosts(ContractModel):
    cluster: ClusterName
    hosts: list[HostTarget]
    windows: list[MaintenanceWindow] = Field(default_factory=list)


class VaultPreflightInput(ContractModel):
    vault_address: str | None = None
    vault_token: str | None = Field(default=None, repr=False)
    secret_path_prefix: str
    probe_host: HostName | None = None


class HostStepInput(ContractModel):
    """Input of every per-host SSH activity."""

    rollout_id: str
    host: HostTarget
    vault_address: str | None = None
    vault_token: str | None = Field(default=None, repr=False)
    secret_path_prefix: str
    service_list: list[ServiceName] = Field(default_factory=list)
    scripts: list[str] = Field(default_factory=list)
    command: str | None = None
    timeout_seconds: float = 300.0


class StepResult(ContractModel):
    ok: bool = True
    detail: str = ""


class RebootRequest(ContractModel):
    step: HostStepInput
    policy: RebootPolicy


class RebootResult(ContractModel):
    rebooted: bool
    boot_id_before: str = ""
    reason: str = ""


class BootWait(ContractModel):
    step: HostStepInput
    boot_id_before: str


class HostInspection(ContractModel):
    """A dry run's findings for one host; nothing on the host was changed."""

    hostname: str
    cluster: str
    preconditions_ok: bool
    reason: str = ""
    pending_updates: list[str] = Field(default_factory=list)
    reboot_required: bool | None = None


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
    summary: RolloutSummary | None = None
    pilot_host_count: int = 0
    update_command: str = ""
    service_list: list[str] = Field(default_factory=list)
    slack_channel: str | None = None
    slack_thread_ts: str | None = None
    wave: str | None = None
    waiting: str | None = None


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
        for name, field in type(self).model_fields.items():
            if field.is_required() or getattr(self, name) != field.default:
                continue
            data.pop(field.alias or name, None)
            data.pop(name, None)
        return data


class ClusterProgress(ContractModel):
    name: str
    hosts: list[HostProgress] = Field(default_factory=list)
    note: str | None = None

    def count(self, state: HostState) -> int:
        return sum(1 for host in self.hosts if host.state == state)


class RolloutProgress(ContractModel):
    rollout_id: str
    phase: Phase
    requester_email: str
    approver_emails: list[str]
    decided_by: str | None = None
    decision_comment: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    message: str | None = None
    waiting_for_window: str | None = None
    clusters: list[ClusterProgress] = Field(default_factory=list)

    def hosts(self) -> list[HostProgress]:
        return [host for cluster in self.clusters for host in cluster.hosts]


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


class HostPatchInput(ContractModel):
    """Input of the per-host child workflow."""

    rollout_id: str
    parent_workflow_id: str
    host: HostTarget
    requester_email: Email
    approver_emails: list[Email]
    vault_address: str | None = None
    vault_token: str | None = Field(default=None, repr=False)
    secret_path_prefix: str
    update_command: str
    service_list: list[str] = Field(default_factory=list)
    pre_downtime_scripts: list[str] = Field(default_factory=list)
    pre_update_scripts: list[str] = Field(default_factory=list)
    post_update_scripts: list[str] = Field(default_factory=list)
    slack_channel: str | None = None
    slack_thread_ts: str | None = None
    drain_timeout_seconds: float
    health_timeout_seconds: float
    update_timeout_seconds: float
    script_timeout_seconds: float
    reboot_policy: RebootPolicy = "if-required"
    reboot_timeout_seconds: float = 600.0


class HostStepReport(ContractModel):
    """Signal from a host workflow to its rollout: the step it is on now."""

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
            if host.commands == _DEFAULT_COMMANDS:
                index = -1
            else:
                if host.commands not in sets:
                    sets.append(host.commands)
                index = sets.index(host.commands)
            packed[cluster].append(host.model_copy(update={"commands": _DEFAULT_COMMANDS}))
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


def describe_validation_error(error: Any) -> str:
    """One line per problem, naming the camelCase field, for CLI and chat users."""
    lines = []
    for problem in error.errors():
        location = ""
        for part in problem["loc"]:
            location += f"[{part}]" if isinstance(part, int) else f".{to_camel(str(part))}"
        location = location.lstrip(".")
        message = problem["msg"].removeprefix("Value error, ")
        if not location and re.match(r"^[a-z][A-Za-z]*(\[\d+\])?: ", message):
            lines.append(message)  # a whole-input rule that already names its field
        else:
            lines.append(f"{location or 'input'}: {message}")
    return "\n".join(lines)


RolloutNotice.model_rebuild()
RolloutInput.model_rebuild()
