"""The Temporal worker: SystemPatchWorkflow, HostPatchWorkflow and every activity."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.host_steps import HostStepActivities
from activities.inventory import InventoryActivities
from activities.notify import NotificationActivities, Notifier, build_notifiers
from activities.policy import load_policy
from activities.prometheus import PrometheusActivities
from activities.ssh import SshRunner
from activities.trust import Trust
from activities.vault import VaultCredentialSource
from activities.vault_ssh import CertSettings
from bot.codec import data_converter
from bot.settings import Settings
from bot.temporal_config import connect_client
from workflows.host_patch import HostPatchWorkflow
from workflows.sandbox import workflow_runner
from workflows.system_patch import SystemPatchWorkflow

WORKFLOWS: Sequence[type] = (SystemPatchWorkflow, HostPatchWorkflow)
HEARTBEAT_THROTTLE = timedelta(seconds=4)


async def connect(settings: Settings) -> Client:
    """The one way PatchPilot makes a Temporal client: the SDK's environment configuration
    (temporal.toml profile, TEMPORAL_* variables: TLS, mTLS, API key) with PatchPilot's address
    and namespace settings over it (`bot.temporal_config`), and the payload codec.

    Raises TemporalConfigError for a configuration that cannot be read, the SDK's errors when
    Temporal cannot be reached."""
    return await connect_client(settings, data_converter(settings.payload_codec()))


def certificate_settings(settings: Settings) -> CertSettings | None:
    """Certificate mode's settings (PATCHPILOT_SSH_AUTH=certificate), else None: keys from KV."""
    if settings.ssh_auth != "certificate":
        return None
    return CertSettings(
        mount=settings.vault_ssh_mount,
        role=settings.vault_ssh_role,
        ttl_seconds=settings.vault_ssh_cert_ttl,
        default_user=settings.vault_ssh_default_user,
    )


class WorkerParts:
    """The worker's long-lived dependencies, kept together so tests and benches can inspect them."""

    def __init__(self, settings: Settings, extra_notifiers: Sequence[Notifier] = ()) -> None:
        self.vault = VaultCredentialSource(
            settings.vault_addr,
            token=settings.vault_token.get_secret_value() if settings.vault_token else None,
            role_id=settings.vault_role_id,
            secret_id=(
                settings.vault_secret_id.get_secret_value() if settings.vault_secret_id else None
            ),
            kv_mount=settings.vault_kv_mount,
            cache_ttl_seconds=settings.vault_cache_ttl,
            trusted_addresses=settings.trusted_vault_addresses(),
            rollout_policies=settings.rollout_token_policies(),
            rollout_ttl_seconds=settings.vault_rollout_token_ttl,
            rollout_token_role=settings.vault_rollout_token_role,
            handoff_path=settings.vault_rollout_token_path,
            certificates=certificate_settings(settings),
        )
        self.ssh = SshRunner(settings.known_hosts, connect_timeout=settings.ssh_connect_timeout)
        self.inventory = InventoryActivities(settings.inventory)
        # None: development mode (--no-policy); the CLI refuses to run a worker so by accident.
        self.policy = load_policy(settings.policy) if settings.policy else None
        self.trust = Trust(self.policy, self.inventory)
        self.host_steps = HostStepActivities(self.vault, self.ssh, self.trust)
        self.notifiers = build_notifiers(settings, extra_notifiers)
        self.notifications = NotificationActivities(self.notifiers, routes=settings.notify_routes)
        # The gate activities exist only with a Prometheus to ask: a rollout that asks for a
        # gate elsewhere stops saying so (workflows/gating.py) instead of passing unchecked.
        self.prometheus = (
            PrometheusActivities(settings.prometheus_url) if settings.prometheus_url else None
        )

    def activities(self) -> list[Any]:
        return [
            self.inventory.get_cluster_hosts,
            self.vault.vault_preflight,
            self.vault.vault_cleanup,
            *self.host_steps.all(),
            *self.trust.all(),
            *self.notifications.all(),
            *(self.prometheus.all() if self.prometheus else []),
        ]

    async def close(self) -> None:
        """At shutdown: revoke the Vault tokens this worker made or logged in with."""
        await self.vault.close()


class PatchPilotWorker(Worker):
    """A Temporal worker that closes its parts (revokes its Vault tokens) when it stops, however
    it runs: `run()`, or `async with` (which runs `run()` too)."""

    def __init__(self, client: Client, parts: WorkerParts, **options: Any) -> None:
        super().__init__(client, **options)
        self.parts = parts

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self.parts.close()


def build_worker(
    client: Client, settings: Settings, parts: WorkerParts | None = None, **options: Any
) -> Worker:
    """The PatchPilot worker on `settings.task_queue`: every workflow and `parts`' activities,
    the workflow cache `settings.max_cached_workflows`, heartbeats throttled to at most
    HEARTBEAT_THROTTLE; `options` go to temporalio's `Worker` (and win)."""
    parts = parts or WorkerParts(settings)
    options.setdefault("workflow_runner", workflow_runner())  # a bench may try another
    options.setdefault("max_cached_workflows", settings.max_cached_workflows)
    # The SDK holds heartbeats back for 0.8 x the heartbeat timeout (temporalio Worker docs), so
    # with HEARTBEAT 10 s the server heard from a step every 8 s: 2 s of slack before a busy
    # worker's step timed out as if the worker were dead. Throttled to 4 s, the server hears
    # every heartbeat a step sends (every activities.attempts.HEARTBEAT_SECONDS): 5 s of slack.
    options.setdefault("max_heartbeat_throttle_interval", HEARTBEAT_THROTTLE)
    return PatchPilotWorker(
        client,
        parts,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=parts.activities(),
        **options,
    )
