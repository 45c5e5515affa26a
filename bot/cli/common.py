"""What every `patchpilot` command shares: the terminal, the user's errors, reaching Temporal, and
validating a rollout at the edge.

The command modules (`rollout_commands`, `server_commands`, `schedule_commands`, `demo`,
`config_check`) import from here, and `bot.cli` assembles them into the typer app, so no module
imports in a circle.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from rich.console import Console
from temporalio.client import Client

from activities.inventory import InventoryError, limit_warnings, load_inventory
from bot.rollouts import Rollouts
from bot.settings import Settings
from workflows.models import RolloutInput, describe_validation_error

T = TypeVar("T")

console = Console()
errors = Console(stderr=True)


class UserError(Exception):
    """A problem the user can fix; printed without a traceback, exit code 2."""


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run one command's async work to completion on a fresh event loop."""
    return asyncio.run(coroutine)


def split(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated option values as one list: ["a,b", "c"] -> ["a", "b", "c"]."""
    items: list[str] = []
    for value in values or []:
        items.extend(part.strip() for part in value.split(",") if part.strip())
    return items


async def connect(settings: Settings) -> Client:
    """A Temporal client for `settings`; `UserError` naming the address when it is unreachable."""
    from bot.temporal_config import TemporalConfigError, temporal_target
    from bot.worker import connect as connect_client

    try:
        target = temporal_target(settings)
        return await connect_client(settings)
    except TemporalConfigError as error:
        raise UserError(str(error)) from None
    except Exception as error:
        raise UserError(
            f"cannot reach Temporal at {target.address} (namespace {target.namespace}, "
            f"{target.describe()}): {error}. Set TEMPORAL_ADDRESS, or a temporal.toml profile."
        ) from None


async def rollouts(settings: Settings) -> Rollouts:
    """The rollout facade on a fresh client and the configured task queue."""
    return Rollouts(await connect(settings), settings.task_queue)


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in `path` (an --input file); `UserError` when unreadable or not an object."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UserError(f"--input {path}: {error}") from None
    if not isinstance(raw, dict):
        raise UserError(f"--input {path}: expected a JSON object")
    return raw


def build_rollout(raw: dict[str, Any], settings: Settings) -> RolloutInput:
    """Validate at the edge: the model's rules (a `vaultAddress` only among the Vault addresses
    the worker trusts, `Settings.trusted_vault_addresses`), then the clusters against the inventory.

    Raises `UserError` listing every invalid field, or the clusters the inventory does not know.
    """
    try:
        rollout = RolloutInput.at_edge(
            raw,
            payload_encryption=settings.payload_codec() is not None,
            trusted_vault_addresses=settings.trusted_vault_addresses(),
        )
    except ValidationError as error:
        raise UserError("invalid rollout:\n" + describe_validation_error(error)) from None
    if settings.inventory is not None:
        try:
            clusters = load_inventory(settings.inventory)
        except InventoryError as error:
            raise UserError(str(error)) from None
        unknown = [name for name in rollout.target_clusters if name not in clusters]
        if unknown:
            raise UserError(
                f"targetClusters: {', '.join(unknown)} not in the inventory {settings.inventory} "
                f"(known: {', '.join(sorted(clusters)) or 'none'})"
            )
        if rollout.host_pattern is not None:
            check_limit(settings.inventory, rollout.target_clusters, rollout.host_pattern)
    return rollout


def check_limit(inventory: Path, clusters: list[str], pattern: str) -> None:
    """`UserError` naming hostPattern when it selects no host of one of `clusters`."""
    try:
        selected = load_inventory(inventory, pattern)
    except InventoryError as error:
        raise UserError(f"hostPattern: {error}") from None
    empty = [name for name in clusters if not selected.get(name)]
    if empty:
        said = "; ".join(limit_warnings(inventory, pattern))
        raise UserError(
            f"hostPattern: {pattern!r} selects no host of {', '.join(empty)} in the inventory"
            + (f" (Ansible: {said})" if said else "")
        )
