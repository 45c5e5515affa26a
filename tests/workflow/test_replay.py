"""Histories recorded from real integration runs, replayed against today's workflow code.

A change that makes the workflows non-deterministic for rollouts already in flight fails here.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.host_patch import HostPatchWorkflow
from workflows.sandbox import workflow_runner
from workflows.system_patch import SystemPatchWorkflow

ROOT = Path(__file__).resolve().parents[1] / "histories"
# Today's shape at the top; an older engine's under its name (engine-v4: before the host
# workflow's first looks), which today's code must still replay for rollouts in flight.
CURRENT = sorted(ROOT.glob("*.json"))
HISTORIES = sorted(ROOT.rglob("*.json"))


def test_recorded_histories_exist() -> None:
    for histories in (CURRENT, sorted((ROOT / "engine-v4").glob("*.json"))):
        names = {path.name.split(".")[0] for path in histories}
        assert {"succeeded", "failed-pilot", "cancelled"} <= names


def _first_looks(path: Path) -> bool:
    """Whether a recorded host workflow was started with the v5 shape's flag in its input."""
    started = json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]
    (payload,) = started["input"]["payloads"]
    return json.loads(base64.b64decode(payload["data"])).get("firstLooks", False)


def test_todays_host_histories_have_todays_shape() -> None:
    hosts = [path for path in HISTORIES if ".host-" in path.name]
    for path in hosts:
        assert _first_looks(path) == (path.parent.name != "engine-v4"), path.name
    assert {path.parent.name for path in hosts} == {"histories", "engine-v4"}


@pytest.mark.parametrize(
    "path", HISTORIES, ids=[str(path.relative_to(ROOT).with_suffix("")) for path in HISTORIES]
)
async def test_history_replays_deterministically(path: Path) -> None:
    replayer = Replayer(
        workflows=[SystemPatchWorkflow, HostPatchWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
