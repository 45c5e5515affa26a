"""A rollout's dry run: every host's preconditions, pending updates and reboot need, found with
read-only commands; nothing on any host is changed, so it needs no approval."""

from __future__ import annotations

import asyncio

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows import names
    from workflows.models import HostInspection, HostJob, HostStepInput, HostTarget, Phase
    from workflows.planning import resolve_amount, waves
    from workflows.policies import INSPECT_COMMANDS, INSPECT_STEP, TRANSIENT_RETRY, failure_reason
    from workflows.state import RolloutState


async def inspect_hosts(state: RolloutState, job: HostJob, max_concurrency: int | str) -> None:
    """Inspect every host, `max_concurrency` at a time, and say what a rollout would meet."""
    progress = state.progress
    progress.phase = Phase.DRY_RUN
    for cluster in progress.clusters:
        targets = state.targets[cluster.name]
        size = resolve_amount(max_concurrency, len(targets), at_least=1)
        for wave in waves(targets, size):
            for host in wave:
                state.mark_started(host.name, workflow.now(), step="inspect")
            found = await asyncio.gather(*(_inspect(job, host) for host in wave))
            for inspection in found:
                state.record_inspection(inspection, workflow.now())
    found = state.inspections
    refused = sum(1 for i in found if not i.preconditions_ok)
    reboots = sum(1 for i in found if i.reboot_required)
    updates = sum(len(i.pending_updates) for i in found)
    progress.phase = Phase.DRY_RUN_DONE
    progress.message = (
        f"dry run: {len(found)} hosts inspected, {updates} pending updates, "
        f"{reboots} would need a reboot, {refused} would be refused by preconditions; "
        "nothing was changed"
    )


async def _inspect(job: HostJob, host: HostTarget) -> HostInspection:
    try:
        return await workflow.execute_activity(
            names.INSPECT_HOST,
            HostStepInput(job=job, host=host, timeout_seconds=INSPECT_COMMANDS.total_seconds()),
            result_type=HostInspection,
            start_to_close_timeout=INSPECT_STEP,
            retry_policy=TRANSIENT_RETRY,
        )
    except ActivityError as error:
        return HostInspection(
            hostname=host.name,
            cluster=host.cluster,
            preconditions_ok=False,
            reason=failure_reason(error),
        )
