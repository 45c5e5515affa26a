"""`patchpilot worker` with flags it cannot work with: one line naming the flag, exit 2, before
anything starts (no Temporal is started or reached, no port is held)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

PATCHPILOT = str(Path(sys.executable).parent / "patchpilot")


def worker(*flags: str, **settings: str) -> subprocess.CompletedProcess[str]:
    # A Temporal nobody listens on: were the flags accepted, the worker would fail to connect.
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:9", "COLUMNS": "200"}
    env["PATCHPILOT_INVENTORY"] = str(Path(__file__).parent / "no-such-inventory.yml")
    env.pop("PATCHPILOT_CONFIG", None)
    env.update(settings)
    for name in [name for name, value in settings.items() if not value]:
        env.pop(name)  # "": not set at all
    return subprocess.run(
        [PATCHPILOT, "worker", "--no-policy", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (("--log-format", "xml"), "log format 'xml': choose one of text, json"),
        (
            ("--log-level", "loud"),
            "log level 'loud': choose one of debug, info, warning, error, critical",
        ),
        (
            ("--metrics-port", "99999"),
            "'--metrics-port' (env var: 'PATCHPILOT_METRICS_PORT'): Input should be less than or "
            "equal to 65535",
        ),
    ],
)
def test_a_flag_the_worker_cannot_use_is_named(flags: tuple[str, ...], said: str) -> None:
    ran = worker(*flags)
    assert ran.returncode == 2, ran.stderr
    assert said in " ".join(ran.stderr.split()) and "Traceback" not in ran.stderr


def test_a_metrics_port_in_use_is_named() -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = worker("--metrics-port", str(port))
    assert ran.returncode == 2, ran.stderr
    assert f"--metrics-port {port}:" in " ".join(ran.stderr.split())
    assert "Traceback" not in ran.stderr


def test_a_worker_without_an_inventory_does_not_start() -> None:
    # Any worker on the task queue takes any rollout: one without an inventory would fail them.
    ran = worker(PATCHPILOT_INVENTORY="")
    assert ran.returncode == 2, ran.stderr
    assert "PATCHPILOT_INVENTORY is not set" in " ".join(ran.stderr.split())


def test_a_bot_without_an_inventory_does_not_start() -> None:
    # Its embedded worker takes rollouts as any worker does.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PATCHPILOT_"))}
    env |= {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "TEMPORAL_ADDRESS": "x:9"}
    ran = subprocess.run(
        [PATCHPILOT, "bot", "--no-policy"], env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 2, ran.stderr
    assert "PATCHPILOT_INVENTORY is not set" in " ".join(ran.stderr.split())


def start(*flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:9", "COLUMNS": "200"}
    env.pop("PATCHPILOT_CONFIG", None)
    env.pop("PATCHPILOT_INVENTORY", None)
    base = ["start", "cluster-a", "--requester", "bob@example.com", "--approver"]
    return subprocess.run(
        [PATCHPILOT, *base, "alice@example.com", "--update", "true", "--pilot", "1", *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_start_takes_a_share_of_the_cluster_as_the_field_table_says() -> None:
    # Accepted: the start gets as far as Temporal (nobody listens at 127.0.0.1:9).
    shares = start("--max-concurrency", "25%", "--max-failures", "10%")
    assert shares.returncode == 2 and "cannot reach Temporal" in shares.stderr, shares.stderr
    bad = start("--max-concurrency", "lots")
    said = " ".join(bad.stderr.split())
    assert bad.returncode == 2 and "maxConcurrency" in said and "lots" in said, said
    assert "cannot reach Temporal" not in said
