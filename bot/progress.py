"""A rollout's progress as a reader wants it: the rollout's `progress` query, with each running
host's current step filled in from that host workflow's own `host_progress` query.

The rollout workflow no longer hears of every step (a signal per step cost both workflows a
workflow task and filled the rollout's history), so readers ask the hosts in flight directly.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from workflows.host_patch import host_workflow_id
from workflows.models import HostProgress, HostState, HostStepReport, RolloutProgress

log = logging.getLogger("patchpilot.progress")

# The hosts in flight are at most maxConcurrency (≤ 1000); ask at most this many at once.
MAX_PARALLEL_QUERIES = 50


async def query_progress(client: Any, rollout_id: str, *, steps: bool = True) -> RolloutProgress:
    """The rollout's progress; `steps` also asks every running host which step it is on."""
    progress: RolloutProgress = await client.get_workflow_handle(rollout_id).query(
        "progress", result_type=RolloutProgress
    )
    if steps:
        await fill_running_steps(client, progress)
    return progress


async def fill_running_steps(client: Any, progress: RolloutProgress) -> None:
    running = [h for h in progress.hosts() if h.state == HostState.RUNNING and h.step is None]
    if not running:
        return
    gate = asyncio.Semaphore(MAX_PARALLEL_QUERIES)

    async def ask(host: HostProgress) -> None:
        async with gate:
            try:
                report: HostStepReport = await client.get_workflow_handle(
                    host_workflow_id(host.name)
                ).query("host_progress", result_type=HostStepReport)
            except Exception as error:  # a host that just finished, or a worker restarting
                log.debug("no step for %s: %s", host.name, error)
                return
        if host.state == HostState.RUNNING and report.hostname == host.name:
            host.step = report.step
            host.in_maintenance = report.in_maintenance

    await asyncio.gather(*(ask(host) for host in running))
