"""The detached update's shell lines (activities/detached.py), without a host: one path segment
per run, the operator's command recovered from what the host received (with and without sudo),
and the attach's status line taken off the output people read."""

from __future__ import annotations

import subprocess

from activities.detached import _status, attach_command, run_directory, unwrap_attach
from activities.remote_shell import unwrap_command, wrap_command
from activities.ssh import CommandResult

COMMAND = "apt-get update && apt-get -y -o 'Dpkg::Options::=--force-confold' upgrade"


def test_a_run_directory_is_one_segment_under_the_run_dir() -> None:
    assert run_directory("/var/lib/patchpilot/runs/", "patch-a-1", "0f3c") == (
        "/var/lib/patchpilot/runs/patch-a-1.0f3c"
    )
    assert run_directory("/r", "x/../y z", "k") == "/r/x_.._y_z.k"


def test_the_command_comes_back_out_of_the_attach_line_sudo_or_not() -> None:
    line = attach_command(COMMAND, "/var/lib/patchpilot/runs/r.1")
    assert unwrap_attach(line) == COMMAND
    assert unwrap_command(wrap_command(line)) == COMMAND
    assert unwrap_command(wrap_command(line, become_user="root")) == COMMAND
    assert unwrap_attach("apt-get -y upgrade") is None
    assert unwrap_command(wrap_command("true")) == "true"


def test_the_attach_line_is_valid_posix_shell() -> None:
    line = attach_command(COMMAND, "/tmp/x")
    checked = subprocess.run(["sh", "-n", "-c", line], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_status_line_is_read_and_removed() -> None:
    raw = CommandResult("c", 100, "out\n", "E: failed\npatchpilot-run=finished\n")
    status, result = _status(raw)
    assert status == "finished" and result.stderr == "E: failed\n" and result.exit_status == 100
    status, result = _status(CommandResult("c", 255, "", "patchpilot-run=vanished pid=12\n"))
    assert status == "vanished" and result.stderr == ""
    assert _status(CommandResult("c", 1, "", "fail\n"))[0] is None
