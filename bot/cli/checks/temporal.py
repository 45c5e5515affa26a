"""Temporal: the frontend answers, the namespace exists, and a worker polls the task queue."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

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


async def check_temporal(settings: Settings, timeout: float) -> list[CheckResult]:
    """Connect, describe the namespace, then count the task queue's pollers (`timeout` s each)."""
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode

    address, namespace = settings.temporal_address, settings.temporal_namespace
    try:
        client = await asyncio.wait_for(
            Client.connect(address, namespace=namespace), timeout=timeout
        )
    except Exception as error:
        return [
            fail(
                CHECK,
                f"cannot reach Temporal at {address}: {connect_problem(error)}",
                "Start the Temporal server (for a trial: `temporal server start-dev`) and set "
                "TEMPORAL_ADDRESS=host:port (default localhost:7233)",
            )
        ]
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
                f"{address} refused DescribeNamespace({namespace}): {short(error)}",
                "Check TEMPORAL_ADDRESS/TEMPORAL_NAMESPACE and the server's logs",
            )
        ]
    except Exception as error:
        return [
            fail(
                CHECK,
                f"{address}: DescribeNamespace({namespace}) failed: {short(error)}",
                "Check that TEMPORAL_ADDRESS is a Temporal frontend (gRPC, usually port 7233)",
            )
        ]
    reachable = ok(CHECK, f"{address} reachable, namespace {namespace!r} exists")
    return [reachable, await _check_pollers(client, settings, timeout)]


async def _check_pollers(client: Client, settings: Settings, timeout: float) -> CheckResult:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    queue_name = settings.task_queue
    try:
        queue = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=settings.temporal_namespace,
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
