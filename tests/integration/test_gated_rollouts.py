"""Health gates between waves, end to end (issue 18): the real Temporal dev server, the sshd lab,
OpenBao, SMTP and a real Prometheus (Debian's package) scraping a lab exporter whose per-host
`error_rate` the test sets, with a real alerting rule. Scrape and evaluation every second, soaks
of seconds, so each test stays short."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from activities.prometheus import PrometheusActivities
from bot.embedded import ManagedProcess, free_port
from bot.settings import Settings
from bot.worker import WorkerParts, build_worker
from lab import Lab
from lab.prometheus import HostMetrics, start_prometheus
from tests.integration.test_prometheus_gates import wait_for_async
from tests.integration.test_rollout import ALICE, BOB, acli, rollout, start
from tests.integration.test_rollout import approve as approve_now
from tests.support import FLEET, Mailbox, running_worker, wait_for
from workflows.models import HostState, Phase, RolloutProgress, RolloutSummary
from workflows.policies import HEARTBEAT

HOSTS = {host: cluster for cluster, hosts in FLEET.items() for host in hosts}
RULES = [{"alert": "HighErrorRate", "expr": "error_rate > 0.3", "for": "0s"}]
ERROR_RATE = 'avg(error_rate{host=~"{hosts}"}) <= baseline * 1.2 + 0.01 min 1'
CLUSTER_ALERTS = 'alertname="HighErrorRate", cluster="{cluster}"'
HEALTHY = 0.01


@pytest.fixture(scope="module")
def metrics() -> Iterator[HostMetrics]:
    exporter = HostMetrics()
    yield exporter
    exporter.stop()


@pytest.fixture(scope="module")
def prometheus(
    metrics: HostMetrics, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ManagedProcess]:
    with start_prometheus(
        Path(tmp_path_factory.mktemp("prometheus")), metrics, HOSTS, RULES
    ) as server:
        yield server


@pytest.fixture
async def healthy(metrics: HostMetrics, prometheus: ManagedProcess) -> PrometheusActivities:
    """Every host healthy, scraped, and no alert firing; the test's Prometheus client."""
    for host in HOSTS:
        metrics.set(host, "error_rate", HEALTHY)
    gates = PrometheusActivities(prometheus.address)

    async def settled() -> bool:
        up = await gates.query("count(up == 1)")
        alerts = await gates.query('ALERTS{alertstate="firing"}')
        return bool(up) and int(float(up[0]["value"][1])) == len(HOSTS) and not alerts

    await wait_for_async(settled)
    return gates


@pytest.fixture
def gate_settings(worker_settings: Settings, prometheus: ManagedProcess) -> Settings:
    return worker_settings.model_copy(update={"prometheus_url": prometheus.address})


async def progress_of(handle) -> RolloutProgress:
    return await handle.query("progress", result_type=RolloutProgress)


async def until_progress(handle, predicate, timeout: float = 60) -> RolloutProgress:
    """Poll the rollout's progress until `predicate(progress)` holds; that progress."""
    found: list[RolloutProgress] = []

    async def check() -> bool:
        found[:] = [await progress_of(handle)]
        return bool(predicate(found[0]))

    await wait_for_async(check, timeout)
    return found[0]


async def approve(handle) -> None:
    """Approve once the rollout asks (it resolves its hosts first)."""
    await until_progress(handle, lambda p: p.phase == Phase.AWAITING_APPROVAL)
    await approve_now(handle)


async def failed_summary(handle) -> RolloutSummary:
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), timeout=120)
    summary = failed.value.cause.details[0]  # type: ignore[attr-defined]
    return RolloutSummary.model_validate(summary)


async def test_a_pilot_whose_error_rate_rises_stops_the_rollout_after_the_soak(
    fleet: Lab,
    gate_settings: Settings,
    temporal_client: Client,
    healthy: PrometheusActivities,
    metrics: HostMetrics,
    mailbox: Mailbox,
) -> None:
    async with running_worker(temporal_client, gate_settings):
        handle = await start(
            temporal_client,
            gate_settings,
            rollout(["cluster-a"], soakTime="PT5S", gateQueries=[ERROR_RATE]),
        )
        await approve(handle)
        soaking = await until_progress(handle, lambda p: p.gate and "soaking" in p.gate)
        assert soaking.gate is not None
        assert "cluster-a: soaking 5 s after the pilots; next wave (the rest, 1 at a time) at" in (
            soaking.gate
        )
        # The patched pilot gets worse than its unpatched peers while it soaks.
        metrics.set("a1", "error_rate", 0.2)
        summary = await failed_summary(handle)
    assert summary.phase == Phase.FAILED
    numbers = "patched 0.2 above the bound 0.022 (baseline 0.01 * 1.2 + 0.01)"
    assert "query gate after the pilots did not pass" in summary.message
    assert numbers in summary.message
    assert "hosts patched so far in cluster-a: a1 (done)" in summary.message
    assert any(numbers in line for line in summary.gates)
    states = {host.name: host.state for host in summary.hosts}
    assert states == {"a1": HostState.DONE, "a2": HostState.SKIPPED, "a3": HostState.SKIPPED}
    assert fleet.update_count("a2") == 0 and fleet.update_count("a3") == 0
    # The people get the failure with the numbers behind it.
    await wait_for(lambda: mailbox.events("failure"), timeout=10)
    assert numbers in mailbox.events("failure")[0].get_content()


async def test_an_alert_firing_for_the_cluster_holds_the_next_wave_until_it_resolves(
    fleet: Lab,
    gate_settings: Settings,
    temporal_client: Client,
    healthy: PrometheusActivities,
    metrics: HostMetrics,
) -> None:
    async with running_worker(temporal_client, gate_settings):
        handle = await start(
            temporal_client,
            gate_settings,
            rollout(["cluster-a"], soakTime=600, gateTimeout=60, alertMatchers=[CLUSTER_ALERTS]),
        )
        await approve(handle)
        await until_progress(handle, lambda p: p.gate and "soaking 10 min" in p.gate)
        # An unpatched host of the cluster starts erroring: the cluster's alert fires.
        metrics.set("a3", "error_rate", 0.5)

        async def firing() -> bool:
            return bool(await healthy.query('ALERTS{alertstate="firing", host="a3"}'))

        await wait_for_async(firing)
        cut = await acli(gate_settings, "soak", handle.id, "cut", "--as", BOB)
        assert cut.returncode == 0 and f"soak cut short by {BOB}" in cut.stdout
        held = await until_progress(handle, lambda p: p.gate and "holding" in p.gate)
        assert held.gate is not None and held.gate.startswith(
            "cluster-a: holding after the pilots: HighErrorRate on a3 firing; no new host starts"
        )
        await asyncio.sleep(3)
        still = await progress_of(handle)
        assert [h.state for h in still.hosts()] == [
            HostState.DONE,
            HostState.PENDING,
            HostState.PENDING,
        ]
        metrics.set("a3", "error_rate", HEALTHY)
        summary = await asyncio.wait_for(handle.result(), timeout=120)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    resolved = "alert gate after the pilots open: alerts resolved after"
    assert any(resolved in line for line in summary.gates)
    assert any(f"soak cut short by {BOB}" in c for c in summary.controls)
    # Nothing started while the alert fired: a2 began after the soak was cut and the alert held.
    a2 = next(h for h in summary.hosts if h.name == "a2")
    holding = next(g for g in summary.gates if "holding after the pilots" in g)
    assert a2.started_at is not None and a2.started_at.strftime("%H:%M:%S") >= holding[11:19]


async def test_an_alert_firing_on_the_pilot_during_the_soak_counts_against_it(
    fleet: Lab,
    gate_settings: Settings,
    temporal_client: Client,
    healthy: PrometheusActivities,
    metrics: HostMetrics,
) -> None:
    async with running_worker(temporal_client, gate_settings):
        handle = await start(
            temporal_client,
            gate_settings,
            rollout(["cluster-a"], soakTime=20, alertMatchers=[CLUSTER_ALERTS]),
        )
        await approve(handle)
        await until_progress(handle, lambda p: p.gate and "soaking" in p.gate)
        metrics.set("a1", "error_rate", 0.5)  # the patched pilot itself alerts
        summary = await failed_summary(handle)
    why = "HighErrorRate on a1 fired during the soak after the pilots"
    assert summary.message.startswith(f"cluster-a: a1 failed: {why}")
    assert "hosts patched so far in cluster-a: a1 (failed)" in summary.message
    pilot = next(h for h in summary.hosts if h.name == "a1")
    assert pilot.state == HostState.FAILED and pilot.failure_reason == why
    assert summary.duration_seconds < 20  # stopped as soon as it fired, not after the soak
    assert fleet.update_count("a2") == 0 and fleet.update_count("a3") == 0


async def test_prometheus_down_stops_the_rollout_after_bounded_retries(
    fleet: Lab, worker_settings: Settings, temporal_client: Client
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    settings = worker_settings.model_copy(update={"prometheus_url": nowhere})
    async with running_worker(temporal_client, settings):
        handle = await start(
            temporal_client, settings, rollout(["cluster-a"], alertMatchers=[CLUSTER_ALERTS])
        )
        await approve(handle)
        summary = await failed_summary(handle)
    assert summary.message.startswith(
        f"cluster-a: the alert gate did not pass: Prometheus at {nowhere} cannot be reached"
    )
    assert "(after 4 attempts); hosts patched so far in cluster-a: none" in summary.message
    assert summary.patched == 0 and summary.skipped == 3
    assert all(fleet.update_count(host) == 0 for host in FLEET["cluster-a"])


async def test_a_worker_without_prometheus_refuses_a_gated_rollout_before_any_host(
    fleet: Lab, worker: WorkerParts, worker_settings: Settings, temporal_client: Client
) -> None:
    handle = await start(
        temporal_client, worker_settings, rollout(["cluster-a"], gateQueries=[ERROR_RATE])
    )
    await approve(handle)
    summary = await failed_summary(handle)
    assert "the query gate did not pass: this worker has no Prometheus to ask (set " in (
        summary.message
    )
    assert "PATCHPILOT_PROMETHEUS_URL" in summary.message and summary.patched == 0


async def test_the_cli_refuses_gates_it_cannot_run_naming_the_field(
    fleet: Lab, worker_settings: Settings
) -> None:
    start_args = ["start", "-c", "cluster-a", "--pilot", "1", "--approver", ALICE]
    start_args += ["--requester", BOB, "--update", "true"]
    unset = await acli(worker_settings, *start_args, "--alert-matcher", 'cluster="{cluster}"')
    assert unset.returncode == 2
    assert "alertMatchers: a gate that asks Prometheus is refused: PatchPilot has no " in (
        unset.stderr
    )
    odd = await acli(worker_settings, *start_args, "--gate-query", "avg(error_rate) < 1")
    assert odd.returncode == 2 and "gateQueries[0]: 'avg(error_rate) < 1' must read" in odd.stderr
    never = await acli(worker_settings, *start_args, "--gate-timeout", "0")
    assert never.returncode == 2 and "gateTimeout: must be a positive duration" in never.stderr


async def soak_timer_started(handle: WorkflowHandle, soak: timedelta) -> bool:
    """The rollout's history has a timer of at most `soak` (the approval's is days long)."""
    history = await handle.fetch_history()
    return any(
        e.event_type == EventType.EVENT_TYPE_TIMER_STARTED
        and e.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta() <= soak
        for e in history.events
    )


async def test_the_worker_takes_its_cache_from_settings_and_passes_heartbeats_on(
    worker_settings: Settings, temporal_client: Client
) -> None:
    # PATCHPILOT_MAX_CACHED_WORKFLOWS: the soak test below depends on a worker keeping its cache.
    settings = worker_settings.model_copy(update={"max_cached_workflows": 2500})
    worker = build_worker(temporal_client, settings, WorkerParts(settings))
    assert worker.config()["max_cached_workflows"] == 2500
    # And heartbeats reach Temporal as steps send them (5 s), not 8 s apart against a 10 s timeout.
    assert worker.config()["max_heartbeat_throttle_interval"] < HEARTBEAT / 2


async def test_the_soak_survives_a_worker_restart(
    fleet: Lab, worker_settings: Settings, temporal_client: Client
) -> None:
    def worker(parts: WorkerParts):
        # A new worker has nothing cached: the second one rebuilds the rollout from its history.
        # (No `max_cached_workflows=0` here: that cancels every in-flight local activity at each
        # activation, so each host's checks would wait out a 10 s workflow task timeout.)
        return build_worker(temporal_client, worker_settings, parts)

    first = worker(WorkerParts(worker_settings))
    async with first:
        # A soak long enough to outlast the restart on a loaded CI machine (10 s did not).
        handle = await start(temporal_client, worker_settings, rollout(["cluster-a"], soakTime=25))
        await approve(handle)
        await until_progress(handle, lambda p: p.soak_until is not None)
        # The soak's timer in history: the workflow task that began the soak is the one kept
        # (a query can answer from a task that a cache-full eviction then fails and retries).
        await wait_for_async(lambda: soak_timer_started(handle, timedelta(seconds=25)), 30)
        soaking = await progress_of(handle)
    assert soaking.soak_until is not None
    await asyncio.sleep(3)  # no worker at all for a while
    async with worker(WorkerParts(worker_settings)):
        after = await progress_of(handle)
        late = datetime.now(UTC) >= soaking.soak_until
        assert not late, "the restart took longer than the soak: the test proves nothing"
        assert after.soak_until == soaking.soak_until  # the same soak, not a new one
        summary = await asyncio.wait_for(handle.result(), timeout=120)
    assert summary.phase == Phase.SUCCEEDED
    a2 = next(h for h in summary.hosts if h.name == "a2")
    assert a2.started_at is not None
    # The wave started when the soak said it would (a restarted soak would start it 10 s later).
    assert timedelta(0) <= a2.started_at - soaking.soak_until < timedelta(seconds=3)
