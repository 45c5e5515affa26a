"""Telling people: the notices both workflows send, their wording, and `send_notice`, which every
notification goes through."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from workflows import names
    from workflows.host_notices import HostNotices
    from workflows.local_activity import run_local
    from workflows.models import (
        HostJob,
        HostPatchResult,
        HostTarget,
        RolloutInput,
        RolloutNotice,
    )
    from workflows.policies import LOOKUP, NOTIFY_RETRY, raise_if_cancelled

# A wave notice names this many hosts and counts the rest.
LISTED_HOSTS = 20


async def send_notice(activity_name: str, notice: RolloutNotice) -> None:
    """Run a notification activity; a lost e-mail is worth a log line, never a failed rollout.

    A normal activity, not a local one: the Slack notifier waits inside the activity for the
    channel's rate budget (bot/slack/pacing.py), and a local activity that waits holds the
    workflow task open, so the rollout's `progress` query (which the card reads) goes stale and
    card updates bunch up."""
    await notice_sent(activity_name, start_notice(activity_name, notice))


def start_notice(activity_name: str, notice: RolloutNotice) -> workflow.ActivityHandle[bool]:
    """Schedule a notification activity without waiting for it (a host's start notice: the
    host goes on while Slack's pacing holds the message); `notice_sent` awaits it."""
    return workflow.start_activity(
        activity_name,
        notice,
        result_type=bool,
        start_to_close_timeout=LOOKUP,
        retry_policy=NOTIFY_RETRY,
    )


async def notice_sent(activity_name: str, handle: workflow.ActivityHandle[bool]) -> None:
    """Wait for a notification started by `start_notice`; its failure is a log line. Raises
    asyncio.CancelledError when the workflow was cancelled while it waited (the SDK hands a
    cancel to the awaited activity, whose error would otherwise swallow it: a cancel during a
    wave notice let the next wave start)."""
    try:
        await handle
    except ActivityError as error:
        raise_if_cancelled(error)
        workflow.logger.warning("notification %s failed: %s", activity_name, error)


def rollout_notice(
    rollout: RolloutInput,
    rollout_id: str,
    hosts_by_cluster: dict[str, list[str]] | None = None,
    **extra: object,
) -> RolloutNotice:
    """A notice about the whole rollout; only the approval request and the summary list the hosts
    and the scripts (10,000 names in every notice would be 100 kB of history each). `digest`
    (in `extra`) is what the approvals sign, from the workflow's progress."""
    return RolloutNotice.model_validate(
        {
            "rollout_id": rollout_id,
            "requester_email": rollout.requester_email,
            "approver_emails": rollout.approver_emails,
            "target_clusters": rollout.target_clusters,
            "hosts_by_cluster": hosts_by_cluster or {},
            "host_pattern": rollout.host_pattern if hosts_by_cluster else None,
            "pilot_host_count": rollout.pilot_host_count,
            "update_command": rollout.update_command,
            "update_profile": rollout.update_profile,
            "repair_interrupted_dpkg": rollout.repair_interrupted_dpkg,
            "scripts": _scripts(rollout) if hosts_by_cluster else {},
            "service_list": rollout.service_list,
            "slack_channel": rollout.slack_channel,
            "slack_thread_ts": rollout.slack_thread_ts,
            **extra,
        }
    )


def _scripts(rollout: RolloutInput) -> dict[str, list[str]]:
    """Every script of `rollout` by its field name, kinds without scripts left out."""
    kinds = {
        "preDowntimeScripts": rollout.pre_downtime_scripts,
        "preUpdateScripts": rollout.pre_update_scripts,
        "postUpdateScripts": rollout.post_update_scripts,
    }
    return {kind: list(scripts) for kind, scripts in kinds.items() if scripts}


async def plan_host_notices(job: HostJob, cluster: str) -> HostNotices:
    """Which of a host's notices a channel of the worker would send (routes, Slack without a
    thread, e-mail without recipients: `activities.notify.messages.wanted`), asked once for the
    rollout run as a local activity: two notification activities per host that no channel sends
    cost the worker and Temporal about a third of a host's orchestration (issue 16). A worker
    whose channels change mid-rollout sends what this run found; failure alerts, wave notices
    and the summary are always sent. Both True when the question cannot be answered."""
    sample = RolloutNotice(
        rollout_id=job.rollout_id,
        requester_email=job.requester_email,
        approver_emails=job.approver_emails,
        cluster=cluster,
        slack_channel=job.slack_channel,
        slack_thread_ts=job.slack_thread_ts,
    )
    try:
        return await run_local(
            names.PLAN_HOST_NOTICES,
            sample,
            result_type=HostNotices,
            start_to_close_timeout=LOOKUP,
            retry_policy=NOTIFY_RETRY,
        )
    except ActivityError as error:
        raise_if_cancelled(error)
        workflow.logger.warning("could not ask which host notices to send: %s", error)
        return HostNotices()


def host_notice(job: HostJob, host: HostTarget) -> RolloutNotice:
    """A notice about one host (its start and its success)."""
    return RolloutNotice(
        rollout_id=job.rollout_id,
        requester_email=job.requester_email,
        approver_emails=job.approver_emails,
        hostname=host.name,
        cluster=host.cluster,
        slack_channel=job.slack_channel,
        slack_thread_ts=job.slack_thread_ts,
    )


def failure_details(cluster: str, result: HostPatchResult) -> str:
    """The failure alert's text: which host, which step, why, and whether it is in maintenance."""
    maintenance = {True: "in maintenance", False: "not in maintenance", None: "unknown"}
    return (
        f"host {result.hostname} (cluster {cluster}) failed at step {result.step}: "
        f"{result.failure_reason}. Maintenance mode: {maintenance[result.in_maintenance]}."
    )


def stop_reason(result: HostPatchResult, *, pilot: bool) -> str:
    return (
        f"{'pilot ' if pilot else ''}host {result.hostname} failed at step {result.step}: "
        f"{result.failure_reason}; the rollout stopped and no further host was touched"
    )


def listing(hosts: list[HostTarget], total: int) -> str:
    """'h1, h2 … and 80 more (82 of 90 left)': the hosts a wave notice is about."""
    shown = ", ".join(host.name for host in hosts[:LISTED_HOSTS])
    more = f" … and {len(hosts) - LISTED_HOSTS} more" if len(hosts) > LISTED_HOSTS else ""
    left = f" ({len(hosts)} of {total} left)" if len(hosts) < total else ""
    return f"{shown}{more}{left}"
