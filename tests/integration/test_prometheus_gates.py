"""The gate activities against a real Prometheus (Debian's package) scraping a lab exporter whose
per-host values the test sets, with a real alerting rule (issue 18)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError

from activities.prometheus import PrometheusActivities
from bot.embedded import ManagedProcess, free_port
from lab.prometheus import HostMetrics, start_prometheus
from workflows.gates import AlertGateRequest, Bound, QueryGateRequest, judge

HOSTS = {"a1": "cluster-a", "a2": "cluster-a", "a3": "cluster-a", "b1": "cluster-b"}
RULES = [
    {
        "alert": "HighErrorRate",
        "expr": "error_rate > 0.1",
        "for": "0s",
        "labels": {"severity": "page"},
    }
]
ERRORS = 'alertname=~"HighErrorRate|NodeDown", cluster="{cluster}"'


@pytest.fixture(scope="module")
def metrics() -> Iterator[HostMetrics]:
    exporter = HostMetrics()
    for host in HOSTS:
        exporter.set(host, "error_rate", 0.01)
    yield exporter
    exporter.stop()


@pytest.fixture(scope="module")
def prometheus(
    metrics: HostMetrics, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    root = tmp_path_factory.mktemp("prometheus")
    with start_prometheus(Path(root), metrics, HOSTS, RULES) as server:
        yield server


async def scraped(gates: PrometheusActivities, count: int) -> None:
    async def ready() -> bool:
        up = await gates.query("count(up == 1)")
        return bool(up) and int(float(up[0]["value"][1])) >= count

    await wait_for_async(ready)


async def wait_for_async(predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Poll an async predicate (Prometheus answers over HTTP) until it holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "Prometheus did not get there in time"
        await asyncio.sleep(0.2)


async def test_an_alert_firing_for_a_cluster_holds_its_gate_until_it_resolves(
    prometheus: ManagedProcess, metrics: HostMetrics
) -> None:
    gates = PrometheusActivities(prometheus.address)
    await scraped(gates, len(HOSTS))
    open_gate = await gates.check_alert_gate(AlertGateRequest(matchers=ERRORS, cluster="cluster-a"))
    assert open_gate.firing == []

    metrics.set("a2", "error_rate", 0.5)

    async def firing() -> bool:
        found = await gates.check_alert_gate(AlertGateRequest(matchers=ERRORS, cluster="cluster-a"))
        return any(alert.labels.get("host") == "a2" for alert in found.firing)

    await wait_for_async(firing)
    held = await gates.check_alert_gate(AlertGateRequest(matchers=ERRORS, cluster="cluster-a"))
    assert [(a.name, a.labels["host"], a.labels["severity"]) for a in held.firing] == [
        ("HighErrorRate", "a2", "page")
    ]
    # Another cluster's gate does not see it.
    other = await gates.check_alert_gate(AlertGateRequest(matchers=ERRORS, cluster="cluster-b"))
    assert other.firing == []

    metrics.set("a2", "error_rate", 0.01)

    async def resolved() -> bool:
        found = await gates.check_alert_gate(AlertGateRequest(matchers=ERRORS, cluster="cluster-a"))
        return found.firing == []

    await wait_for_async(resolved)


async def test_a_pilot_worse_than_its_unpatched_peers_fails_the_canary_judgement(
    prometheus: ManagedProcess, metrics: HostMetrics
) -> None:
    gates = PrometheusActivities(prometheus.address)
    await scraped(gates, len(HOSTS))
    request = QueryGateRequest(
        expression='avg(error_rate{host=~"{hosts}"})', patched=["a1"], baseline=["a2", "a3"]
    )
    bound = Bound(factor=1.2, offset=0.01, min_samples=1)
    healthy = await gates.query_gate(request)
    assert (healthy.patched, healthy.baseline) == (0.01, 0.01)
    assert (healthy.patched_samples, healthy.baseline_samples) == (1, 2)
    assert judge("error rate", healthy.patched, healthy.baseline, (1, 2), bound).passed

    metrics.set("a1", "error_rate", 0.08)

    async def risen() -> bool:
        return (await gates.query_gate(request)).patched == 0.08

    await wait_for_async(risen)
    worse = await gates.query_gate(request)
    verdict = judge("error rate", worse.patched, worse.baseline, (1, 2), bound)
    assert not verdict.passed
    assert verdict.reason == (
        "error rate: patched 0.08 above the bound 0.022 (baseline 0.01 * 1.2 + 0.01)"
    )
    metrics.set("a1", "error_rate", 0.01)


async def test_hostile_host_names_cannot_widen_the_query(prometheus: ManagedProcess) -> None:
    gates = PrometheusActivities(prometheus.address)
    await scraped(gates, len(HOSTS))
    sneaky = QueryGateRequest(
        expression='avg(error_rate{host=~"{hosts}"})', patched=[".*"], baseline=['a1"} or up{x="']
    )
    found = await gates.query_gate(sneaky)
    assert found.patched is None and found.baseline is None  # matched no host at all
    assert (found.patched_samples, found.baseline_samples) == (0, 0)


async def test_prometheus_down_is_a_gate_that_does_not_pass() -> None:
    gates = PrometheusActivities(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ApplicationError) as down:
        await gates.check_alert_gate(AlertGateRequest(matchers=ERRORS, cluster="cluster-a"))
    assert down.value.type == "PrometheusUnavailable" and not down.value.non_retryable
    assert "cannot be reached" in str(down.value)


async def test_a_query_prometheus_refuses_is_not_retried(prometheus: ManagedProcess) -> None:
    gates = PrometheusActivities(prometheus.address)
    with pytest.raises(ApplicationError) as refused:
        await gates.query_gate(
            QueryGateRequest(
                expression='avg(error_rate{host=~"{hosts}"}', patched=["a1"], baseline=[]
            )
        )
    assert refused.value.non_retryable and "Prometheus refused the query" in str(refused.value)
