"""Event counts of a finished rollout: every run of the rollout workflow (following continue-as-new)
and a sample of its per-host child workflows."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

WARN_EVENTS = 10_240  # Temporal's history-size warning threshold (events per run)
LIMIT_EVENTS = 51_200  # the hard limit: a run is terminated there


def _type_name(event_type: int) -> str:
    return EventType.Name(event_type).removeprefix("EVENT_TYPE_")  # type: ignore[arg-type]


async def rollout_events(
    client: Client, workflow_id: str, run_id: str | None = None, child_sample: int = 20
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    children: list[tuple[str, str]] = []
    current: str | None = run_id
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=current).fetch_history()
        types = Counter(_type_name(e.event_type) for e in history.events)
        runs.append({"run_id": current, "events": len(history.events), "by_type": dict(types)})
        next_run: str | None = None
        for event in history.events:
            if event.HasField("child_workflow_execution_started_event_attributes"):
                started = event.child_workflow_execution_started_event_attributes
                children.append(
                    (started.workflow_execution.workflow_id, started.workflow_execution.run_id)
                )
            if event.HasField("workflow_execution_continued_as_new_event_attributes"):
                continued = event.workflow_execution_continued_as_new_event_attributes
                next_run = continued.new_execution_run_id
        if not next_run or len(runs) > 10_000:
            break
        current = next_run

    step = max(1, len(children) // child_sample) if children else 1
    sample = children[::step][:child_sample]

    async def child_events(wid: str, rid: str) -> tuple[int, Counter[str], dict[str, float]]:
        h = await client.get_workflow_handle(wid, run_id=rid).fetch_history()
        types = Counter(_type_name(e.event_type) for e in h.events)
        return len(h.events), types, time_breakdown(h.events)

    sampled = await asyncio.gather(*(child_events(w, r) for w, r in sample))
    timeline: list[str] = []
    if children:
        # The middle host's events with their offsets: where one host's time went, step by step.
        wid, rid = children[len(children) // 2]
        h = await client.get_workflow_handle(wid, run_id=rid).fetch_history()
        timeline = event_timeline(h.events)
    child_counts = [count for count, _, _ in sampled]
    child_types: Counter[str] = Counter()
    child_times: Counter[str] = Counter()
    for _, types, times in sampled:
        child_types.update(types)
        child_times.update(times)
    max_run = max(r["events"] for r in runs)
    return {
        "runs": len(runs),
        "events_per_run": [r["events"] for r in runs],
        "max_events_per_run": max_run,
        "parent_total_events": sum(r["events"] for r in runs),
        "parent_by_type": dict(sum((Counter(r["by_type"]) for r in runs), Counter())),
        "children": len(children),
        "child_events_max": max(child_counts) if child_counts else 0,
        "child_events_mean": (sum(child_counts) / len(child_counts)) if child_counts else 0,
        "child_by_type_mean": {k: v / len(sampled) for k, v in child_types.items()}
        if sampled
        else {},
        "over_warning": max_run > WARN_EVENTS,
        "child_timeline": timeline,
        # Mean seconds per host workflow, by where the time went (see time_breakdown).
        "child_seconds_mean": {k: v / len(sampled) for k, v in child_times.items()}
        if sampled
        else {},
    }


def time_breakdown(events: Any) -> dict[str, float]:
    """Where a workflow run's wall time went, from its event timestamps (seconds):

    activity_queue (scheduled -> picked up by a worker), activity_run (started -> completed: SSH
    handshake, Vault, commands), workflow_task_queue / workflow_task_run (the workflow code's own
    turns), signal (SignalExternalWorkflowExecution initiated -> delivered), total (first -> last).
    """
    at: dict[int, float] = {}
    out: defaultdict[str, float] = defaultdict(float)
    for e in events:
        t = e.event_time.ToNanoseconds() / 1e9
        at[e.event_id] = t
        if e.HasField("activity_task_started_event_attributes"):
            scheduled = e.activity_task_started_event_attributes.scheduled_event_id
            out["activity_queue"] += t - at.get(scheduled, t)
        elif e.HasField("activity_task_completed_event_attributes"):
            started = e.activity_task_completed_event_attributes.started_event_id
            out["activity_run"] += t - at.get(started, t)
        elif e.HasField("workflow_task_started_event_attributes"):
            scheduled = e.workflow_task_started_event_attributes.scheduled_event_id
            out["workflow_task_queue"] += t - at.get(scheduled, t)
        elif e.HasField("workflow_task_completed_event_attributes"):
            started = e.workflow_task_completed_event_attributes.started_event_id
            out["workflow_task_run"] += t - at.get(started, t)
        elif e.HasField("external_workflow_execution_signaled_event_attributes"):
            initiated = e.external_workflow_execution_signaled_event_attributes.initiated_event_id
            out["signal"] += t - at.get(initiated, t)
    if at:
        out["total"] = max(at.values()) - min(at.values())
    return dict(out)


def event_timeline(events: Any) -> list[str]:
    """One line per event: milliseconds since the first event, the step since the previous one,
    and the event type (with the activity or marker name where there is one)."""
    lines: list[str] = []
    first = previous = None
    for e in events:
        t = e.event_time.ToNanoseconds() / 1e6
        first = t if first is None else first
        name = ""
        if e.HasField("activity_task_scheduled_event_attributes"):
            name = e.activity_task_scheduled_event_attributes.activity_type.name
        elif e.HasField("marker_recorded_event_attributes"):
            name = e.marker_recorded_event_attributes.marker_name
        delta = 0.0 if previous is None else t - previous
        lines.append(
            f"{t - first:8.1f} ms  +{delta:6.1f}  {_type_name(e.event_type)} {name}".rstrip()
        )
        previous = t
    return lines
