"""The gate stage's decisions in virtual time (Temporal's time-skipping test server), with stand-in
gate activities that answer what the test says Prometheus says: hour-long soaks, a held wave that
times out, an alert counted against a wave host within the error budget, a query asked again until
it has samples. Against a real Prometheus: tests/integration/test_gated_rollouts.py."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.workflow.fake_fleet import FakeFleet
from tests.workflow.test_approval_timeout import test_server_path
from workflows import names
from workflows.gate_rules import GateControl
from workflows.gates import (
    AlertGateRequest,
    AlertGateResult,
    FiringAlert,
    QueryGateRequest,
    QueryGateResult,
)
from workflows.host_patch import HostPatchWorkflow
from workflows.models import (
    WORKFLOW_NAME,
    ApprovalDecision,
    HostState,
    Phase,
    RolloutInput,
    RolloutProgress,
    RolloutSummary,
)
from workflows.sandbox import workflow_runner
from workflows.system_patch import SystemPatchWorkflow

ALICE = "alice@example.com"
BOB = "bob@example.com"
HOSTS = {"ca": ["a1", "a2", "a3", "a4"]}
ALERTS = 'alertname="HighErrorRate", cluster="{cluster}"'
QUERY = 'avg(error_rate{host=~"{hosts}"}) <= baseline * 1.2 + 0.01 min 1'


@dataclass
class FakePrometheus:
    """What the gate activities answer: `firing(request)` for an alert question; for queries, the
    answers in `answers` in turn (the last one repeating)."""

    firing: Callable[[AlertGateRequest], list[FiringAlert]] = lambda request: []
    answers: list[QueryGateResult] = field(default_factory=list)
    alert_calls: list[AlertGateRequest] = field(default_factory=list)
    query_calls: list[QueryGateRequest] = field(default_factory=list)

    def activities(self) -> list[Any]:
        @activity.defn(name=names.CHECK_ALERT_GATE)
        async def check_alert_gate(request: AlertGateRequest) -> AlertGateResult:
            self.alert_calls.append(request)
            return AlertGateResult(firing=self.firing(request))

        @activity.defn(name=names.QUERY_GATE)
        async def query_gate(request: QueryGateRequest) -> QueryGateResult:
            if not request.patched and not request.baseline:
                return QueryGateResult(
                    patched=None, baseline=None, patched_samples=0, baseline_samples=0
                )
            self.query_calls.append(request)
            index = min(len(self.query_calls), len(self.answers)) - 1
            return self.answers[index]

        return [check_alert_gate, query_gate]


def rollout(**extra: object) -> RolloutInput:
    return RolloutInput.model_validate(
        {
            "targetClusters": ["ca"],
            "pilotHostCount": 1,
            "waves": [1],
            "approverEmails": [ALICE],
            "requesterEmail": BOB,
            "updateCommand": "apt-get -y upgrade",
            **extra,
        }
    )


@asynccontextmanager
async def environment(prometheus: FakePrometheus) -> AsyncIterator[tuple[Client, str]]:
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=test_server_path(), data_converter=pydantic_data_converter
    ) as env:
        queue = f"gates-{uuid.uuid4().hex[:6]}"
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[SystemPatchWorkflow, HostPatchWorkflow],
            activities=[*FakeFleet(HOSTS).activities(), *prometheus.activities()],
            workflow_runner=workflow_runner(),
        ):
            yield env.client, queue


async def approved(client: Client, queue: str, rollout_input: RolloutInput) -> WorkflowHandle:
    handle = await client.start_workflow(
        WORKFLOW_NAME,
        rollout_input,
        id=f"gates-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        result_type=RolloutSummary,
    )
    for _ in range(200):
        progress = await handle.query("progress", result_type=RolloutProgress)
        if progress.phase == Phase.AWAITING_APPROVAL:
            break
    await handle.execute_update("approve", ApprovalDecision(approver=ALICE), result_type=str)
    return handle


def started(summary: RolloutSummary, host: str) -> Any:
    return next(h.started_at for h in summary.hosts if h.name == host)


def finished(summary: RolloutSummary, host: str) -> Any:
    return next(h.finished_at for h in summary.hosts if h.name == host)


async def test_each_wave_waits_its_hour_long_soak_and_the_last_one_does_not() -> None:
    async with environment(FakePrometheus()) as (client, queue):
        handle = await approved(client, queue, rollout(soakTime="PT1H"))
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 4
    for before, after in (("a1", "a2"), ("a2", "a3"), ("a3", "a4")):
        assert started(summary, after) - finished(summary, before) >= timedelta(hours=1)
    # Nothing follows the last wave: the rollout ends without soaking after it.
    assert summary.duration_seconds < 3 * 3600 + 600


async def test_an_alert_on_a_wave_host_during_the_soak_fails_it_within_the_budget() -> None:
    on_a2 = FiringAlert(name="HighErrorRate", labels={"instance": "a2:9100"})
    # a2 alerts once it is patched; asked about the hosts still done, the alert is not theirs.
    prometheus = FakePrometheus(firing=lambda request: [on_a2] if "a2" in request.hosts else [])
    async with environment(prometheus) as (client, queue):
        handle = await approved(
            client, queue, rollout(soakTime="PT10M", alertMatchers=[ALERTS], maxFailures=1)
        )
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED
    states = {h.name: h.state for h in summary.hosts}
    assert states == {
        "a1": HostState.DONE,
        "a2": HostState.FAILED,
        "a3": HostState.DONE,
        "a4": HostState.DONE,
    }
    a2 = next(h for h in summary.hosts if h.name == "a2")
    assert a2.failure_reason == "HighErrorRate on a2:9100 fired during the soak after wave 2/4"
    assert started(summary, "a3") - finished(summary, "a2") >= timedelta(minutes=10)


async def test_the_soak_controls_are_refused_to_strangers_and_without_a_soak() -> None:
    async with environment(FakePrometheus()) as (client, queue):
        handle = await approved(client, queue, rollout())
        for person, reason in (
            ("eve@example.com", "eve@example.com"),
            (BOB, "no soak is running now: only a running soak can be cut or extended"),
        ):
            try:
                cut = GateControl(person=person, action="cut")
                await handle.execute_update("gate", cut, result_type=str)
                raise AssertionError(f"{person}'s cut should be refused")
            except WorkflowUpdateFailedError as refused:
                assert reason in str(refused.cause)
        assert (await handle.result()).phase == Phase.SUCCEEDED


async def test_alerts_that_keep_firing_stop_the_rollout_at_the_gate_timeout() -> None:
    down = FiringAlert(name="NodeDown", labels={"host": "a3"})
    prometheus = FakePrometheus(firing=lambda request: [down])
    async with environment(prometheus) as (client, queue):
        handle = await approved(client, queue, rollout(alertMatchers=[ALERTS], gateTimeout="PT2H"))
        try:
            await handle.result()
            raise AssertionError("the rollout should have stopped")
        except WorkflowFailureError as failure:
            summary = RolloutSummary.model_validate(failure.cause.details[0])  # type: ignore[attr-defined]
    assert summary.message == (
        "ca: alert gate before its first host: NodeDown on a3 still firing after 120 min; hosts "
        "patched so far in ca: none; no further host was started"
    )
    assert summary.skipped == 4 and summary.duration_seconds >= 2 * 3600
    # Asked every 30 s (a tenth of the timeout, at most 30 s) for the two hours.
    assert 200 <= len(prometheus.alert_calls) <= 260


async def test_a_query_without_samples_is_asked_again_then_judged() -> None:
    blind = QueryGateResult(patched=None, baseline=0.01, patched_samples=0, baseline_samples=3)
    seen = QueryGateResult(patched=0.012, baseline=0.01, patched_samples=1, baseline_samples=3)
    prometheus = FakePrometheus(answers=[blind, blind, seen])
    async with environment(prometheus) as (client, queue):
        handle = await approved(client, queue, rollout(gateQueries=[QUERY], waves=[]))
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED
    assert len(prometheus.query_calls) == 3
    first = prometheus.query_calls[0]
    assert (first.patched, first.baseline) == (["a1"], ["a2", "a3", "a4"])
    [decision] = [line for line in summary.gates if "query gate" in line]
    assert decision.endswith(
        "ca: query gate after the pilots passed (a1 against 3 unpatched): "
        'avg(error_rate{host=~"{hosts}"}): patched 0.012 within the bound 0.022 '
        "(baseline 0.01 * 1.2 + 0.01)"
    )
