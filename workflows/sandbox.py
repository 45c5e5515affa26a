"""The workflow sandbox PatchPilot's workers use."""

from __future__ import annotations

import dataclasses
from typing import Any

from temporalio.converter import SerializationContext
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

# Private to the SDK (temporalio 1.35, pinned in uv.lock): the sandboxed instance, subclassed
# below for two methods, which fall back to the SDK's own where the instance is not as expected.
from temporalio.worker.workflow_sandbox._runner import _Instance as _SdkInstance

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
    return _Runner(
        restrictions=dataclasses.replace(
            restrictions, invalid_module_members=dataclasses.replace(members, children=children)
        )
    )


class _Instance(_SdkInstance):
    """The SDK's sandboxed instance, asked for a payload's serialization context and external
    store context without entering the sandbox.

    The SDK's payload visitor asks for both for every payload of every activation and
    completion (the store context even with no external storage configured); the SDK's own
    answer enters the sandbox to ask (compiling a two-line string with `exec` and swapping
    `sys.modules` and `__import__` in and out), for methods that only build dataclasses from
    the workflow's info and its pending commands, import nothing and read no restricted module.
    8-10 % of the worker's CPU at 48 hosts (cProfile, bench/README.md, "engine v6"). Before the
    instance exists in the sandbox, the SDK's path is kept."""

    def _in_sandbox(self) -> Any:
        return self.globals_and_locals.get("__temporal_in_sandbox")

    def get_serialization_context(self, command_info: Any) -> SerializationContext | None:
        in_sandbox = self._in_sandbox()
        if in_sandbox is None:
            return super().get_serialization_context(command_info)
        context: SerializationContext | None = in_sandbox.get_serialization_context(command_info)
        return context

    def get_external_store_context(self, command_info: Any) -> Any:
        in_sandbox = self._in_sandbox()
        if in_sandbox is None:
            return super().get_external_store_context(command_info)
        return in_sandbox.get_external_store_context(command_info)


@dataclasses.dataclass(frozen=True)
class _Runner(SandboxedWorkflowRunner):
    def create_instance(self, det: Any) -> Any:
        return _Instance(det, self.runner_class, self.restrictions)
