"""Reading the package reports a notification shows, from Temporal, inside the notification
activity (`temporalio.activity.client()`, as activities/notify/links.py reads a rollout's input).

No workflow carries the reports to its notices (a 10,000-host summary must stay far under
Temporal's 2 MB payload limit), so they are read where they are kept:
- a host's success: the update step's result in the calling host workflow's own history (the host
  workflow is still running: it is waiting for this very activity);
- the summary: each host's ended host workflow (`patch-host-<host>`, checked to be a child of
  this rollout), at most READ_HOSTS of them, READ_PARALLEL at a time.

A report is a nicety of the notification: whatever cannot be read (not in an activity, history
unreadable, the host workflow since reused by a later rollout) is left out and logged, never an
error of the activity; the channels then show the summary's own one line per host.
"""

from __future__ import annotations

import asyncio
import logging

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus

from workflows import names
from workflows.models import HostPatchResult, RolloutNotice, StepResult
from workflows.packages import PackageReport
from workflows.policies import host_workflow_id

log = logging.getLogger("patchpilot.notify")

READ_HOSTS = 300  # host workflows read for one summary; beyond, the summary's own lines
READ_PARALLEL = 16
# All of one summary's reading, at most: the activity has 60 s (workflows/policies.LOOKUP) for
# the reading and every channel's delivery. What was read by then is shown.
READ_SECONDS = 15.0


async def update_report(client: Client, workflow_id: str, run_id: str) -> PackageReport | None:
    """The package report of the update step in the history of host workflow run `run_id`
    (None when the update has not completed there or gave none)."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    updates: set[int] = set()
    found = None
    async for event in handle.fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name == names.PERFORM_UPDATE:
                updates.add(event.event_id)
        elif event.HasField("activity_task_completed_event_attributes"):
            completed = event.activity_task_completed_event_attributes
            if completed.scheduled_event_id in updates:
                found = completed.result
    if found is None or not found.payloads:
        return None
    [result] = await client.data_converter.decode(found.payloads, [StepResult])
    return result.packages


async def ended_report(client: Client, rollout_id: str, hostname: str) -> PackageReport | None:
    """`hostname`'s report from its ended host workflow of `rollout_id` (None: still running,
    none, or the workflow id is now another rollout's)."""
    handle = client.get_workflow_handle(host_workflow_id(hostname))
    described = await handle.describe()
    if described.parent_id != rollout_id or described.status != WorkflowExecutionStatus.COMPLETED:
        return None
    ended = client.get_workflow_handle(
        described.id, run_id=described.run_id, result_type=HostPatchResult
    )
    return (await ended.result()).packages


async def read_reports(notice: RolloutNotice, event: str) -> dict[str, PackageReport]:
    """host -> package report for `event` ("host-success", "summary"; {} for any other, for a
    dry run, or outside a notification activity)."""
    try:
        client = activity.client()
        info = activity.info()
    except RuntimeError:  # not in an activity (a test building messages): nothing to read
        return {}
    try:
        if event == "host-success" and notice.hostname:
            report = await update_report(client, info.workflow_id or "", info.workflow_run_id or "")
            return {notice.hostname: report} if report is not None else {}
        if event == "summary" and notice.summary is not None and notice.summary.dry_run is None:
            hosts = [h.name for h in notice.summary.hosts if h.state.value in ("done", "failed")]
            found: dict[str, PackageReport] = {}
            try:
                await asyncio.wait_for(
                    _ended_reports(client, notice.rollout_id, hosts[:READ_HOSTS], found),
                    READ_SECONDS,
                )
            except TimeoutError:
                log.warning(
                    "package reports of %s: %d of %d read in %.0f s; the rest not shown",
                    notice.rollout_id,
                    len(found),
                    len(hosts),
                    READ_SECONDS,
                )
            return {host: found[host] for host in hosts if host in found}
    except Exception as error:  # a nicety: the notification goes out without them
        log.warning("package reports of %s (%s) not read: %s", notice.rollout_id, event, error)
    return {}


async def _ended_reports(
    client: Client, rollout_id: str, hosts: list[str], found: dict[str, PackageReport]
) -> None:
    """Fill `found` (host -> report) with the reports of `hosts`, READ_PARALLEL at a time."""
    gate = asyncio.Semaphore(READ_PARALLEL)

    async def one(hostname: str) -> None:
        async with gate:
            try:
                report = await ended_report(client, rollout_id, hostname)
            except Exception as error:  # this host's report only
                log.info("package report of %s in %s not read: %s", hostname, rollout_id, error)
                return
            if report is not None:
                found[hostname] = report

    await asyncio.gather(*(one(host) for host in hosts))
