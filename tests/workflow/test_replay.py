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

from tests.support import decoded_history
from workflows import names
from workflows.host_patch import HostPatchWorkflow
from workflows.sandbox import workflow_runner
from workflows.system_patch import SystemPatchWorkflow

ROOT = Path(__file__).resolve().parents[1] / "histories"
# Today's shape at the top; older engines' under their names, which today's code must still
# replay for rollouts in flight: engine-v4 (before the host workflow's first looks), engine-v6
# (before the rollout asked which host notices a channel sends), engine-v7 (before the
# preconditions were a local activity), engine-v8 (before the update brought back the reboot
# decision's look).
CURRENT = sorted(ROOT.glob("*.json"))
HISTORIES = sorted(ROOT.rglob("*.json"))
OLDER = ("engine-v4", "engine-v6", "engine-v7", "engine-v8")


def test_recorded_histories_exist() -> None:
    for histories in (CURRENT, *(sorted((ROOT / older).glob("*.json")) for older in OLDER)):
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
    assert {path.parent.name for path in hosts} == {"histories", *OLDER}


def test_todays_rollouts_ask_once_which_host_notices_to_send() -> None:
    """engine v7: one PlanHostNoticesActivity (a local activity's marker) per rollout run that
    patches; a dry run patches nothing and asks nothing."""
    for path in [p for p in HISTORIES if ".host-" not in p.name]:
        asked = decoded_history(path.read_text()).count(names.PLAN_HOST_NOTICES)
        asks = path.parent.name in ("histories", "engine-v7", "engine-v8")
        patches = asks and not path.name.startswith("dry-run")
        assert asked == (1 if patches else 0), path
    # With e-mail routed away from host events, no host history schedules a notice.
    for path in sorted(ROOT.glob("host-notices-routed-away.host-*.json")):
        assert "Notification" not in decoded_history(path.read_text()), path


def test_todays_hosts_check_their_preconditions_as_a_local_activity() -> None:
    """engine v8: no CheckHostPreconditionsActivity scheduled in today's host histories (the lab
    hosts have the default maintenance commands), one in every older engine's."""
    for path in [p for p in HISTORIES if ".host-" in p.name]:
        history = json.loads(path.read_text())["events"]
        scheduled = [
            e["activityTaskScheduledEventAttributes"]["activityType"]["name"]
            for e in history
            if "activityTaskScheduledEventAttributes" in e
        ]
        local = path.parent.name in ("histories", "engine-v8")
        assert scheduled.count(names.CHECK_HOST_PRECONDITIONS) == (0 if local else 1), path
        if local:
            assert names.CHECK_HOST_PRECONDITIONS in decoded_history(path.read_text()), path


def test_todays_hosts_decide_against_a_reboot_without_a_step_of_their_own() -> None:
    """engine v10: a host whose update brought back its reboot answer, with no reboot due, has no
    RebootHostActivity in its history; the one host of the `rebooted` rollout that needed a
    reboot has it (and its boot wait); in engine v8 every host that was updated had it."""
    for path in [p for p in HISTORIES if ".host-" in p.name and "failed-pilot" not in p.name]:
        text = decoded_history(path.read_text())
        decided = text.count(names.REBOOT_HOST)
        if path.parent.name != "histories":
            # No look in them: their replay takes the reboot step's old path.
            assert "rebootLook" not in text, path
            assert decided >= 1 or path.parent.name == "engine-v4", path
            continue
        assert "rebootLook" in text, path
        rebooted = names.WAIT_FOR_HOST_BOOT in text
        assert decided == (1 if rebooted else 0), path
    assert names.WAIT_FOR_HOST_BOOT in decoded_history(
        (ROOT / "rebooted.host-patch-host-a2.json").read_text()
    )


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
