import pytest

from workflows.planning import plan_cluster, should_stop, waves


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
    assert plan.waves(2) == [(False, ["h1", "h2"]), (False, ["h3"])]


def test_waves_hold_pilots_first_then_the_rest_each_at_most_max_concurrency() -> None:
    plan = plan_cluster([f"h{i}" for i in range(1, 8)], 3)
    assert plan.waves(2) == [
        (True, ["h1", "h2"]),
        (True, ["h3"]),
        (False, ["h4", "h5"]),
        (False, ["h6", "h7"]),
    ]


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
