"""The Temporal worker: SystemPatchWorkflow, HostPatchWorkflow and every activity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities.host_steps import HostStepActivities
from activities.inventory import InventoryActivities
from activities.notify import NotificationActivities, Notifier, build_notifiers
from activities.ssh import SshRunner
from activities.vault import VaultCredentialSource
from bot.codec import data_converter
from bot.settings import Settings
from workflows.host_patch import HostPatchWorkflow
from workflows.sandbox import workflow_runner
from workflows.system_patch import SystemPatchWorkflow

WORKFLOWS: Sequence[type] = (SystemPatchWorkflow, HostPatchWorkflow)


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=data_converter(settings.payload_codec()),
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
        )
        self.ssh = SshRunner(settings.known_hosts, connect_timeout=settings.ssh_connect_timeout)
        self.inventory = InventoryActivities(settings.inventory)
        self.host_steps = HostStepActivities(self.vault, self.ssh)
        self.notifiers = build_notifiers(settings, extra_notifiers)
        self.notifications = NotificationActivities(self.notifiers)

    def activities(self) -> list[Any]:
        return [
            self.inventory.get_cluster_hosts,
            self.vault.vault_preflight,
            *self.host_steps.all(),
            *self.notifications.all(),
        ]


def build_worker(
    client: Client, settings: Settings, parts: WorkerParts | None = None, **options: Any
) -> Worker:
    parts = parts or WorkerParts(settings)
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=list(WORKFLOWS),
        activities=parts.activities(),
        workflow_runner=workflow_runner(),
        **options,
    )
