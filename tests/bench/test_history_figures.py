"""bench/history.py's figures from a rollout's own events: how many hosts it kept in flight and
how long a freed slot stayed empty (the numbers bench/scale.py prints)."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent

from bench.history import parent_flow


def event(event_id: int, at: float, kind: str, **attributes: object) -> HistoryEvent:
    e = HistoryEvent(event_id=event_id, event_type=getattr(EventType, f"EVENT_TYPE_{kind.upper()}"))
    e.event_time.FromNanoseconds(int(at * 1e9))
    getattr(e, f"{kind}_event_attributes").MergeFrom(
        type(getattr(e, f"{kind}_event_attributes"))(**attributes)
    )
    return e


def test_hosts_in_flight_and_refills_are_read_from_the_rollouts_events() -> None:
    run = [
        event(1, 0.0, "workflow_execution_started"),  # the approval's wait is not counted
        event(2, 0.1, "workflow_task_scheduled"),
        event(3, 0.3, "workflow_task_started", scheduled_event_id=2),
        event(4, 1.3, "workflow_task_completed", started_event_id=3),
        event(102, 100.0, "start_child_workflow_execution_initiated", workflow_id="h1"),
        event(103, 100.0, "start_child_workflow_execution_initiated", workflow_id="h2"),
        event(104, 101.0, "child_workflow_execution_started", initiated_event_id=102),
        event(105, 103.0, "child_workflow_execution_started", initiated_event_id=103),
        event(106, 110.0, "child_workflow_execution_completed"),
        event(107, 111.0, "start_child_workflow_execution_initiated", workflow_id="h3"),
        event(108, 120.0, "child_workflow_execution_failed"),
        event(109, 124.0, "child_workflow_execution_terminated"),
    ]
    flow = parent_flow([run])
    # 2 hosts for 10 s, 1 for 1 s, 2 for 9 s, 1 for 4 s: 43 host-seconds over 24 s.
    assert abs(flow["in_flight_mean"] - 43 / 24) < 1e-9
    assert flow["refill_mean"] == 1.0 and flow["refill_p90"] == 1.0  # only h1's slot refilled
    assert flow["initiated_to_started_mean"] == 2.0
    # The rollout's own workflow task: 0.2 s queued, 1 s run.
    assert flow["workflow_tasks"] == 1.0
    assert abs(flow["workflow_task_queue_mean"] - 0.2) < 1e-6
    assert abs(flow["workflow_task_run_mean"] - 1.0) < 1e-6
