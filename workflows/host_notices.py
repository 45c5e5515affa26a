"""Which of a host's own notices the rollout schedules (issue 16, engine v7): asked once per
rollout run (`workflows/notices.plan_host_notices`), carried by each host workflow's input."""

from __future__ import annotations

from workflows.fields import ContractModel


class HostNotices(ContractModel):
    """Which of a host's own notices (its start, its success) a channel of the worker would send,
    asked once per rollout run (PlanHostNoticesActivity): a notice no channel sends is not
    scheduled. Both True by default, as for a host workflow started before the question."""

    start: bool = True
    success: bool = True
