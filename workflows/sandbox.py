"""The workflow sandbox PatchPilot's workers use."""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

# Pure libraries the workflows call (window computation); APScheduler imports some of its modules
# lazily, so they are passed through by package rather than by import site.
PASSTHROUGH = ("apscheduler", "tzlocal", "pydantic", "pydantic_core")


def workflow_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    )
