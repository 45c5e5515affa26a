"""What the inventory says about a cluster: its hosts, the commands run on them, its windows.

No credentials here: those come from Vault, fetched by the activities themselves.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    model_serializer,
    model_validator,
)

from workflows.families import APT_FULL, APT_UPGRADE, LIST_UPDATES, REBOOT_REQUIRED, SIMULATE_UPDATE
from workflows.families import APT_LOCK_TIMEOUT_SECONDS as APT_LOCK_TIMEOUT_SECONDS
from workflows.families import OS_UPDATE_PROFILES as OS_UPDATE_PROFILES
from workflows.fields import ClusterName, ContractModel, HostName, HostPattern, PositiveDuration
from workflows.gates import GateSettings

MAINTENANCE_FLAG = "/var/lib/patchpilot/maintenance"
# A POSIX user name (useradd(8)'s rule, as Debian relaxes it): it reaches `sudo -u` on the host.
UserName = Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_.-]{0,31}$")]


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
    # Exit 0 = a reboot is pending. This and the other defaults that differ per OS family
    # (list_updates, simulate_update) are one `case` over the family (workflows/families.py).
    reboot_required_check: str = REBOOT_REQUIRED
    # Detached, so the SSH command answers before the connection drops.
    reboot: str = "setsid sh -c 'sleep 1; systemctl reboot' >/dev/null 2>&1 </dev/null &"
    boot_id: str = "cat /proc/sys/kernel/random/boot_id"
    # One line per pending update ("name/suite version …" or "name.arch version").
    list_updates: str = LIST_UPDATES
    # Where the update runs detached, one directory per run (activities/detached.py).
    run_dir: str = "/var/lib/patchpilot/runs"
    # The pre-flight doctor (activities/doctor.py): MiB that must be free on the file system of
    # each path, and how long a held dpkg/apt lock is waited for before the host is refused.
    preflight_free_mb: str = "/=300,/var=300,/boot=50"
    preflight_lock_wait: float = Field(default=120.0, ge=0)
    # What the dry run shows the update would change; "Inst"/"Remv" lines are read, as apt-get -s
    # prints them (no lock needed: Debug::NoLocking). Prints nothing on dnf and zypper hosts.
    simulate_update: str = SIMULATE_UPDATE

    def knows_own_flag(self) -> bool:
        """Whether PatchPilot can tell its own maintenance flag on the host: the default check
        and setter, so the flag holds the id of the rollout that set it (`OWN_FLAG_CHECK`)."""
        return (
            self.maintenance_check == DEFAULT_COMMANDS.maintenance_check
            and self.maintenance_on == DEFAULT_COMMANDS.maintenance_on
        )


DEFAULT_COMMANDS = HostCommands()

# Commands that succeed and do nothing on any POSIX shell (both are sh builtins): the default
# drain check is one. A step whose only command is one of them knows its answer without an SSH
# session (issue 16: a session is ~5-7 ms of the host's CPU and a channel of the worker's).
NO_OP_COMMANDS = frozenset({"true", ":"})


def is_no_op(command: str) -> bool:
    """Whether `command` is one of NO_OP_COMMANDS (surrounding whitespace aside)."""
    return command.strip() in NO_OP_COMMANDS


# The default maintenance check, which also tells whose flag it is: exit 1 not in maintenance,
# 0 in maintenance, 2 in this rollout's (its id in the flag, as the default `maintenance_on`
# writes it). Sent only by preconditions that may run again after a lost workflow task
# (`HostStepInput.resumed`, workflows/host_patch.py): they must not refuse a host for the
# maintenance that task set. Anywhere else this rollout's flag is someone else's too (a second
# inventory name of the same machine, a rollout id used again), and the plain check refuses it.
OWN_FLAG_CHECK = (
    f"test -e {MAINTENANCE_FLAG} || exit 1; owner=; "
    f"{{ read -r owner; }} 2>/dev/null < {MAINTENANCE_FLAG}; "
    '[ "$owner" != {rollout_id} ] || exit 2; exit 0'
)
# The host's note when its checks found it so (activities/preconditions.py).
RESUMED_NOTE = (
    "the host was already in the maintenance this rollout put it in (a workflow task was lost, "
    "with its worker or from its cache, after the checks before patching had passed): patching "
    "went on from there"
)

# Update commands for Debian and Ubuntu that never ask (PatchPilot also sets DEBIAN_FRONTEND,
# NEEDRESTART_MODE and DPKG_FORCE for every command, see activities/remote_shell.py; they are
# spelled out here so that approvers read them): apt waits up to 5 minutes for the dpkg lock
# another apt holds (apt.conf(5) DPkg::Lock::Timeout, apt >= 1.9.11) instead of failing at once,
# and dpkg keeps a conffile the host changed (dpkg(1) --force-confdef --force-confold).
# For any OS family: OS_UPDATE_PROFILES (`security`, `full`; workflows/families.py).
UPDATE_PROFILES = {"upgrade": APT_UPGRADE, "full": APT_FULL}
DEFAULT_UPDATE_COMMAND = UPDATE_PROFILES["upgrade"]


class HostTarget(ContractModel):
    """One host as the inventory describes it (no credentials: those come from Vault)."""

    name: HostName
    cluster: ClusterName
    address: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    commands: HostCommands = Field(default_factory=HostCommands)
    # Ansible's become: log in as `user`, run every command with `sudo -n -u <become_user>`.
    become: bool = False
    become_user: UserName | None = None

    @model_serializer(mode="wrap")
    def _omit_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Most hosts use the defaults: leaving them out keeps a 10,000-host rollout's
        # payloads (activity results, continue-as-new input) under Temporal's 2 MB limit.
        data: dict[str, Any] = handler(self)
        if self.commands == DEFAULT_COMMANDS:
            data.pop("commands", None)
        if not self.become:
            data.pop("become", None)
        if self.become_user is None:
            data.pop("becomeUser", None)
            data.pop("become_user", None)
        return data


class ClusterHostsRequest(ContractModel):
    target_cluster: ClusterName
    # An Ansible `--limit` host pattern: only the cluster's hosts it matches.
    host_pattern: HostPattern | None = None


class ClusterHosts(ContractModel):
    cluster: ClusterName
    hosts: list[HostTarget]
    windows: list[MaintenanceWindow] = Field(default_factory=list)
    # The cluster's health gates from its group vars (patchpilot_soak_time, …).
    gates: GateSettings = Field(default_factory=GateSettings)
