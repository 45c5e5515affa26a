"""Pure rollout planning: which hosts are pilots, how hosts are grouped into waves, when to stop.

No I/O and no Temporal here, so the rules can be unit-tested and read on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from workflows.targets import HostTarget

T = TypeVar("T")


@dataclass(frozen=True)
class ClusterPlan(Generic[T]):
    pilots: list[T]
    rest: list[T]
    whole_cluster_is_pilot: bool


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


@dataclass(frozen=True)
class Stage(Generic[T]):
    """Hosts of one cluster started together: up to `limit` of them in flight at once."""

    label: str  # how the wave notice names the stage
    hosts: list[T]
    limit: int
    pilot: bool


def stages(
    hosts: Sequence[T],
    pilot_host_count: int,
    max_concurrency: int | str,
    wave_sizes: Sequence[int | str] = (),
) -> list[Stage[T]]:
    """The pilots first (all of them finish before any other host starts), then the rest: in a
    sliding window of `max_concurrency` hosts, or in the batches `wave_sizes` lists (each batch
    finishing before the next starts), like Ansible's `serial`."""
    size = len(hosts)
    plan = plan_cluster(hosts, pilot_host_count)
    window = resolve_amount(max_concurrency, size, at_least=1)
    result: list[Stage[T]] = []
    if plan.pilots:
        result.append(Stage("pilot hosts", plan.pilots, window, pilot=True))
    if wave_sizes:
        cut = batches(plan.rest, wave_sizes, size)
        offset = 1 if plan.pilots else 0
        for number, batch in enumerate(cut, start=1 + offset):
            label = f"wave {number}/{len(cut) + offset}"
            result.append(Stage(label, batch, len(batch), pilot=False))
    elif plan.rest:
        rest = "the rest" if plan.pilots else "all hosts"
        result.append(Stage(f"{rest}, {window} at a time", plan.rest, window, pilot=False))
    return result


def waves(hosts: Sequence[T], size: int) -> list[list[T]]:
    """`hosts` in groups of `size`, the last one shorter (a dry run inspects a group at a time)."""
    if size < 1:
        raise ValueError("wave size must be >= 1")
    return [list(hosts[index : index + size]) for index in range(0, len(hosts), size)]


def resolve_amount(amount: int | str, cluster_size: int, *, at_least: int = 0) -> int:
    """A host count from a number or a percentage of the cluster ("25%"), rounded down as
    Ansible's `serial` does; `at_least` 1 for batch sizes and concurrency (a 10% batch of a
    5-host cluster is 1 host, not 0)."""
    if isinstance(amount, int):
        return max(amount, at_least)
    percent = int(amount.strip().rstrip("%"))
    return max(cluster_size * percent // 100, at_least)


def batch_sizes(
    spec: Sequence[int | str], total: int, cluster_size: int | None = None
) -> list[int]:
    """Ansible `serial` as a list: each entry is one batch, the last repeats until all `total`
    hosts have a batch; percentages are of `cluster_size` (default `total`).
    [1, 5, "25%"] on 40 hosts gives 1, 5, 10, 10, 10, 4."""
    if not spec:
        raise ValueError("waves must list at least one batch size")
    sizes: list[int] = []
    remaining = total
    index = 0
    while remaining > 0:
        entry = spec[min(index, len(spec) - 1)]
        size = resolve_amount(entry, cluster_size or total, at_least=1)
        sizes.append(min(size, remaining))
        remaining -= sizes[-1]
        index += 1
    return sizes


def batches(
    hosts: Sequence[T], spec: Sequence[int | str], cluster_size: int | None = None
) -> list[list[T]]:
    """`hosts` cut into the batches of `batch_sizes(spec, len(hosts), cluster_size)`."""
    result: list[list[T]] = []
    start = 0
    for size in batch_sizes(spec, len(hosts), cluster_size):
        result.append(list(hosts[start : start + size]))
        start += size
    return result


def should_stop(failures: int, max_failures: int, *, pilot_failed: bool) -> bool:
    """Stop when failures exceed the budget; a failed pilot always stops the rollout.

    `max_failures` is the number of host failures tolerated: 0 (the default) stops at the first
    failure, 2 stops at the third.
    """
    return pilot_failed or failures > max_failures


def once_per_machine(
    hosts: Sequence[HostTarget], seen: dict[tuple[str, int], str]
) -> tuple[list[HostTarget], list[str]]:
    """`hosts` without the machines (address and port) already in `seen`, which gains the rest.

    One machine listed under two inventory names, or in two target clusters, is patched once, by
    the first name; each name left out gets a line saying so (shown with the approval request).
    """
    kept: list[HostTarget] = []
    notes: list[str] = []
    for host in hosts:
        machine = (host.address.lower(), host.port)
        first = seen.get(machine)
        if first is None:
            seen[machine] = host.name
            kept.append(host)
        elif first == host.name:
            notes.append(f"{host.name} is also in an earlier cluster: patched once")
        else:
            notes.append(f"{host.name} is {first} ({host.address}:{host.port}): patched once")
    return kept, notes
