"""Pure rollout planning: which hosts are pilots, how hosts are grouped into waves, when to stop.

No I/O and no Temporal here, so the rules can be unit-tested and read on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ClusterPlan(Generic[T]):
    pilots: list[T]
    rest: list[T]
    whole_cluster_is_pilot: bool

    def waves(self, max_concurrency: int) -> list[tuple[bool, list[T]]]:
        """Pilot waves first, then the rest; each wave holds at most `max_concurrency` hosts."""
        return [(True, wave) for wave in waves(self.pilots, max_concurrency)] + [
            (False, wave) for wave in waves(self.rest, max_concurrency)
        ]


def plan_cluster(hosts: Sequence[T], pilot_host_count: int) -> ClusterPlan[T]:
    """Pilots are the first `pilot_host_count` hosts in inventory order."""
    if pilot_host_count < 0:
        raise ValueError("pilot_host_count must be >= 0")
    pilots = list(hosts[:pilot_host_count])
    rest = list(hosts[pilot_host_count:])
    return ClusterPlan(
        pilots=pilots,
        rest=rest,
        whole_cluster_is_pilot=bool(hosts) and pilot_host_count >= len(hosts),
    )


def waves(hosts: Sequence[T], size: int) -> list[list[T]]:
    if size < 1:
        raise ValueError("wave size must be >= 1")
    return [list(hosts[index : index + size]) for index in range(0, len(hosts), size)]


def should_stop(failures: int, max_failures: int, *, pilot_failed: bool) -> bool:
    """Stop when failures exceed the budget; a failed pilot always stops the rollout.

    `max_failures` is the number of host failures tolerated: 0 (the default) stops at the first
    failure, 2 stops at the third.
    """
    return pilot_failed or failures > max_failures
