"""The Ansible inventory as PatchPilot uses it: groups are clusters, inventory order is rollout
order, `patchpilot_*` variables override host commands, `patchpilot_windows` gives windows.

Ansible reads the inventory (`activities.ansible_inventory`); this module only maps what Ansible
says onto `HostTarget`s.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.ansible_inventory import (
    InventoryError,
    SourceCache,
    group_hosts,
    host_vars,
    split_sources,
)
from workflows import names
from workflows.fields import host_pattern
from workflows.models import (
    ClusterHosts,
    ClusterHostsRequest,
    GateSettings,
    HostCommands,
    HostTarget,
    MaintenanceWindow,
    describe_validation_error,
)

__all__ = [
    "InventoryActivities",
    "InventoryError",
    "limit_refusal",
    "load_clusters",
    "load_inventory",
]

logger = logging.getLogger(__name__)

VAR_PREFIX = "patchpilot_"
# Groups every Ansible inventory has; they are not clusters.
IMPLICIT_GROUPS = ("all", "ungrouped")
# Connection variables as Ansible accepts them, preferred name first.
ADDRESS_VARS = ("ansible_host", "ansible_ssh_host")
PORT_VARS = ("ansible_port", "ansible_ssh_port")
USER_VARS = ("ansible_user", "ansible_ssh_user")
# Privilege escalation (run commands with `sudo -n`); PatchPilot's own name wins over Ansible's.
BECOME_VARS = (f"{VAR_PREFIX}become", "ansible_become")
BECOME_USER_VARS = (f"{VAR_PREFIX}become_user", "ansible_become_user")

Clusters = dict[str, tuple[list[HostTarget], list[MaintenanceWindow], GateSettings]]
# Group vars giving a cluster's health gates (workflows/gates.py GateSettings), by field.
GATE_VARS = ("soak_time", "gate_timeout", "alert_matchers", "gate_queries")


def _first(values: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((values[key] for key in keys if values.get(key) not in (None, "")), None)


def _flag(value: Any, name: str) -> bool:
    """A boolean as Ansible reads one: true/false, yes/no, on/off, 1/0 (ValueError otherwise)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "yes", "on", "1"):
        return True
    if text in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{name} must be true or false, not {str(value)[:40]!r}")


def _port(value: Any) -> int:
    if value is None:
        return 22
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"ansible_port must be a whole number, not {str(value)[:40]!r}") from None


def _refuse_vaulted(cluster: str, name: str, values: dict[str, Any]) -> None:
    """`ansible-inventory --list` leaves vaulted values encrypted (`{"__ansible_vault": …}`):
    one that PatchPilot would use is refused rather than run as text."""
    used = (*ADDRESS_VARS, *PORT_VARS, *USER_VARS, *BECOME_VARS, *BECOME_USER_VARS)
    for key, value in values.items():
        vaulted = isinstance(value, dict) and "__ansible_vault" in value
        if vaulted and (key.startswith(VAR_PREFIX) or key in used):
            raise InventoryError(
                f"host {name!r} in group {cluster!r}: {key} is vault-encrypted, and "
                "`ansible-inventory --list` does not decrypt: keep commands and connection "
                "variables in plain text (SSH keys come from Vault, not the inventory)"
            )


def _host_target(cluster: str, name: str, values: dict[str, Any]) -> HostTarget:
    _refuse_vaulted(cluster, name, values)
    commands = {
        key.removeprefix(VAR_PREFIX): str(value)
        for key, value in values.items()
        if key.startswith(VAR_PREFIX) and key.removeprefix(VAR_PREFIX) in HostCommands.model_fields
    }
    try:
        port = _first(values, PORT_VARS)
        user = _first(values, USER_VARS)
        return HostTarget(
            name=name,
            cluster=cluster,
            address=str(_first(values, ADDRESS_VARS) or name),
            port=_port(port),
            user=None if user is None else str(user),
            commands=HostCommands.model_validate(commands),
            become=_flag(_first(values, BECOME_VARS), "become"),
            become_user=_first(values, BECOME_USER_VARS),
        )
    except ValidationError as error:
        reason = describe_validation_error(error)
        raise InventoryError(f"host {name!r} in group {cluster!r}: {reason}") from None
    except ValueError as error:
        raise InventoryError(f"host {name!r} in group {cluster!r}: {error}") from None


def _windows(cluster: str, raw: Any) -> list[MaintenanceWindow]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InventoryError(f"group {cluster!r}: {VAR_PREFIX}windows must be a list")
    windows = []
    for index, window in enumerate(raw):
        try:
            windows.append(MaintenanceWindow.model_validate(window))
        except ValidationError as error:
            reason = describe_validation_error(error).replace("input: ", "")
            raise InventoryError(
                f"group {cluster!r}: {VAR_PREFIX}windows[{index}]: {reason}"
            ) from None
    return windows


def _gates(cluster: str, values: dict[str, Any]) -> GateSettings:
    """The cluster's `patchpilot_soak_time`, `_gate_timeout`, `_alert_matchers` and
    `_gate_queries` (InventoryError naming the variable that cannot be used)."""
    raw = {name: values[VAR_PREFIX + name] for name in GATE_VARS if VAR_PREFIX + name in values}
    try:
        return GateSettings.model_validate(raw)
    except ValidationError as error:
        reason = describe_validation_error(error).replace("input: ", "")
        for name in GATE_VARS:  # name the variable as the inventory spells it
            camel = GateSettings.model_fields[name].alias or name
            reason = reason.replace(camel, VAR_PREFIX + name)
        raise InventoryError(f"group {cluster!r}: {reason}") from None


def clusters_from_listing(listing: dict[str, Any]) -> Clusters:
    """`ansible-inventory --list` JSON -> cluster -> (hosts in inventory order, windows, gates).

    Raises InventoryError naming the host or group whose variables PatchPilot cannot use.
    """
    variables = host_vars(listing)
    clusters: Clusters = {}
    for group, members in group_hosts(listing).items():
        if group in IMPLICIT_GROUPS:
            continue
        hosts = [_host_target(group, name, variables.get(name, {})) for name in members]
        first = variables.get(members[0], {}) if members else {}
        windows = _windows(group, first.get(f"{VAR_PREFIX}windows"))
        clusters[group] = (hosts, windows, _gates(group, first))
    return clusters


_SHARED = SourceCache()


def load_clusters(source: str | Path, limit: str | None = None) -> Clusters:
    """Cluster -> (hosts in inventory order, windows), as Ansible reads `source` (one source or a
    comma-separated list), only hosts matching the `--limit` pattern `limit` when given.

    Kept per source until it changes. Raises InventoryError (Ansible's message, sources named).
    """
    return _SHARED.get(split_sources(source), _pattern(limit), clusters_from_listing)


def _pattern(limit: str | None) -> str | None:
    """`limit` checked (`workflows.fields.host_pattern`); InventoryError saying why not."""
    if limit is None:
        return None
    try:
        return host_pattern(limit)
    except ValueError as error:
        raise InventoryError(f"limit {limit!r}: {error}") from None


async def prefetch(source: str | Path | None) -> None:
    """Have Ansible read the inventory now, in the background, so the first `/patch` (answered
    within Slack's 3 s) and the first rollout find it read. A problem is logged here and reported
    again, to the user, when the inventory is used."""
    if source is None:
        return
    try:
        await asyncio.to_thread(load_inventory, source)
    except InventoryError as error:
        logger.warning("inventory: %s", error)


def limit_warnings(source: str | Path, limit: str) -> list[str]:
    """What Ansible warned when it last applied `limit` to `source` (see `load_clusters`), e.g.
    "Could not match supplied host pattern, ignoring: web0"."""
    return _SHARED.warnings(split_sources(source), host_pattern(limit))


def limit_refusal(source: str | Path, clusters: list[str], limit: str) -> str | None:
    """Why `limit` cannot start a rollout of `clusters`, or None when it selects at least one host
    of each (a rollout stops with EmptyCluster at a cluster the limit empties, so the edge refuses
    it first). The reason follows the pattern: "selects no host of cluster-a, cluster-b in the
    inventory (Ansible: Could not match supplied host pattern, ignoring: web0)".

    Raises InventoryError for an unreadable inventory or a pattern PatchPilot refuses.
    """
    selected = load_inventory(source, limit)
    empty = [name for name in clusters if not selected.get(name)]
    if not empty:
        return None
    said = "; ".join(limit_warnings(source, limit))
    return f"selects no host of {', '.join(empty)} in the inventory" + (
        f" (Ansible: {said})" if said else ""
    )


def load_inventory(source: str | Path, limit: str | None = None) -> dict[str, list[HostTarget]]:
    """Cluster name -> hosts in inventory order (see `load_clusters`)."""
    return {cluster: hosts for cluster, (hosts, *_) in load_clusters(source, limit).items()}


class InventoryActivities:
    """`GetClusterHostsActivity` over the worker's inventory (`PATCHPILOT_INVENTORY`)."""

    def __init__(self, inventory: str | Path | None, cache: SourceCache | None = None) -> None:
        self._source = inventory
        # Shared with the bot's cluster check by default: one reading per change per process.
        self._cache = cache or _SHARED

    @property
    def loads(self) -> int:
        """Times Ansible read the inventory (the bench reads it)."""
        return self._cache.loads

    def clusters(self, limit: str | None = None) -> Clusters:
        """See `load_clusters`; this worker's own cache. InventoryError without an inventory."""
        if self._source is None:
            raise InventoryError("no inventory configured: set PATCHPILOT_INVENTORY")
        return self._cache.get(split_sources(self._source), _pattern(limit), clusters_from_listing)

    @activity.defn(name=names.GET_CLUSTER_HOSTS)
    async def get_cluster_hosts(self, request: ClusterHostsRequest) -> ClusterHosts:
        """The cluster's hosts in inventory order, only those matching `hostPattern` when set.

        Non-retryable ApplicationError: InventoryError, UnknownCluster, EmptyCluster.
        """
        try:
            clusters = await asyncio.to_thread(self.clusters, request.host_pattern)
        except InventoryError as error:
            raise ApplicationError(str(error), type="InventoryError", non_retryable=True) from None
        found = clusters.get(request.target_cluster)
        if found is None and request.host_pattern is not None:
            # Ansible leaves out a group that the limit empties: it is there, just not selected.
            clusters = await asyncio.to_thread(self.clusters)
            found = ([], [], GateSettings()) if request.target_cluster in clusters else None
        if found is None:
            known = ", ".join(sorted(clusters)) or "none"
            raise ApplicationError(
                f"cluster {request.target_cluster!r} is not in the inventory (known: {known})",
                type="UnknownCluster",
                non_retryable=True,
            )
        hosts, windows, gates = found
        if not hosts:
            matching = ""
            if request.host_pattern is not None:
                said = self._cache.warnings(
                    split_sources(self._source or ""), host_pattern(request.host_pattern)
                )
                matching = f" matching limit {request.host_pattern!r}" + (
                    f" (Ansible: {'; '.join(said)})" if said else ""
                )
            raise ApplicationError(
                f"cluster {request.target_cluster!r} has no hosts{matching} in the inventory",
                type="EmptyCluster",
                non_retryable=True,
            )
        return ClusterHosts(
            cluster=request.target_cluster, hosts=hosts, windows=windows, gates=gates
        )
