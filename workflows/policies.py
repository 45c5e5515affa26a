"""How hard the workflows try and how long they wait, and how a failure reads to a person.

The rollout, the host workflow and the front ends share these (front ends show `failure_reason`
and find a host's workflow by `host_workflow_id`); nothing here calls Temporal.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, TimeoutError

from workflows.models import STEP_TIME_LIMIT

TRANSIENT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=3,
)
# The update runs detached on the host (activities/detached.py): a retry after a lost worker
# (heartbeat timeout) attaches to the same run and waits for its exit status, and a connection
# dropped mid-update is attached to again within the attempt; only when the host stays unreachable
# until the update's limit is the outcome unknown (SshConnectionLost), and the rollout stops.
# Retries are therefore safe, and a worker too busy to heartbeat in time is not a dead one: at
# 10,000 hosts (bench/scale.py) a host's update timed out (heartbeat) twice on a loaded worker
# and, at 2 attempts, failed the host and stopped the rollout.
UPDATE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=20),
    maximum_attempts=5,
    non_retryable_error_types=["SshConnectionLost"],
)
# A sealed or restarting Vault usually returns within half a minute.
VAULT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=6,
)
# A first look that fails is not retried: the step's own activity follows, with its retries.
ONE_TRY = RetryPolicy(maximum_attempts=1)
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
# Activities heartbeat every 5 s; a dead worker is noticed within this.
HEARTBEAT = timedelta(seconds=10)
# A step that runs a few quick commands over one SSH connection.
QUICK_STEP = STEP_TIME_LIMIT
# Added to a step's own time limit, so the activity reports its own timeout before Temporal's.
MARGIN = timedelta(seconds=60)
# One call to the inventory, Vault or a notifier.
LOOKUP = timedelta(seconds=60)
# Ansible reading the inventory: a 10,000-host YAML inventory takes it ~15 s on an idle core and a
# cloud plugin queries an API (activities.ansible_inventory.RUN_TIMEOUT_SECONDS is the same).
INVENTORY_LOOKUP = timedelta(minutes=5)
# A dry run's read-only commands on one host, and the activity around them.
INSPECT_COMMANDS = timedelta(seconds=120)
INSPECT_STEP = timedelta(minutes=3)

HOST_WORKFLOW_PREFIX = "patch-host-"


def host_workflow_id(hostname: str) -> str:
    """One id per host, so Temporal itself refuses a second rollout patching it at the same time."""
    return f"{HOST_WORKFLOW_PREFIX}{hostname}"


def raise_if_cancelled(error: ActivityError) -> None:
    """Raise asyncio.CancelledError when `error` is the awaited activity's cancellation: the SDK
    hands a workflow's cancel to the activity it awaits, and code that catches the activity's
    error would otherwise swallow the cancel (and, say, start the next wave)."""
    if isinstance(error.cause, CancelledError):
        raise asyncio.CancelledError() from error


def failure_reason(error: BaseException) -> str:
    """The most specific human-readable message in a chain of Temporal failures."""
    messages: list[str] = []
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, TimeoutError):
            kind = current.type.name.lower().replace("_", "-") if current.type else "timeout"
            messages.append(f"timed out ({kind})")
        elif isinstance(current, ApplicationError | CancelledError) and current.message:
            messages.append(current.message)
        elif not isinstance(current, ActivityError) and str(current):
            messages.append(str(current))
        current = current.__cause__
    return messages[-1] if messages else type(error).__name__
