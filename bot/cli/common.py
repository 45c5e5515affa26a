"""What every `patchpilot` command shares: the terminal, the user's errors, reaching Temporal, and
validating a rollout at the edge.

The command modules (`rollout_commands`, `server_commands`, `schedule_commands`, `demo`,
`config_check`) import from here, and `bot.cli` assembles them into the typer app, so no module
imports in a circle.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from temporalio.client import Client

from activities.inventory import InventoryError, limit_refusal, load_clusters
from bot.policy_edge import (
    CLI_OPTIONS,
    PolicyRefusal,
    hosts_by_cluster,
    policy_refusal,
    profile_command,
)
from bot.rollouts import Rollouts
from bot.settings import Settings
from workflows.approval import NO_APPROVERS
from workflows.gate_rules import gate_refusal
from workflows.models import GateSettings, RolloutInput, describe_validation_error
from workflows.policy import Policy, PolicyError

T = TypeVar("T")

console = Console()
errors = Console(stderr=True)


class UserError(Exception):
    """A problem the user can fix; printed without a traceback, exit code 2."""


def stop_on_sigterm() -> None:
    """Let SIGTERM stop this process the way Ctrl-C does: outside the event loop as a
    KeyboardInterrupt; inside `run(..., sigterm=True)` by cancelling the main task first, as
    asyncio.run does for Ctrl-C (the worker stops polling and lets running tasks end, an
    embedded Temporal is stopped, the worker's own Vault token is revoked). systemd, Kubernetes
    and `docker stop` send SIGTERM, and a container's PID 1 ignores a signal without a handler."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def run(coroutine: Coroutine[Any, Any, T], *, sigterm: bool = False) -> T:
    """Run one command's async work to completion on a fresh event loop. With `sigterm`,
    SIGTERM cancels that work as Ctrl-C does, then raises KeyboardInterrupt."""
    if not sigterm:
        return asyncio.run(coroutine)

    async def stoppable() -> T:
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        assert main is not None
        stopped = asyncio.Event()

        def stop() -> None:
            if stopped.is_set():
                return  # stopping already: a second SIGTERM must not cancel the clean-up
            stopped.set()
            main.cancel()

        loop.add_signal_handler(signal.SIGTERM, stop)
        try:
            return await coroutine
        except asyncio.CancelledError:
            if stopped.is_set():
                raise KeyboardInterrupt from None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            stop_on_sigterm()  # remove_signal_handler leaves SIGTERM's default: kill at once

    return asyncio.run(stoppable())


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


def build_rollout(
    raw: dict[str, Any], settings: Settings, *, profile: str | None = None
) -> RolloutInput:
    """Validate at the edge: the model's rules (a `vaultAddress` only among the Vault addresses
    the worker trusts, `Settings.trusted_vault_addresses`), then the clusters against the
    inventory, then, under PATCHPILOT_POLICY, the policy (`_policy_check`). `profile` (--profile)
    takes updateCommand from the policy's `updateProfiles` of every target cluster.

    Raises `UserError` listing every invalid field, the clusters the inventory does not know, or
    why the policy refuses the rollout, naming the option.
    """
    policy = _load_policy(settings)
    if profile is not None:
        raw = _with_profile(raw, policy, profile)
    try:
        rollout = RolloutInput.at_edge(
            raw,
            payload_encryption=settings.payload_codec() is not None,
            trusted_vault_addresses=settings.trusted_vault_addresses(),
        )
    except ValidationError as error:
        raise UserError("invalid rollout:\n" + describe_validation_error(error)) from None
    if settings.policy is None and not rollout.dry_run and not rollout.approver_emails:
        raise UserError(f"invalid rollout:\n{NO_APPROVERS}")  # under a policy, it names them
    gates: dict[str, GateSettings] = {}
    if settings.inventory is not None:
        try:
            clusters = load_clusters(settings.inventory)
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
        gates = {name: cluster[2] for name, cluster in clusters.items()}
    refused = gate_refusal(rollout, gates, prometheus=settings.prometheus_url is not None)
    if refused:
        raise UserError(f"invalid rollout:\n{refused}")
    if policy is not None:
        _policy_check(policy, rollout, settings)
    return rollout


def _load_policy(settings: Settings) -> Policy | None:
    """The policy PATCHPILOT_POLICY names (None when unset); UserError when it is not valid."""
    from activities.policy import load_policy

    if settings.policy is None:
        return None
    try:
        return load_policy(settings.policy)
    except PolicyError as error:
        raise UserError(f"PATCHPILOT_POLICY: {error}") from None


def _with_profile(raw: dict[str, Any], policy: Policy | None, profile: str) -> dict[str, Any]:
    """`raw` with updateCommand and updateProfile from the policy's profile `profile` (the same
    command in every target cluster's entry); without a policy, PatchPilot's OS-family profiles
    (`security`, `full`: workflows/families.py). UserError with --update too, for a profile
    that does not exist, or when a cluster lacks the profile or the clusters' commands differ."""
    if raw.get("updateCommand"):
        raise UserError("--profile and --update both name the update command; give one")
    clusters = [str(c) for c in raw.get("targetClusters") or []]
    try:
        command = profile_command(policy, clusters, profile, CLI_OPTIONS)
    except PolicyRefusal as error:
        raise UserError(str(error)) from None
    return {**raw, "updateCommand": command, "updateProfile": profile}


def _policy_check(policy: Policy, rollout: RolloutInput, settings: Settings) -> None:
    """UserError naming the option when the policy refuses `rollout`: requester, free-form
    command or scripts, maxHosts (hosts counted from PATCHPILOT_INVENTORY), approvers."""
    if settings.inventory is None:
        raise UserError(
            "PATCHPILOT_INVENTORY is not set: under a policy the hosts of a rollout are counted "
            "from the inventory (maxHosts) before it starts"
        )
    try:
        hosts = hosts_by_cluster(settings.inventory, rollout)
        refused = policy_refusal(policy, rollout, hosts, CLI_OPTIONS)
    except PolicyRefusal as error:
        refused = str(error)
    if refused:
        raise UserError(f"refused by the approval policy:\n{refused}")


def check_limit(inventory: Path, clusters: list[str], pattern: str) -> None:
    """`UserError` naming hostPattern when it selects no host of one of `clusters`."""
    try:
        refused = limit_refusal(inventory, clusters, pattern)
    except InventoryError as error:
        raise UserError(f"hostPattern: {error}") from None
    if refused:
        raise UserError(f"hostPattern: {pattern!r} {refused}")


NoPolicy = Annotated[
    bool,
    typer.Option(
        "--no-policy",
        help="Development only: run without PATCHPILOT_POLICY (no approval rules, no signatures).",
    ),
]
NO_POLICY_WARNING = (
    "[bold red]--no-policy: DEVELOPMENT MODE.[/] No approval policy: anyone who can start a "
    "rollout may patch any cluster with any command, the rollout's own approverEmails approve "
    "it without a signature, and hosts run steps without checking approvals. Never use this "
    "with real hosts."
)


def require_policy(settings: Settings, no_policy: bool) -> None:
    """Refuse to serve without a readable policy unless `--no-policy` was given (then say loudly
    what that allows). Raises UserError naming PATCHPILOT_POLICY and the problem."""
    from activities.policy import load_policy
    from workflows.policy import PolicyError

    if settings.policy is None:
        if not no_policy:
            raise UserError(
                'PATCHPILOT_POLICY is not set: the approval policy (README "Trust model") '
                "says who may patch what and who must approve; give its path, or run with "
                "--no-policy for development"
            )
        console.print(NO_POLICY_WARNING)
        return
    try:
        load_policy(settings.policy)
    except PolicyError as error:
        raise UserError(f"PATCHPILOT_POLICY: {error}") from None


# What a person types after a flag that takes no value (`--dry-run yes`, as Slack's
# `repair-dpkg=yes`); read as the positional clusters they would become clusters to patch.
FLAG_VALUES = frozenset({"yes", "no", "true", "false", "on", "off", "y", "n"})


def positional_clusters(words: list[str] | None) -> list[str]:
    """The clusters given after the options (comma lists split). Raises UserError for a word
    that reads as a value given to a flag that takes none, naming the flags."""
    clusters = split(words)
    for word in clusters:
        if word.lower() in FLAG_VALUES:
            raise UserError(
                f"{word!r} is not a cluster here: --dry-run and --repair-interrupted-dpkg take "
                f"no value (give the flag alone to turn it on, leave it out for off); a cluster "
                f"named {word!r} is given with -c {word}"
            )
    return clusters
