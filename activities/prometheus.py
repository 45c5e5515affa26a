"""Asking Prometheus between waves (issue 18): which alerts fire, and what a canary expression
says for the hosts just patched against their unpatched peers.

Uses Prometheus' HTTP API (`GET /api/v1/query`, instant queries; the API docs' response format:
`{"status": "success", "data": {"resultType": "vector"|"scalar", "result": …}}`). Firing alerts
are read from the `ALERTS` series Prometheus keeps for its alerting rules. A Prometheus that cannot
be reached raises a retryable error (the workflow's retry policy bounds it, then the rollout stops
saying so); a query Prometheus refuses (400/422) is non-retryable, with Prometheus' own reason.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows import names
from workflows.gates import (
    AlertGateRequest,
    AlertGateResult,
    FiringAlert,
    GateError,
    QueryGateRequest,
    QueryGateResult,
    fill,
)

TIMEOUT_SECONDS = 10.0


class PrometheusActivities:
    """The gate activities for the Prometheus at `url` (e.g. http://prometheus:9090)."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    async def query(self, expression: str) -> list[dict[str, Any]]:
        """An instant query's result as a list of {"metric": labels, "value": [ts, "v"]}; a scalar
        result becomes one element without labels."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.get(
                    f"{self.url}/api/v1/query", params={"query": expression}
                )
        except httpx.HTTPError as error:
            raise ApplicationError(
                f"Prometheus at {self.url} cannot be reached: {error or type(error).__name__}",
                type="PrometheusUnavailable",
            ) from None
        if response.status_code in (400, 422):
            reason = response.json().get("error", response.text[:300])
            raise ApplicationError(
                f"Prometheus refused the query {expression!r}: {reason}",
                type="PrometheusQueryRefused",
                non_retryable=True,
            )
        if response.status_code != 200:
            raise ApplicationError(
                f"Prometheus at {self.url} answered {response.status_code}",
                type="PrometheusUnavailable",
            )
        data = response.json().get("data") or {}
        if data.get("resultType") == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data.get("result") or [])

    @activity.defn(name=names.CHECK_ALERT_GATE)
    async def check_alert_gate(self, request: AlertGateRequest) -> AlertGateResult:
        """The alerts firing now that match `request.matchers`: {cluster} filled, {hosts} with
        the hosts patched so far (no query while there are none), {host} with `request.host` or
        else each of `request.hosts` in turn. Each alert is listed once."""
        template = request.matchers
        if "{hosts}" in template and not request.hosts:
            return AlertGateResult()
        each = [request.host] if request.host or "{host}" not in template else request.hosts
        firing: dict[tuple[str, tuple[tuple[str, str], ...]], FiringAlert] = {}
        for host in each:
            values: dict[str, str | list[str]] = {"cluster": request.cluster}
            values |= {"host": host} if host else {}
            values |= {"hosts": request.hosts} if request.hosts else {}
            try:
                matchers = fill(template, values)
            except GateError as error:
                raise ApplicationError(f"alert matchers: {error}", non_retryable=True) from None
            for item in await self.query(f'ALERTS{{alertstate="firing", {matchers}}}'):
                labels = {
                    k: str(v)
                    for k, v in item["metric"].items()
                    if k not in ("__name__", "alertstate")
                }
                name = str(item["metric"].get("alertname", "?"))
                firing[(name, tuple(sorted(labels.items())))] = FiringAlert(
                    name=name, labels=labels
                )
        return AlertGateResult(firing=list(firing.values()))

    async def _value(self, expression: str, hosts: list[str]) -> tuple[float | None, int]:
        if not hosts:
            return None, 0
        filled = fill(expression, {"hosts": hosts})
        series = await self.query(filled)
        if len(series) > 1:
            raise ApplicationError(
                f"{filled!r} gives {len(series)} series; a gate needs one value (aggregate it, "
                "e.g. avg(...))",
                non_retryable=True,
            )
        value = float(series[0]["value"][1]) if series else None
        if value is not None and math.isnan(value):
            value = None
        up = await self.query(fill('count(up{host=~"{hosts}"} == 1)', {"hosts": hosts}))
        return value, int(float(up[0]["value"][1])) if up else 0

    @activity.defn(name=names.QUERY_GATE)
    async def query_gate(self, request: QueryGateRequest) -> QueryGateResult:
        """The expression's value for the patched hosts and for the baseline, with samples."""
        try:
            patched, patched_samples = await self._value(request.expression, request.patched)
            baseline, baseline_samples = await self._value(request.expression, request.baseline)
        except GateError as error:
            raise ApplicationError(f"query gate: {error}", non_retryable=True) from None
        return QueryGateResult(
            patched=patched,
            baseline=baseline,
            patched_samples=patched_samples,
            baseline_samples=baseline_samples,
        )

    def all(self) -> list[object]:
        return [self.check_alert_gate, self.query_gate]
