"""The health gates' rules and settings (issue 18), apart from the gate stage itself
(`workflows.gating`): how long and how often the stage waits and asks, who may cut or extend a
soak (the `gate` update's argument), when the edge refuses a gate, and how alerts and waits read.
Pure: no Temporal calls, so the bot imports these too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import ConfigDict
from temporalio.common import RetryPolicy

from workflows.fields import PositiveDuration
from workflows.gates import FiringAlert, GateSettings
from workflows.models import RolloutControl

DEFAULT_GATE_TIMEOUT = timedelta(minutes=30)
DEFAULT_EXTENSION = timedelta(minutes=10)
# Prometheus unreachable: 1 + 2 + 4 s between 4 attempts, then the gate does not pass. A worker
# without the gate activities (NotFoundError) and a query Prometheus refuses are not retried.
GATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=4,
    non_retryable_error_types=["NotFoundError", "PrometheusQueryRefused"],
)
GATE_CALL = timedelta(seconds=60)
# Labels that name the host an alert is about (node exporter's `instance` is "host:port").
HOST_LABELS = ("host", "instance", "hostname", "node", "nodename")
NO_PROMETHEUS = (
    "this worker has no Prometheus to ask (set PATCHPILOT_PROMETHEUS_URL on the worker), so the "
    "gate cannot pass"
)


class GateControl(RolloutControl):
    """Argument of the `gate` update: `cut` ends the soak now, `extend` adds `by` (10 min)."""

    model_config = ConfigDict(extra="ignore")

    action: Literal["cut", "extend"]
    by: PositiveDuration | None = None


def own_gates(rollout: Any) -> GateSettings:
    """The gate fields a RolloutInput sets itself."""
    return GateSettings(
        soak_time=rollout.soak_time,
        gate_timeout=rollout.gate_timeout,
        alert_matchers=rollout.alert_matchers,
        gate_queries=rollout.gate_queries,
    )


def gate_refusal(
    rollout: Any, cluster_gates: Mapping[str, GateSettings], *, prometheus: bool
) -> str | None:
    """Why this PatchPilot cannot run the gates `rollout` (a RolloutInput) asks for, or None: a
    gate that asks Prometheus (alert matchers, queries, the rollout's own or its clusters' group
    vars in `cluster_gates`) needs PATCHPILOT_PROMETHEUS_URL. A dry run runs no gate."""
    if prometheus or rollout.dry_run:
        return None
    unset = "PatchPilot has no Prometheus to ask (PATCHPILOT_PROMETHEUS_URL is not set)"
    own = [
        field
        for field, value in (
            ("alertMatchers", rollout.alert_matchers),
            ("gateQueries", rollout.gate_queries),
        )
        if value
    ]
    if own:
        return f"{own[0]}: a gate that asks Prometheus is refused: {unset}"
    asking = [
        c
        for c in rollout.target_clusters
        if c in cluster_gates and cluster_gates[c].asks_prometheus
    ]
    if asking:
        return (
            f"targetClusters: {', '.join(asking)} gate their waves on Prometheus (inventory "
            f"patchpilot_alert_matchers / patchpilot_gate_queries), and {unset}"
        )
    return None


def poll_interval(total: timedelta) -> timedelta:
    """How often a wait of `total` asks Prometheus again: a tenth of it, 1 s to 30 s."""
    return min(max(total / 10, timedelta(seconds=1)), timedelta(seconds=30))


def alert_hosts(alert: FiringAlert, hosts: Sequence[str]) -> list[str]:
    """Those of `hosts` the alert is about: a host label equal to the name, or the name followed
    by ':' (a port) or '.' (a domain)."""
    values = [alert.labels[label] for label in HOST_LABELS if label in alert.labels]
    return [
        host
        for host in hosts
        if any(v == host or v.startswith((f"{host}:", f"{host}.")) for v in values)
    ]


def describe_alerts(firing: Sequence[FiringAlert]) -> str:
    """'HighErrorRate on a2, NodeDown on b1 (+3 more)' for people."""

    def one(alert: FiringAlert) -> str:
        where = next((alert.labels[k] for k in HOST_LABELS if k in alert.labels), None)
        return f"{alert.name} on {where}" if where else alert.name

    shown = ", ".join(one(alert) for alert in firing[:5])
    return shown + (f" (+{len(firing) - 5} more)" if len(firing) > 5 else "")


def clock(moment: datetime, span: timedelta) -> str:
    """'14:32 UTC' (with seconds when the wait is under two minutes)."""
    return moment.strftime("%H:%M:%S UTC" if span < timedelta(minutes=2) else "%H:%M UTC")


def span_text(span: timedelta) -> str:
    seconds = round(span.total_seconds())
    return f"{seconds // 60} min" if seconds >= 120 and seconds % 60 == 0 else f"{seconds} s"
