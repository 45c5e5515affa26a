"""`ansible-inventory` through the fork server answers exactly as the command does, reads a changed
source afresh, follows a changed environment, never waits for a busy server, and is killed with
its reading when the time is up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from activities.ansible_inventory import _STRICT_ENV, run_ansible_inventory
from activities.ansible_runner import ForkServer, run_inventory_cli

INI = "[cluster-a]\na[1:3]\n[cluster-b]\nb1 ansible_host=10.0.0.21\n"


def command(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """What `ansible-inventory ARGS` answers as a command of its own."""
    return subprocess.run(
        [sys.executable, "-m", "ansible.cli.inventory", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.fixture
def server() -> Iterator[ForkServer]:
    made = ForkServer()
    yield made
    made.close()


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        (INI, None),
        (INI, "b1,a2"),
        (INI, "web0[1-3]"),  # warnings only
        ("all: [\n", None),  # Ansible's refusal and exit code
    ],
    ids=["ini", "ini-limit", "limit-warnings", "malformed-yaml"],
)
def test_the_fork_server_answers_as_the_command(
    server: ForkServer, tmp_path: Path, text: str, limit: str | None
) -> None:
    source = tmp_path / ("hosts.ini" if text == INI else "hosts.yml")
    source.write_text(text)
    args = ["--list", "-i", str(source), *(["--limit", limit] if limit else [])]
    env = {**os.environ, **_STRICT_ENV}
    served, alone = server.run(args, env, 60), command(args, env)
    assert served is not None
    assert (served.returncode, served.stdout) == (alone.returncode, alone.stdout)
    assert served.stderr == alone.stderr


def test_a_changed_group_vars_file_is_read_afresh_by_the_same_server(tmp_path: Path) -> None:
    source = tmp_path / "hosts.ini"
    source.write_text(INI)
    (tmp_path / "group_vars").mkdir()
    env = {**os.environ, **_STRICT_ENV}
    server = ForkServer()
    try:
        for value in ("one", "two"):
            (tmp_path / "group_vars" / "cluster-a.yml").write_text(f"patchpilot_health: {value}\n")
            done = server.run(["--list", "-i", str(source)], env, 60)
            assert done is not None and done.returncode == 0
            assert f'"patchpilot_health": "{value}"' in done.stdout
        assert server.started == 1
    finally:
        server.close()


def test_a_changed_environment_starts_a_new_server(server: ForkServer, tmp_path: Path) -> None:
    source = tmp_path / "broken.yml"
    source.write_text("all: [\n")
    lenient = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    strict = {**lenient, **_STRICT_ENV}
    first = server.run(["--list", "-i", str(source)], lenient, 60)
    second = server.run(["--list", "-i", str(source)], strict, 60)
    assert first is not None and second is not None
    # Without PatchPilot's settings Ansible only warns; with them it refuses the source.
    assert first.returncode == 0 and second.returncode != 0
    assert server.started == 2


def test_a_busy_server_is_not_waited_for(server: ForkServer, tmp_path: Path) -> None:
    source = tmp_path / "hosts.ini"
    source.write_text(INI)
    env = {**os.environ, **_STRICT_ENV}
    with server._lock:  # a reading in flight
        assert server.run(["--list", "-i", str(source)], env, 60) is None
    # run_inventory_cli then runs the command itself, with the same answer.
    alone = run_inventory_cli(["--list", "-i", str(source)], env, 60)
    assert alone.returncode == 0 and '"a1"' in alone.stdout


def test_a_reading_past_its_time_is_killed_and_the_next_one_works(
    server: ForkServer, tmp_path: Path
) -> None:
    slow = tmp_path / "slow.sh"
    slow.write_text("#!/bin/sh\nsleep 60\n")
    slow.chmod(0o755)
    env = {**os.environ, **_STRICT_ENV}
    began = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        server.run(["--list", "-i", str(slow)], env, 1)
    assert time.monotonic() - began < 8
    source = tmp_path / "hosts.ini"
    source.write_text(INI)
    done = server.run(["--list", "-i", str(source)], env, 60)
    assert done is not None and done.returncode == 0 and server.started == 2


def test_readings_through_the_module_server_are_cheap(tmp_path: Path) -> None:
    source = tmp_path / "hosts.ini"
    source.write_text(INI)
    run_ansible_inventory([str(source)])  # the server starts
    began = time.monotonic()
    for limit in ("a1", "a2", "b1", "a[0:1]", "!a3"):
        run_ansible_inventory([str(source)], limit)
    # A command of its own takes about 0.5 s (Python and Ansible's imports); generous bound for
    # a loaded machine.
    assert (time.monotonic() - began) / 5 < 0.3
