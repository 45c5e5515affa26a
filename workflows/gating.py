"""The health gate between stages (issue 18): after the pilots and after each wave, before the next
starts, a durable soak, then the alert gate, then the query gate (the canary judgement).

- Soak: a workflow timer (a worker restart does not restart it) until `progress.soakUntil`, which
  the `gate` update moves (cut short, extended). Alerts firing meanwhile on a host just patched
  count against it, as a host failure within the error budget (a pilot's always stops).
- Alert gate: while an alert matching `alertMatchers` fires, no new host starts; after
  `gateTimeout` the rollout stops as a failure naming the alerts and the hosts patched so far.
- Query gate: each of `gateQueries` for the hosts of the last stage against the cluster's hosts
  not patched yet; the decision and its numbers go to the thread, the progress and the summary.

Every question to Prometheus is an activity (`activities/prometheus.py`), so replaying the history
gives the same decisions. Prometheus unreachable is a gate that does not pass: bounded retries,
then a stop saying so; a worker without PATCHPILOT_PROMETHEUS_URL has no gate activities, and a
rollout asking it for a gate stops saying that instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows import names
    from workflows.controls import RolloutControls
    from workflows.gate_rules import (
        DEFAULT_EXTENSION,
        DEFAULT_GATE_TIMEOUT,
        GATE_CALL,
        GATE_RETRY,
        NO_PROMETHEUS,
        GateControl,
        alert_hosts,
        clock,
        describe_alerts,
        own_gates,
        poll_interval,
        span_text,
    )
    from workflows.gates import (
        AlertGateRequest,
        AlertGateResult,
        FiringAlert,
        GateSettings,
        QueryGateRequest,
        QueryGateResult,
        judge,
    )
    from workflows.models import HostState, HostTarget, RolloutNotice
    from workflows.notices import send_notice
    from workflows.planning import Stage
    from workflows.policies import failure_reason, raise_if_cancelled

R = TypeVar("R")


class GateStopped(Exception):
    """A gate did not pass: the rollout ends as a failure with this reason."""


class RolloutGates(RolloutControls):
    """The gate stage and its `gate` update; the workflow provides `_notice`."""

    def _notice(self, *, with_hosts: bool = False, **extra: object) -> RolloutNotice:
        raise NotImplementedError

    # ---- hooks the rollout calls ------------------------------------------------------------

    def _settle_gates(self, cluster: str, from_inventory: GateSettings) -> None:
        """The cluster's gates: the rollout's own fields over the cluster's group vars."""
        self._state.gate_settings[cluster] = from_inventory.under(own_gates(self._rollout))

    async def _gate_before(self, cluster: str, first: bool) -> None:
        """Before a cluster's first host: none starts while a matching alert fires."""
        settings = self._state.gate_settings.get(cluster)
        if not first or settings is None:
            return
        if settings.alert_matchers:
            await self._hold_for_alerts(cluster, settings, "before its first host")
        elif settings.gate_queries:
            # Nothing to judge yet; asked only so a worker without Prometheus refuses now,
            # before any host is touched (an empty side is answered without a query).
            probe = QueryGateRequest(
                expression=settings.gate_queries[0].expression, patched=[], baseline=[]
            )
            await self._ask(cluster, "query", names.QUERY_GATE, probe, QueryGateResult)

    async def _gate(self, cluster: str, plan: Sequence[Stage[HostTarget]], number: int) -> None:
        """After stage `number` of `plan` (the cluster's stages): soak, alerts, queries. Nothing
        when no stage follows in this rollout (then nothing waits for the verdict)."""
        settings = self._state.gate_settings.get(cluster)
        following = self._following(cluster, plan, number)
        if settings is None or not settings.active or following is None:
            return
        stage = plan[number]
        after = "the pilots" if stage.pilot else stage.label
        progress = self._state.progress
        try:
            if settings.soak_time:
                await self._soak(cluster, settings, stage, after, following)
            self.raise_if_aborted()
            if settings.alert_matchers:
                await self._hold_for_alerts(cluster, settings, f"after {after}")
            if settings.gate_queries:
                await self._judge(cluster, settings, stage, after)
        finally:
            progress.gate, progress.soak_until = None, None

    # ---- soak -------------------------------------------------------------------------------

    async def _soak(
        self,
        cluster: str,
        settings: GateSettings,
        stage: Stage[HostTarget],
        after: str,
        following: str,
    ) -> None:
        progress = self._state.progress
        assert settings.soak_time is not None
        progress.soak_until = workflow.now() + settings.soak_time
        poll = poll_interval(settings.soak_time)
        announced: datetime | None = None
        while progress.soak_until is not None and workflow.now() < progress.soak_until:
            until = progress.soak_until
            if until != announced:
                left = until - workflow.now()
                progress.gate = (
                    f"{cluster}: soaking {span_text(left)} after {after}; next {following} at "
                    f"{clock(until, left)}"
                )
                await self._tell(cluster, progress.gate)
                announced = until
            wait = until - workflow.now()
            if settings.alert_matchers:
                wait = min(wait, poll)
            await self._wait(lambda: progress.soak_until != until, wait)  # noqa: B023
            if self.aborted_by is not None:
                return
            if settings.alert_matchers:
                await self._count_alerts(cluster, settings, stage, after)

    async def _count_alerts(
        self, cluster: str, settings: GateSettings, stage: Stage[HostTarget], after: str
    ) -> None:
        """Alerts firing on a host of `stage` count against it (once): it fails, and the error
        budget decides whether the rollout goes on."""
        state = self._state
        patched = [h.name for h in stage.hosts if state.host(h.name).state == HostState.DONE]
        if not patched:
            return
        firing = await self._firing(cluster, settings, patched, "alert")
        for host in patched:
            against = [alert for alert in firing if host in alert_hosts(alert, [host])]
            if not against:
                continue
            entry = state.host(host)
            entry.state = HostState.FAILED
            entry.failure_reason = f"{describe_alerts(against)} fired during the soak after {after}"
            state.failures += 1
            what = f"{host} failed: {entry.failure_reason}"
            if state.over_budget(cluster, self._rollout.max_failures, pilot=stage.pilot):
                await self._stop(cluster, what)
            # Within the error budget: alerted like any host failure, and the rollout goes on.
            details = f"{cluster}: {what}; maintenance mode: not in maintenance"
            notice = self._notice(
                hostname=host, cluster=cluster, step="soak", failure_details=details
            )
            await send_notice(names.SEND_FAILURE_ALERT, notice)
            self._decide(f"{cluster}: {what}")

    # ---- alert gate -------------------------------------------------------------------------

    async def _hold_for_alerts(self, cluster: str, settings: GateSettings, when: str) -> None:
        """Wait while alerts matching the cluster's matchers fire, up to the gate timeout."""
        progress = self._state.progress
        timeout = settings.gate_timeout or DEFAULT_GATE_TIMEOUT
        deadline = workflow.now() + timeout
        held_since: datetime | None = None
        patched = self._patched(cluster)
        while True:
            firing = await self._firing(cluster, settings, patched, "alert")
            if not firing:
                break
            alerts = describe_alerts(firing)
            if workflow.now() >= deadline:
                await self._stop(
                    cluster, f"alert gate {when}: {alerts} still firing after {span_text(timeout)}"
                )
            if held_since is None:
                held_since = workflow.now()
                progress.gate = (
                    f"{cluster}: holding {when}: {alerts} firing; no new host starts (waiting up "
                    f"to {span_text(timeout)}, until {clock(deadline, timeout)})"
                )
                self._decide(progress.gate)
                await self._tell(cluster, progress.gate)
            await self._wait(lambda: False, min(poll_interval(timeout), deadline - workflow.now()))
            self.raise_if_aborted()
        progress.gate = None
        if held_since is not None:
            waited = span_text(workflow.now() - held_since)
            line = self._decide(
                f"{cluster}: alert gate {when} open: alerts resolved after {waited}"
            )
            await self._tell(cluster, line)

    async def _firing(
        self, cluster: str, settings: GateSettings, patched: list[str], gate: str
    ) -> list[FiringAlert]:
        firing: list[FiringAlert] = []
        for matchers in settings.alert_matchers:
            request = AlertGateRequest(matchers=matchers, cluster=cluster, hosts=patched)
            answer = await self._ask(
                cluster, gate, names.CHECK_ALERT_GATE, request, AlertGateResult
            )
            firing.extend(alert for alert in answer.firing if alert not in firing)
        return firing

    # ---- query gate -------------------------------------------------------------------------

    async def _judge(
        self, cluster: str, settings: GateSettings, stage: Stage[HostTarget], after: str
    ) -> None:
        """Each query for the stage's patched hosts against the cluster's unpatched ones. Too
        few samples are asked again until the gate timeout; a value above its bound stops."""
        state = self._state
        patched = [h.name for h in stage.hosts if state.host(h.name).state == HostState.DONE]
        baseline = [h.name for h in state.pending(state.targets[cluster])]
        if not patched or not baseline:
            what = "no host of it was patched" if not patched else "no unpatched host is left"
            line = self._decide(f"{cluster}: query gate after {after} not judged: {what}")
            await self._tell(cluster, line)
            return
        timeout = settings.gate_timeout or DEFAULT_GATE_TIMEOUT
        deadline = workflow.now() + timeout
        for query in settings.gate_queries:
            request = QueryGateRequest(
                expression=query.expression, patched=patched, baseline=baseline
            )
            while True:
                found = await self._ask(
                    cluster, "query", names.QUERY_GATE, request, QueryGateResult
                )
                samples = (found.patched_samples, found.baseline_samples)
                verdict = judge(
                    query.expression, found.patched, found.baseline, samples, query.bound
                )
                blind = found.patched is None or found.baseline is None
                blind = blind or min(samples) < query.min_samples
                if verdict.passed or not blind or workflow.now() >= deadline:
                    break
                await workflow.sleep(min(poll_interval(timeout), deadline - workflow.now()))
            outcome = "passed" if verdict.passed else "did not pass"
            what = (
                f"query gate after {after} {outcome} ({', '.join(patched)} against "
                f"{len(baseline)} unpatched): {verdict.reason}"
            )
            if not verdict.passed:
                await self._stop(cluster, what)
            await self._tell(cluster, self._decide(f"{cluster}: {what}"))

    # ---- shared -----------------------------------------------------------------------------

    async def _ask(
        self, cluster: str, gate: str, activity: str, request: Any, result_type: type[R]
    ) -> R:
        """One gate activity; any failure (after GATE_RETRY) stops the rollout saying why."""
        try:
            return await workflow.execute_activity(
                activity,
                request,
                result_type=result_type,
                start_to_close_timeout=GATE_CALL,
                retry_policy=GATE_RETRY,
            )
        except ActivityError as error:
            raise_if_cancelled(error)
            cause = error.cause
            if isinstance(cause, ApplicationError) and cause.type == "NotFoundError":
                reason = NO_PROMETHEUS
            else:
                reason = failure_reason(error)
                if isinstance(cause, ApplicationError) and cause.type == "PrometheusUnavailable":
                    reason += f" (after {GATE_RETRY.maximum_attempts} attempts)"
            await self._stop(cluster, f"the {gate} gate did not pass: {reason}")
            raise  # not reached: _stop raises

    def _following(
        self, cluster: str, plan: Sequence[Stage[HostTarget]], number: int
    ) -> str | None:
        """What starts after stage `number`: the cluster's next stage, else the next cluster."""
        if number + 1 < len(plan):
            label = plan[number + 1].label
            return label if label.startswith("wave ") else f"wave ({label})"
        clusters = [c.name for c in self._state.progress.clusters]
        index = clusters.index(cluster)
        return f"cluster ({clusters[index + 1]})" if index + 1 < len(clusters) else None

    def _patched(self, cluster: str) -> list[str]:
        return [
            h.name
            for h in self._state.targets[cluster]
            if self._state.host(h.name).state == HostState.DONE
        ]

    def _so_far(self, cluster: str) -> str:
        """'hosts patched so far: a1 (done), a2 (failed)'."""
        started = [
            f"{entry.name} ({entry.state.value})"
            for entry in (self._state.host(h.name) for h in self._state.targets[cluster])
            if entry.state not in (HostState.PENDING, HostState.SKIPPED)
        ]
        shown = ", ".join(started[:20]) + (f" … +{len(started) - 20}" if len(started) > 20 else "")
        return f"hosts patched so far in {cluster}: {shown or 'none'}"

    async def _stop(self, cluster: str, why: str) -> None:
        """End the rollout as a failure: alert the people, skip every host not started."""
        reason = f"{cluster}: {why}; {self._so_far(cluster)}; no further host was started"
        self._decide(f"{cluster}: {why}")
        await send_notice(
            names.SEND_FAILURE_ALERT, self._notice(cluster=cluster, failure_details=reason)
        )
        self._state.skip_pending()
        raise GateStopped(reason)

    def _decide(self, line: str) -> str:
        """Keep a gate decision (progress `gates`, so the history and the summary)."""
        stamp = workflow.now().strftime("%Y-%m-%d %H:%M:%S UTC")
        self._state.progress.gates.append(f"{stamp} {line}")
        return line

    async def _wait(self, until: Callable[[], bool], timeout: timedelta) -> None:
        """A durable wait (a workflow timer) of `timeout`, ended early by `until` or an abort."""
        try:
            await workflow.wait_condition(
                lambda: until() or self.aborted_by is not None,
                timeout=max(timeout, timedelta(milliseconds=1)),
            )
        except TimeoutError:
            return

    async def _tell(self, cluster: str, line: str) -> None:
        """A line in the rollout's thread (the wave notice's `waiting` text)."""
        await send_notice(names.SEND_WAVE_NOTIFICATION, self._notice(cluster=cluster, waiting=line))

    # ---- the `gate` update ------------------------------------------------------------------

    @workflow.update(name="gate")
    def gate(self, control: GateControl) -> str:
        """`cut` ends the running soak now; `extend` makes it `by` (10 min) longer."""
        progress = self._state.progress
        assert progress.soak_until is not None
        if control.action == "cut":
            progress.soak_until = workflow.now()
            return self._record(f"soak cut short by {control.person}")
        by = control.by or DEFAULT_EXTENSION
        progress.soak_until += by
        return self._record(
            f"soak extended by {span_text(by)} by {control.person}, until "
            f"{clock(progress.soak_until, timedelta(0))}"
        )

    @gate.validator
    def _validate_gate(self, control: GateControl) -> None:
        self._check(control)
        if self._state.progress.soak_until is None:
            raise ValueError("no soak is running now: only a running soak can be cut or extended")
