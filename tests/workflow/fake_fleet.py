"""Stand-in activities for workflow-logic tests: they record what the workflow asked for.

Only the workflows' decisions are under test here; the real activities run against real sshd hosts,
OpenBao and SMTP in tests/integration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows import names
from workflows.host_notices import HostNotices
from workflows.models import (
    BootWait,
    ClusterHosts,
    ClusterHostsRequest,
    HostCommands,
    HostInspection,
    HostStepInput,
    HostTarget,
    RebootRequest,
    RebootResult,
    RolloutNotice,
    StepResult,
    VaultCleanupInput,
    VaultPreflightInput,
    VaultPreflightResult,
)
from workflows.reboots import RebootLook


@dataclass
class FakeFleet:
    clusters: dict[str, list[str]]
    fail: dict[tuple[str, str], str] = field(default_factory=dict)  # (host, activity) -> message
    block: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (host, activity) in order
    inputs: list[tuple[str, HostStepInput]] = field(default_factory=list)  # (activity, input)
    notices: list[tuple[str, RolloutNotice]] = field(default_factory=list)
    started: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    needs_reboot: set[str] = field(default_factory=set)
    # (host, activity) whose first look (HostStepInput.first_look) answers "not yet".
    not_ready: set[tuple[str, str]] = field(default_factory=set)
    # The accessor of every VaultCleanupActivity call (the preflight's fake is "fake-accessor").
    revoked: list[str | None] = field(default_factory=list)
    # What PlanHostNoticesActivity answers: which host notices a channel would send.
    host_notices: HostNotices = field(default_factory=HostNotices)
    # Hosts whose inventory gives them commands of their own (patchpilot_<field> vars).
    commands: dict[str, HostCommands] = field(default_factory=dict)
    # Whether the update brings back the host's reboot answer, as the real one does after a run
    # that succeeded (StepResult.reboot_look): its boot id and whether it is in needs_reboot.
    looks: bool = False

    def host_calls(self, activity_name: str) -> list[str]:
        return [host for host, name in self.calls if name == activity_name]

    def activities(self) -> list[Callable[..., Any]]:
        def host_step(name: str):
            @activity.defn(name=name)
            async def run(step: HostStepInput) -> StepResult:
                key = (step.host.name, name)
                self.calls.append(key)
                self.inputs.append((name, step))
                self.started.setdefault(key, asyncio.Event()).set()
                if key in self.block:
                    await self.block[key].wait()
                if key in self.fail:
                    raise ApplicationError(self.fail[key], non_retryable=True)
                if step.first_look and key in self.not_ready:
                    return StepResult(ok=False, detail="fake: not yet")
                if (
                    name == names.PERFORM_UPDATE
                    and self.looks
                    and step.job.reboot_policy != "always"
                ):
                    pending = step.host.name in self.needs_reboot
                    look = RebootLook(boot_id="boot-1", reboot_required=pending)
                    return StepResult(detail="fake", reboot_look=look)
                return StepResult(detail="fake")

            return run

        def notify(name: str):
            @activity.defn(name=name)
            async def run(notice: RolloutNotice) -> bool:
                key = (notice.hostname or "", name)
                self.started.setdefault(key, asyncio.Event()).set()
                if key in self.block:
                    await self.block[key].wait()
                self.notices.append((name, notice))
                return True

            return run

        @activity.defn(name=names.GET_CLUSTER_HOSTS)
        async def get_cluster_hosts(request: ClusterHostsRequest) -> ClusterHosts:
            if request.target_cluster not in self.clusters:
                raise ApplicationError(
                    f"cluster {request.target_cluster!r} is not in the inventory",
                    non_retryable=True,
                )
            return ClusterHosts(
                cluster=request.target_cluster,
                hosts=[
                    HostTarget(
                        name=host,
                        cluster=request.target_cluster,
                        address=f"{host}.fleet.test",
                        commands=self.commands.get(host, HostCommands()),
                    )
                    for host in self.clusters[request.target_cluster]
                ],
            )

        @activity.defn(name=names.REBOOT_HOST)
        async def reboot_host(request: RebootRequest) -> RebootResult:
            self.calls.append((request.step.host.name, names.REBOOT_HOST))
            reboot = request.policy == "always" or request.step.host.name in self.needs_reboot
            if request.policy == "never":
                reboot = False
            return RebootResult(rebooted=reboot, boot_id_before="boot-1", reason="fake")

        @activity.defn(name=names.WAIT_FOR_HOST_BOOT)
        async def wait_for_host_boot(wait: BootWait) -> StepResult:
            self.calls.append((wait.step.host.name, names.WAIT_FOR_HOST_BOOT))
            return StepResult(detail="back")

        @activity.defn(name=names.INSPECT_HOST)
        async def inspect_host(step: HostStepInput) -> HostInspection:
            self.calls.append((step.host.name, names.INSPECT_HOST))
            return HostInspection(
                hostname=step.host.name,
                cluster=step.host.cluster,
                preconditions_ok=True,
                pending_updates=["openssl/stable 3.0.15 amd64"],
                reboot_required=step.host.name in self.needs_reboot,
            )

        @activity.defn(name=names.PLAN_HOST_NOTICES)
        async def plan_host_notices(notice: RolloutNotice) -> HostNotices:
            return self.host_notices

        @activity.defn(name=names.VAULT_CLIENT)
        async def vault_preflight(request: VaultPreflightInput) -> VaultPreflightResult:
            return VaultPreflightResult(detail="fake vault ok", token_accessor="fake-accessor")

        @activity.defn(name=names.VAULT_CLEANUP)
        async def vault_cleanup(request: VaultCleanupInput) -> StepResult:
            self.revoked.append(request.token_accessor)
            return StepResult(detail="fake revoke")

        host_names = [
            names.CHECK_HOST_PRECONDITIONS,
            names.RUN_PRE_DOWNTIME_SCRIPTS,
            names.SET_MAINTENANCE_MODE,
            names.STOP_SERVICES,
            names.WAIT_FOR_WORKLOAD_DRAIN,
            names.RUN_PRE_UPDATE_SCRIPTS,
            names.PERFORM_UPDATE,
            names.START_SERVICES,
            names.RUN_POST_UPDATE_SCRIPTS,
            names.CHECK_SERVICE_HEALTH,
            names.CLEAR_MAINTENANCE_MODE,
        ]
        notify_names = [
            names.SEND_APPROVAL_REQUEST,
            names.SEND_START_NOTIFICATION,
            names.SEND_SUCCESS_NOTIFICATION,
            names.SEND_FAILURE_ALERT,
            names.SEND_ROLLOUT_SUMMARY,
            names.SEND_WAVE_NOTIFICATION,
        ]
        return [
            get_cluster_hosts,
            vault_preflight,
            vault_cleanup,
            reboot_host,
            wait_for_host_boot,
            inspect_host,
            plan_host_notices,
            *(host_step(name) for name in host_names),
            *(notify(name) for name in notify_names),
            # The worker's real approval rules, in development mode (no policy file).
            *trust_activities(),
        ]


def trust_activities() -> list[Callable[..., Any]]:
    # Imported here: test modules that define workflows import this module inside the sandbox.
    from activities.inventory import InventoryActivities
    from activities.trust import Trust

    return Trust(None, InventoryActivities(None)).all()  # type: ignore[return-value]
