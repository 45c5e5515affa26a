"""The workflow sandbox PatchPilot's workers use."""

from __future__ import annotations

import dataclasses

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

# Pure libraries the workflows call (window computation); APScheduler imports some of its modules
# lazily, so they are passed through by package rather than by import site.
PASSTHROUGH = ("apscheduler", "tzlocal", "pydantic", "pydantic_core")


def workflow_runner() -> SandboxedWorkflowRunner:
    """Temporal's sandbox with its default restrictions (non-deterministic modules and calls
    refused, each workflow run in fresh module state), PASSTHROUGH passed through, and without
    its checks on the builtins `open`, `input` and `breakpoint`.

    Why without those three: to check them the sandbox swaps five builtins (the three, plus
    `isinstance` and `issubclass`, wrapped to unwrap its proxies) in and out on every entry into
    workflow code — every activation and every payload the SDK encodes or decodes — and every
    `isinstance` in a workflow then runs through Python. At 1,000 hosts that was about a quarter
    of the worker's CPU (cProfile, bench/README.md "engine v5"). tests/unit/test_layout.py refuses
    the three calls in workflows/ instead, before the code runs."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
    members = restrictions.invalid_module_members
    children = {name: m for name, m in members.children.items() if name != "__builtins__"}
    return SandboxedWorkflowRunner(
        restrictions=dataclasses.replace(
            restrictions, invalid_module_members=dataclasses.replace(members, children=children)
        )
    )
