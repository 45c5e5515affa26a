"""Structured logs and Prometheus metrics for a PatchPilot worker.

Logs: ``configure_logging(level, "json")`` writes one JSON object per line. Records written while
a step (activity) runs carry ``rollout_id``, ``host``, ``cluster`` and ``step``; records from
Temporal's workflow and activity loggers carry ``workflow_id`` (and ``activity``). Every step also
logs one line when it ends (``step <name> on <host> ok|error in <s>``).

Metrics: ``start_metrics(port)`` makes the Temporal SDK runtime serve Prometheus text at
``http://<host>:<port>/metrics`` (call it before any Temporal client connects). That endpoint has
the SDK's own metrics (``temporal_*``: activity execution latency per activity type, workflow
completions, polls, ...) and PatchPilot's, recorded by ``PatchPilotInterceptor``:

- ``patchpilot_hosts_patched{cluster}`` counter: hosts whose whole patch run succeeded
- ``patchpilot_hosts_failed{cluster,step}`` counter: hosts that failed, by failed step
- ``patchpilot_rollouts{phase}`` counter: finished rollouts by phase (succeeded, failed, ...)
- ``patchpilot_hosts_in_maintenance`` gauge: hosts this worker put in maintenance mode and has
  not taken out again (a failed host stays in maintenance on purpose)
- ``patchpilot_step_duration_seconds{activity_type,outcome}`` histogram: each step (activity)
  attempt, ``outcome`` ok or error

Workflow-side metrics go through ``workflow.metric_meter()``, which records nothing while a
workflow is replayed, so a worker restart does not count a host twice.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from temporalio import activity, workflow
from temporalio.exceptions import ApplicationError
from temporalio.runtime import Runtime
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

with workflow.unsafe.imports_passed_through():
    from workflows import names
    from workflows.models import HOST_WORKFLOW_NAME, WORKFLOW_NAME, HostPatchResult

HOSTS_PATCHED = "patchpilot_hosts_patched"
HOSTS_FAILED = "patchpilot_hosts_failed"
ROLLOUTS = "patchpilot_rollouts"
HOSTS_IN_MAINTENANCE = "patchpilot_hosts_in_maintenance"
STEP_DURATION = "patchpilot_step_duration_seconds"
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# What the step running in this task is about; read by the JSON formatter.
_step_context: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "patchpilot_step_context", default=None
)
log = logging.getLogger("patchpilot.steps")

# ---------------------------------------------------------------------- logs

_STANDARD_ATTRIBUTES = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, context, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _step_context.get()
        if context:
            entry.update(context)
        temporal_workflow = getattr(record, "temporal_workflow", None)
        if isinstance(temporal_workflow, Mapping):
            entry.setdefault("workflow_id", temporal_workflow.get("workflow_id"))
            entry.setdefault("workflow_type", temporal_workflow.get("workflow_type"))
        temporal_activity = getattr(record, "temporal_activity", None)
        if isinstance(temporal_activity, Mapping):
            entry.setdefault("workflow_id", temporal_activity.get("workflow_id"))
            entry.setdefault("activity", temporal_activity.get("activity_type"))
            entry.setdefault("step", temporal_activity.get("activity_type"))
        for key, value in vars(record).items():
            if key in _STANDARD_ATTRIBUTES or key.startswith("temporal_") or key in entry:
                continue
            entry[key] = value if isinstance(value, str | int | float | bool | None) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps({k: v for k, v in entry.items() if v is not None}, default=str)


def configure_logging(
    level: str = "info", fmt: str = "text", stream: IO[str] | None = None
) -> logging.Handler:
    """Route every logger to ``stream`` (stderr) as text or JSON lines; returns the handler."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: choose one of {', '.join(LOG_FORMATS)}")
    if level.upper() not in logging.getLevelNamesMapping():  # what logging accepts (WARN too)
        raise ValueError(f"log level {level!r}: choose one of {', '.join(LOG_LEVELS).lower()}")
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # One line per SSH connection event is noise at info level; warnings still get through.
    logging.getLogger("asyncssh").setLevel(max(root.level, logging.WARNING))
    return handler


# ---------------------------------------------------------------------- metrics


def start_metrics(port: int, host: str = "0.0.0.0") -> str:
    """Serve Prometheus metrics from the Temporal runtime; returns the scrape URL.

    Must run before the first Temporal client connects: the runtime is process-wide.
    """
    from temporalio.runtime import PrometheusConfig, TelemetryConfig

    runtime = Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=f"{host}:{port}",
                durations_as_seconds=True,
                histogram_bucket_overrides={STEP_DURATION: list(STEP_BUCKETS)},
            )
        )
    )
    Runtime.set_default(runtime, error_if_already_set=True)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    return f"http://{shown}:{port}/metrics"


class _MaintenanceView:
    """Hosts this worker put into maintenance mode and has not taken out again."""

    def __init__(self) -> None:
        self._hosts: set[str] = set()
        self._lock = threading.Lock()

    def update(self, step: str, host: str) -> int | None:
        with self._lock:
            if step == names.SET_MAINTENANCE_MODE:
                self._hosts.add(host)
            elif step == names.CLEAR_MAINTENANCE_MODE:
                self._hosts.discard(host)
            else:
                return None
            return len(self._hosts)


class _StepInterceptor(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, maintenance: _MaintenanceView) -> None:
        super().__init__(next)
        self._maintenance = maintenance

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        step = info.activity_type
        context = {"step": step, **_describe(input.args)}
        if info.workflow_id:
            context["workflow_id"] = info.workflow_id
            if info.workflow_type == WORKFLOW_NAME:
                context.setdefault("rollout_id", info.workflow_id)
        token = _step_context.set(context)
        started = time.monotonic()
        outcome = "error"
        try:
            result = await self.next.execute_activity(input)
            outcome = "ok"
            return result
        finally:
            elapsed = time.monotonic() - started
            # The activity's meter labels the series with activity_type (the step) already.
            activity.metric_meter().create_histogram_float(
                STEP_DURATION, "Duration of each PatchPilot step (activity) attempt", "s"
            ).record(elapsed, {"outcome": outcome})
            host = context.get("host")
            if outcome == "ok" and host:
                in_maintenance = self._maintenance.update(step, host)
                if in_maintenance is not None:
                    # The runtime's meter: one series, not one per activity type.
                    Runtime.default().metric_meter.create_gauge(
                        HOSTS_IN_MAINTENANCE,
                        "Hosts this worker put in maintenance mode and has not taken out",
                    ).with_additional_attributes({"task_queue": info.task_queue}).set(
                        in_maintenance
                    )
            where = f" on {host}" if host else ""
            log.info("step %s%s %s in %.2fs", step, where, outcome, elapsed)
            _step_context.reset(token)


def _describe(args: Any) -> dict[str, str]:
    """rollout_id / host / cluster from a step's input (HostStepInput, RolloutNotice, ...)."""
    found: dict[str, str] = {}
    first = args[0] if args else None
    if first is None:
        return found
    rollout_id = getattr(first, "rollout_id", None)
    if isinstance(rollout_id, str):
        found["rollout_id"] = rollout_id
    target = getattr(first, "host", None)
    name = getattr(target, "name", None) or getattr(first, "hostname", None)
    if isinstance(name, str):
        found["host"] = name
    cluster = getattr(target, "cluster", None) or getattr(first, "cluster", None)
    if isinstance(cluster, str):
        found["cluster"] = cluster
    return found


class _RolloutMetrics(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        kind = workflow.info().workflow_type
        try:
            result = await self.next.execute_workflow(input)
        except (ApplicationError, asyncio.CancelledError) as error:
            # The run ends with these; other exceptions fail the workflow task, which is retried.
            if kind == WORKFLOW_NAME:
                cancelled = isinstance(error, asyncio.CancelledError)
                _rollout_finished("cancelled" if cancelled else "failed")
            raise
        if kind == HOST_WORKFLOW_NAME and isinstance(result, HostPatchResult):
            job = input.args[0] if input.args else None
            cluster = str(getattr(getattr(job, "host", None), "cluster", "unknown"))
            meter = workflow.metric_meter()
            if result.ok:
                meter.create_counter(HOSTS_PATCHED, "Hosts patched successfully").add(
                    1, {"cluster": cluster}
                )
            else:
                meter.create_counter(HOSTS_FAILED, "Hosts whose patch run failed").add(
                    1, {"cluster": cluster, "step": result.step or "unknown"}
                )
        elif kind == WORKFLOW_NAME:
            phase = getattr(getattr(result, "phase", None), "value", "unknown")
            _rollout_finished(str(phase))
        return result


def _rollout_finished(phase: str) -> None:
    workflow.metric_meter().create_counter(ROLLOUTS, "Finished rollouts by phase").add(
        1, {"phase": phase}
    )


class PatchPilotInterceptor(Interceptor):
    """Step logs with context, step durations, hosts in maintenance, hosts patched and failed."""

    def __init__(self) -> None:
        self._maintenance = _MaintenanceView()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _StepInterceptor(next, self._maintenance)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _RolloutMetrics


def worker_options() -> dict[str, Any]:
    """Keyword arguments for ``bot.worker.build_worker`` that switch the interceptor on."""
    return {"interceptors": [PatchPilotInterceptor()]}
