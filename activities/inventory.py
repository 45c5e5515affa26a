"""Ansible YAML inventory: groups are clusters, file order is rollout order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows import names
from workflows.models import (
    ClusterHosts,
    ClusterHostsRequest,
    HostCommands,
    HostTarget,
    MaintenanceWindow,
    describe_validation_error,
)

VAR_PREFIX = "patchpilot_"


class InventoryError(ValueError):
    """The inventory file cannot be used; the message says where and why."""


def _as_mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InventoryError(f"{where} must be a mapping, not {type(value).__name__}")
    return value


def _walk(
    group_name: str,
    group: dict[str, Any],
    inherited_vars: dict[str, Any],
    clusters: dict[str, list[tuple[str, dict[str, Any]]]],
) -> list[tuple[str, dict[str, Any]]]:
    if not group and group_name in clusters:
        # A bare reference (e.g. under a parent group's children) means the group defined elsewhere.
        return clusters[group_name]
    group_vars = {**inherited_vars, **_as_mapping(group.get("vars"), f"group {group_name}: vars")}
    members: list[tuple[str, dict[str, Any]]] = []
    hosts = _as_mapping(group.get("hosts"), f"group {group_name}: hosts")
    for host_name, host_vars in hosts.items():
        merged = {**group_vars, **_as_mapping(host_vars, f"host {host_name}")}
        members.append((str(host_name), merged))
    children = _as_mapping(group.get("children"), f"group {group_name}: children")
    for child_name, child in children.items():
        members.extend(
            _walk(str(child_name), _as_mapping(child, f"group {child_name}"), group_vars, clusters)
        )
    unique: dict[str, dict[str, Any]] = dict(clusters.get(group_name, []))
    for host_name, host_vars in members:
        unique.setdefault(host_name, host_vars)
    ordered = list(unique.items())
    clusters[group_name] = ordered
    return ordered


def _host_target(cluster: str, name: str, host_vars: dict[str, Any]) -> HostTarget:
    commands = {
        key.removeprefix(VAR_PREFIX): str(value)
        for key, value in host_vars.items()
        if key.startswith(VAR_PREFIX) and key.removeprefix(VAR_PREFIX) in HostCommands.model_fields
    }
    try:
        return HostTarget(
            name=name,
            cluster=cluster,
            address=str(host_vars.get("ansible_host", name)),
            port=int(host_vars.get("ansible_port", 22)),
            user=host_vars.get("ansible_user"),
            commands=HostCommands.model_validate(commands),
        )
    except (ValidationError, ValueError) as error:
        raise InventoryError(f"host {name!r} in group {cluster!r}: {error}") from error


def load_inventory(path: Path) -> dict[str, list[HostTarget]]:
    """Parse the inventory into cluster name -> hosts in file order."""
    return {cluster: hosts for cluster, (hosts, _) in load_clusters(path).items()}


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


def load_clusters(path: Path) -> dict[str, tuple[list[HostTarget], list[MaintenanceWindow]]]:
    """Cluster name -> (hosts in file order, maintenance windows from `patchpilot_windows`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InventoryError(f"cannot read inventory {path}: {error.strerror or error}") from error
    try:
        document = yaml.safe_load(text) or {}
    except yaml.YAMLError as error:
        raise InventoryError(f"inventory {path} is not valid YAML: {error}") from error
    document = _as_mapping(document, f"inventory {path}")
    raw: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    if "all" in document:
        _walk("all", _as_mapping(document["all"], "group all"), {}, raw)
    for group_name, group in document.items():
        if group_name != "all":
            _walk(str(group_name), _as_mapping(group, f"group {group_name}"), {}, raw)
    raw.pop("all", None)
    raw.pop("ungrouped", None)
    return {
        cluster: (
            [_host_target(cluster, name, host_vars) for name, host_vars in hosts],
            _windows(cluster, hosts[0][1].get(f"{VAR_PREFIX}windows") if hosts else None),
        )
        for cluster, hosts in raw.items()
    }


Clusters = dict[str, tuple[list[HostTarget], list[MaintenanceWindow]]]


class InventoryActivities:
    def __init__(self, inventory_path: Path | None) -> None:
        self._path = inventory_path
        self._cached: tuple[tuple[int, int, int], Clusters] | None = None
        self.loads = 0  # times the file was parsed (the bench reads it)

    def clusters(self) -> Clusters:
        if self._path is None:
            raise InventoryError("no inventory configured: set PATCHPILOT_INVENTORY")
        # Parsed again only when the file changed: a 10,000-host inventory takes seconds to
        # read, and a rollout asks once per cluster. An operator's edit still applies at once.
        try:
            stat = self._path.stat()
        except OSError:
            return load_clusters(self._path)  # raises the clear InventoryError
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, load_clusters(self._path))
            self.loads += 1
        return self._cached[1]

    @activity.defn(name=names.GET_CLUSTER_HOSTS)
    async def get_cluster_hosts(self, request: ClusterHostsRequest) -> ClusterHosts:
        try:
            clusters = self.clusters()
        except InventoryError as error:
            raise ApplicationError(str(error), type="InventoryError", non_retryable=True) from None
        found = clusters.get(request.target_cluster)
        if found is None:
            known = ", ".join(sorted(clusters)) or "none"
            raise ApplicationError(
                f"cluster {request.target_cluster!r} is not in the inventory (known: {known})",
                type="UnknownCluster",
                non_retryable=True,
            )
        hosts, windows = found
        if not hosts:
            raise ApplicationError(
                f"cluster {request.target_cluster!r} has no hosts in the inventory",
                type="EmptyCluster",
                non_retryable=True,
            )
        return ClusterHosts(cluster=request.target_cluster, hosts=hosts, windows=windows)
