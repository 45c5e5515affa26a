"""Histories recorded from real integration runs, replayed against today's workflow code.

A change that makes the workflows non-deterministic for rollouts already in flight fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.host_patch import HostPatchWorkflow
from workflows.sandbox import workflow_runner
from workflows.system_patch import SystemPatchWorkflow

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))


def test_recorded_histories_exist() -> None:
    names = {path.name.split(".")[0] for path in HISTORIES}
    assert {"succeeded", "failed-pilot", "cancelled"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
async def test_history_replays_deterministically(path: Path) -> None:
    replayer = Replayer(
        workflows=[SystemPatchWorkflow, HostPatchWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
