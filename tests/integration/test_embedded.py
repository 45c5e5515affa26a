"""`patchpilot worker` without TEMPORAL_ADDRESS: an embedded Temporal whose database survives."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bot.settings import Settings
from lab import Lab
from tests.integration.test_faults import PATCHPILOT
from tests.integration.test_rollout import approve, rollout, start
from tests.support import wait_for, worker_env
from workflows.models import Phase, RolloutProgress, RolloutSummary

# Temporal's own ports 7233 and 8233 (its Web UI), which the demo on a fresh machine tries too:
# never at the same time, whichever pytest-xdist worker runs them (tests/scheduling.py).
pytestmark = pytest.mark.xdist_group("temporal-default-ports")


def embedded_worker(settings: Settings, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **worker_env(settings), "PATCHPILOT_DATA_DIR": str(data_dir)}
    env.pop("TEMPORAL_ADDRESS")
    return subprocess.Popen(
        [PATCHPILOT, "worker", "--no-policy"],
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def interrupt(process: subprocess.Popen[bytes], how: signal.Signals = signal.SIGINT) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it), or `how` to the worker's
    own process only, as `docker stop`, Kubernetes and systemd's main-process stop send it."""
    if how == signal.SIGINT:
        os.killpg(process.pid, how)
    else:
        process.send_signal(how)
    try:
        status = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # not left on Temporal's ports for the next test
        status = process.wait()
    assert status in (0, 130), "the worker did not stop cleanly"


async def test_embedded_temporal_keeps_rollouts_across_a_restart(
    fleet: Lab, worker_settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    first = embedded_worker(worker_settings, tmp_path / "data", log)
    try:
        await wait_for(lambda: "worker polling task queue" in log.read_text(), timeout=60)
        said = " ".join(log.read_text().split())  # rich wraps long lines
        assert "started an embedded Temporal dev server on 127.0.0.1:7233" in said
        client = await Client.connect("127.0.0.1:7233", data_converter=pydantic_data_converter)
        handle = await start(client, worker_settings, rollout(["cluster-a"]))
        for _ in range(50):
            progress = await handle.query("progress", result_type=RolloutProgress)
            if progress.phase == Phase.AWAITING_APPROVAL:
                break
            await asyncio.sleep(0.2)
    finally:
        interrupt(first)
    assert (tmp_path / "data" / "temporal.db").exists()

    second = embedded_worker(worker_settings, tmp_path / "data", log)
    try:
        await wait_for(lambda: log.read_text().count("worker polling task queue") == 2, timeout=60)
        client = await Client.connect("127.0.0.1:7233", data_converter=pydantic_data_converter)
        resumed = client.get_workflow_handle(handle.id, result_type=RolloutSummary)
        await approve(resumed)
        summary = await asyncio.wait_for(resumed.result(), timeout=120)
    finally:
        interrupt(second, signal.SIGTERM)
    # SIGTERM stops the worker as Ctrl-C does, its embedded Temporal with it.
    assert " ".join(log.read_text().split()).endswith("worker stopped")
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", 7233), timeout=2):
        pass
    assert summary.phase == Phase.SUCCEEDED
    assert [fleet.update_count(h) for h in ["a1", "a2", "a3"]] == [1, 1, 1]
