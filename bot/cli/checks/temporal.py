"""Temporal: the frontend answers, the namespace exists, and a worker polls the task queue."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from bot.cli.checks import CheckResult, fail, ok, short, warn
from bot.settings import Settings

CHECK = "Temporal"
WORKERS = "Temporal workers"

if TYPE_CHECKING:
    from temporalio.client import Client


def connect_problem(error: BaseException) -> str:
    """Why a connection failed, in words: no answer, refused, or a name that does not resolve."""
    if isinstance(error, TimeoutError):
        return "no answer"
    text = str(error)
    if "ConnectionRefused" in text or "Connection refused" in text:
        return "connection refused (nothing listens there)"
    if "dns error" in text or "failed to lookup address" in text:
        return "the host name does not resolve"
    return short(error)


async def _connect(settings: Settings, timeout: float) -> tuple[str, CheckResult | None, Any]:
    """(what is in use: profile, address, namespace, TLS, auth and whether the server's
    certificate verifies; the failure, if any; a client when connected)."""
    from bot.temporal_config import (
        TemporalConfigError,
        check_certificate,
        connect_client,
        temporal_target,
    )

    try:
        target = temporal_target(settings)
    except TemporalConfigError as error:
        fix = "Fix the temporal.toml profile or the TEMPORAL_TLS_* variables"
        return "", fail(CHECK, short(error, 300), fix), None
    used = target.describe()
    if target.tls:
        try:
            used += "; " + await check_certificate(target, timeout)
        except Exception as error:
            name = target.server_name or target.address
            return (
                used,
                fail(
                    CHECK,
                    f"{used}; the certificate of {name} does not verify: {short(error)}",
                    "Set TEMPORAL_TLS_SERVER_CA_CERT_PATH to the CA that signed the server's "
                    "certificate (or server_ca_cert in temporal.toml), and "
                    "TEMPORAL_TLS_SERVER_NAME when it is issued for another name",
                ),
                None,
            )
    try:
        client = await asyncio.wait_for(connect_client(settings), timeout=timeout)
    except Exception as error:
        return (
            used,
            fail(
                CHECK,
                f"cannot reach Temporal at {target.address}: {connect_problem(error)} ({used})",
                "Start the Temporal server (for a trial: `temporal server start-dev`) and set "
                "TEMPORAL_ADDRESS=host:port (default localhost:7233) or a temporal.toml profile",
            ),
            None,
        )
    return used, None, client


async def check_temporal(settings: Settings, timeout: float) -> list[CheckResult]:
    """What connection settings are in use (profile, address, namespace, TLS, auth, the server's
    certificate), then connect, describe the namespace and count the task queue's pollers
    (`timeout` s each)."""
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.service import RPCError, RPCStatusCode

    used, failure, client = await _connect(settings, timeout)
    if failure is not None:
        return [failure]
    address, namespace = client.service_client.config.target_host, client.namespace
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), timeout=timedelta(seconds=timeout)
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return [
                fail(
                    CHECK,
                    f"{address} answers, but namespace {namespace!r} does not exist",
                    f"Create it (`temporal operator namespace create --namespace {namespace}`) "
                    "or set TEMPORAL_NAMESPACE to an existing one",
                )
            ]
        return [
            fail(
                CHECK,
                f"{address} refused DescribeNamespace({namespace}): {short(error)} ({used})",
                "Check TEMPORAL_ADDRESS/TEMPORAL_NAMESPACE, the API key or client certificate, "
                "and the server's logs",
            )
        ]
    except Exception as error:
        return [
            fail(
                CHECK,
                f"{address}: DescribeNamespace({namespace}) failed: {short(error)} ({used})",
                "Check that TEMPORAL_ADDRESS is a Temporal frontend (gRPC, usually port 7233)",
            )
        ]
    reachable = ok(CHECK, f"{used}; reachable, namespace {namespace!r} exists")
    return [reachable, await _check_pollers(client, settings, timeout)]


async def _check_pollers(client: Client, settings: Settings, timeout: float) -> CheckResult:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    queue_name = settings.task_queue
    try:
        queue = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=queue_name),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=timedelta(seconds=timeout),
        )
    except Exception as error:
        return warn(WORKERS, f"cannot describe task queue {queue_name!r}: {short(error)}")
    if queue.pollers:
        return ok(WORKERS, f"{len(queue.pollers)} worker(s) polling task queue {queue_name!r}")
    return warn(
        WORKERS,
        f"no worker has polled task queue {queue_name!r} recently: rollouts would wait",
        "Run `patchpilot bot` (embedded worker) or `patchpilot worker` with the same "
        "PATCHPILOT_TASK_QUEUE",
    )
