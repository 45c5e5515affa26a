"""Event counts of a finished rollout: every run of the rollout workflow (following continue-as-new)
and a sample of its per-host child workflows."""

from __future__ import annotations

import asyncio
import math
from collections import Counter, defaultdict
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

# Child ends the rollout hears of (a child that failed to start never counted as in flight).
_CHILD_ENDS = (
    "child_workflow_execution_completed",
    "child_workflow_execution_failed",
    "child_workflow_execution_canceled",
    "child_workflow_execution_terminated",
    "child_workflow_execution_timed_out",
)
WARN_EVENTS = 10_240  # Temporal's history-size warning threshold (events per run)
LIMIT_EVENTS = 51_200  # the hard limit: a run is terminated there


def _type_name(event_type: int) -> str:
    return EventType.Name(event_type).removeprefix("EVENT_TYPE_")  # type: ignore[arg-type]


async def rollout_events(
    client: Client, workflow_id: str, run_id: str | None = None, child_sample: int = 20
) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    children: list[tuple[str, str]] = []
    parent_events: list[Any] = []
    # When the rollout asked for each child, and when it heard that the child had ended.
    initiated: dict[str, float] = {}
    heard_done: dict[str, float] = {}
    current: str | None = run_id
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=current).fetch_history()
        parent_events.append(history.events)
        types = Counter(_type_name(e.event_type) for e in history.events)
        runs.append({"run_id": current, "events": len(history.events), "by_type": dict(types)})
        next_run: str | None = None
        for event in history.events:
            t = event.event_time.ToNanoseconds() / 1e9
            if event.HasField("start_child_workflow_execution_initiated_event_attributes"):
                asked = event.start_child_workflow_execution_initiated_event_attributes
                initiated[asked.workflow_id] = t
            elif event.HasField("child_workflow_execution_completed_event_attributes"):
                done = event.child_workflow_execution_completed_event_attributes
                heard_done[done.workflow_execution.workflow_id] = t
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
        times = time_breakdown(h.events)
        if h.events and wid in initiated and wid in heard_done:
            # Seconds between the rollout asking and the child's first event, and between the
            # child's last event and the rollout hearing of it.
            times["start_lag"] = h.events[0].event_time.ToNanoseconds() / 1e9 - initiated[wid]
            times["end_lag"] = heard_done[wid] - h.events[-1].event_time.ToNanoseconds() / 1e9
        return len(h.events), types, times

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
    child_timed: Counter[str] = Counter()  # children with each figure (lags: seen to end)
    for _, types, times in sampled:
        child_types.update(types)
        child_times.update(times)
        child_timed.update(times.keys())
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
        "parent_flow": parent_flow(parent_events),
        # Mean seconds per host workflow, by where the time went (see time_breakdown).
        "child_seconds_mean": {k: v / child_timed[k] for k, v in child_times.items()}
        if sampled
        else {},
    }


def parent_flow(runs: list[Any]) -> dict[str, float]:
    """How well the rollout kept its hosts in flight, from its own runs' histories (seconds):

    in_flight_mean (children between their start being initiated and their completion, time
    weighted over the runs' spans), refill_mean / refill_p90 (a child's completion -> the next
    child's start initiated: how long a freed slot stays empty), initiated_to_started_mean,
    workflow_task_queue_mean / workflow_task_run_mean (the rollout's own turns) and their count.
    """
    refills: list[float] = []
    to_started: list[float] = []
    task_seconds: Counter[str] = Counter()
    started_tasks = completed_tasks = 0
    weighted = span = 0.0
    for events in runs:
        task_seconds.update(time_breakdown(events))
        at: dict[int, float] = {}
        in_flight = 0
        last: float | None = None
        pending_refills: list[float] = []
        for e in events:
            t = e.event_time.ToNanoseconds() / 1e9
            at[e.event_id] = t
            if last is not None:  # from the run's first child on (not the approval's wait)
                weighted += in_flight * (t - last)
                span += t - last
                last = t
            if e.HasField("start_child_workflow_execution_initiated_event_attributes"):
                last = t if last is None else last
                in_flight += 1
                if pending_refills:
                    refills.append(t - pending_refills.pop(0))
            elif e.HasField("child_workflow_execution_started_event_attributes"):
                initiated = e.child_workflow_execution_started_event_attributes.initiated_event_id
                to_started.append(t - at.get(initiated, t))
            elif any(e.HasField(f"{kind}_event_attributes") for kind in _CHILD_ENDS):
                in_flight -= 1
                pending_refills.append(t)
            elif e.HasField("workflow_task_started_event_attributes"):
                started_tasks += 1
            elif e.HasField("workflow_task_completed_event_attributes"):
                completed_tasks += 1

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs) if xs else 0.0

    refills.sort()
    return {
        "in_flight_mean": weighted / span if span else 0.0,
        "refill_mean": mean(refills),
        "refill_p90": refills[math.ceil(len(refills) * 0.9) - 1] if refills else 0.0,
        "initiated_to_started_mean": mean(to_started),
        "workflow_task_queue_mean": task_seconds["workflow_task_queue"] / (started_tasks or 1),
        "workflow_task_run_mean": task_seconds["workflow_task_run"] / (completed_tasks or 1),
        "workflow_tasks": float(completed_tasks),
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
