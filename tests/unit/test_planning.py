import pytest

from workflows.planning import (
    Stage,
    batch_sizes,
    batches,
    plan_cluster,
    resolve_amount,
    should_stop,
    stages,
    waves,
)


def test_pilots_are_the_first_hosts_in_inventory_order() -> None:
    plan = plan_cluster(["h1", "h2", "h3", "h4"], 2)
    assert plan.pilots == ["h1", "h2"]
    assert plan.rest == ["h3", "h4"]
    assert not plan.whole_cluster_is_pilot


def test_pilot_count_larger_than_cluster_makes_the_whole_cluster_pilot() -> None:
    plan = plan_cluster(["h1", "h2"], 5)
    assert plan.pilots == ["h1", "h2"] and plan.rest == []
    assert plan.whole_cluster_is_pilot


def test_zero_pilots_means_every_host_is_in_the_waves() -> None:
    plan = plan_cluster(["h1", "h2", "h3"], 0)
    assert plan.pilots == [] and waves(plan.rest, 2) == [["h1", "h2"], ["h3"]]
    assert stages(["h1", "h2", "h3"], 0, 2) == [
        Stage("all hosts, 2 at a time", ["h1", "h2", "h3"], 2, pilot=False)
    ]


def test_waves_hold_pilots_first_then_the_rest_each_at_most_max_concurrency() -> None:
    hosts = [f"h{i}" for i in range(1, 8)]
    plan = plan_cluster(hosts, 3)
    assert [waves(plan.pilots, 2), waves(plan.rest, 2)] == [
        [["h1", "h2"], ["h3"]],
        [["h4", "h5"], ["h6", "h7"]],
    ]
    assert stages(hosts, 3, 2) == [
        Stage("pilot hosts", ["h1", "h2", "h3"], 2, pilot=True),
        Stage("the rest, 2 at a time", ["h4", "h5", "h6", "h7"], 2, pilot=False),
    ]


def test_wave_sizes_cut_the_rest_into_batches_each_run_whole() -> None:
    hosts = [f"h{i}" for i in range(1, 7)]
    assert stages(hosts, 1, "50%", [2, "50%"]) == [
        Stage("pilot hosts", ["h1"], 3, pilot=True),
        Stage("wave 2/3", ["h2", "h3"], 2, pilot=False),
        Stage("wave 3/3", ["h4", "h5", "h6"], 3, pilot=False),
    ]
    assert stages(hosts, 0, 1, [4]) == [
        Stage("wave 1/2", hosts[:4], 4, pilot=False),
        Stage("wave 2/2", hosts[4:], 2, pilot=False),
    ]
    assert stages([], 2, 1) == []


def test_one_by_one_is_the_default_shape() -> None:
    assert waves(["a", "b", "c"], 1) == [["a"], ["b"], ["c"]]


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        waves(["a"], 0)
    with pytest.raises(ValueError):
        plan_cluster(["a"], -1)


@pytest.mark.parametrize(
    ("failures", "budget", "pilot", "stop"),
    [
        (0, 0, False, False),
        (1, 0, False, True),
        (2, 2, False, False),
        (3, 2, False, True),
        (1, 5, True, True),
    ],
)
def test_error_budget_is_exceeded_not_reached_and_a_pilot_failure_always_stops(
    failures: int, budget: int, pilot: bool, stop: bool
) -> None:
    assert should_stop(failures, budget, pilot_failed=pilot) is stop


def test_amounts_are_numbers_or_percentages_of_the_cluster_rounded_down() -> None:
    assert resolve_amount(3, 10) == 3
    assert resolve_amount("25%", 8) == 2
    assert resolve_amount("25%", 7) == 1  # 1.75 hosts: rounded down, as Ansible does
    assert resolve_amount("10%", 5) == 0  # a budget of 0 failures
    assert resolve_amount("10%", 5, at_least=1) == 1  # but a batch always holds a host
    assert resolve_amount("100%", 40) == 40


def test_batches_follow_ansible_serial_with_the_last_size_repeating() -> None:
    assert batch_sizes([1, 5, "25%"], 40) == [1, 5, 10, 10, 10, 4]
    assert batch_sizes([2], 5) == [2, 2, 1]
    assert batch_sizes(["50%"], 3, cluster_size=6) == [3]
    assert batches(["a", "b", "c", "d"], [1, 2]) == [["a"], ["b", "c"], ["d"]]
    with pytest.raises(ValueError):
        batch_sizes([], 3)


def test_budget_of_a_percentage_is_exceeded_not_reached() -> None:
    tolerated = resolve_amount("25%", 8)
    assert not should_stop(2, tolerated, pilot_failed=False)  # 2 failures reach the budget
    assert should_stop(3, tolerated, pilot_failed=False)  # the third exceeds it
