"""What the inventory says about a cluster: its hosts, the commands run on them, its windows.

No credentials here: those come from Vault, fetched by the activities themselves.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from workflows.fields import ClusterName, ContractModel, HostName, PositiveDuration

MAINTENANCE_FLAG = "/var/lib/patchpilot/maintenance"


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
    # Exit 0 = a reboot is pending (RHEL family: "! needs-restarting -r").
    reboot_required_check: str = "test -e /var/run/reboot-required"
    # Detached, so the SSH command answers before the connection drops.
    reboot: str = "setsid sh -c 'sleep 1; systemctl reboot' >/dev/null 2>&1 </dev/null &"
    boot_id: str = "cat /proc/sys/kernel/random/boot_id"
    # One line per pending update (RHEL family: "dnf -q check-update; [ $? -ne 1 ]").
    list_updates: str = "apt list --upgradable 2>/dev/null | grep -v '^Listing'"


DEFAULT_COMMANDS = HostCommands()


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
        if self.commands == DEFAULT_COMMANDS:
            data.pop("commands", None)
        return data


class ClusterHostsRequest(ContractModel):
    target_cluster: ClusterName


class ClusterHosts(ContractModel):
    cluster: ClusterName
    hosts: list[HostTarget]
    windows: list[MaintenanceWindow] = Field(default_factory=list)
