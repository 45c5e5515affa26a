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
        event(2, 100.0, "start_child_workflow_execution_initiated", workflow_id="h1"),
        event(3, 100.0, "start_child_workflow_execution_initiated", workflow_id="h2"),
        event(4, 101.0, "child_workflow_execution_started", initiated_event_id=2),
        event(5, 103.0, "child_workflow_execution_started", initiated_event_id=3),
        event(6, 110.0, "child_workflow_execution_completed"),
        event(7, 111.0, "start_child_workflow_execution_initiated", workflow_id="h3"),
        event(8, 120.0, "child_workflow_execution_failed"),
        event(9, 124.0, "child_workflow_execution_terminated"),
    ]
    flow = parent_flow([run])
    # 2 hosts for 10 s, 1 for 1 s, 2 for 9 s, 1 for 4 s: 43 host-seconds over 24 s.
    assert abs(flow["in_flight_mean"] - 43 / 24) < 1e-9
    assert flow["refill_mean"] == 1.0 and flow["refill_p90"] == 1.0  # only h1's slot refilled
    assert flow["initiated_to_started_mean"] == 2.0
