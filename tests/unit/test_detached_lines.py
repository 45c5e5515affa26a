"""The detached update's shell lines (activities/detached.py), without a host: one path segment
per run, the operator's command recovered from what the host received (with and without sudo),
the attach's status line taken off the output people read; and the attach and runner run by
this machine's own sh: a daemon the update leaves behind holds nothing, a killed runner is seen
gone, with flock(1) and without it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

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


def _tools_without_flock(tmp_path: Path) -> str:
    """A PATH holding every tool of /usr/bin and /bin but flock(1): a host without util-linux's
    flock, whose attach looks for the runner's end every FOLLOW_SECONDS instead."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in (Path("/usr/bin"), Path("/bin"), Path("/usr/sbin"), Path("/sbin")):
        for tool in directory.iterdir():
            if tool.name != "flock" and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    return str(bin_dir)


@pytest.mark.parametrize("flock", ["with flock", "without flock"])
def test_a_daemon_the_update_leaves_behind_does_not_hold_the_attach(
    tmp_path: Path, flock: str
) -> None:
    # The runner's lock (what an attach waits on) is the runner's own: a process the update
    # starts and leaves running (a service started by a postinst, an agent) must not inherit it,
    # or every attach would wait for that process to end.
    env = dict(os.environ)
    if flock == "without flock":
        env["PATH"] = _tools_without_flock(tmp_path)
    marker = tmp_path / "daemon.pid"
    # The update outlasts the attach's first look, so the attach waits for its end.
    command = f"sleep 120 < /dev/null > /dev/null 2>&1 & echo $! > {marker}; sleep 1; echo patched"
    directory = tmp_path / "runs" / "r.1"

    def attach() -> subprocess.CompletedProcess[str]:
        line = attach_command(command, str(directory))
        return subprocess.run(
            ["sh", "-c", line], capture_output=True, text=True, timeout=30, env=env
        )

    try:
        done = attach()
        assert done.returncode == 0, done.stderr
        assert done.stdout == "patched\n"
        assert done.stderr.endswith("patchpilot-run=finished\n")
        assert (directory / "lock").exists() == (flock == "with flock")
        # A later attach (a retry) reads the finished run at once, the daemon still running.
        again = attach()
        assert again.returncode == 0 and again.stdout == "patched\n"
        assert Path(f"/proc/{marker.read_text().strip()}").exists(), "the daemon was stopped"
    finally:
        if marker.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(marker.read_text()), signal.SIGKILL)


@pytest.mark.parametrize("killed", ["the whole run", "the runner alone"])
def test_a_runner_killed_mid_run_is_seen_gone_at_once(tmp_path: Path, killed: str) -> None:
    # The whole run: what a reboot or `kill_run_command` does. The runner alone: what the OOM
    # killer may do; nothing left of the run (a pipeline's subshell) may hold the runner's lock
    # and keep the attach waiting for the command to end.
    directory = tmp_path / "runs" / "r.1"
    attach = subprocess.Popen(
        ["sh", "-c", attach_command("echo started; sleep 120", str(directory))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output = directory / "stdout"
    for _ in range(400):
        if output.exists() and output.read_text() == "started\n":
            break
        time.sleep(0.025)
    runner = int((directory / "pid").read_text())
    try:
        if killed == "the whole run":
            os.killpg(runner, signal.SIGKILL)
        else:
            os.kill(runner, signal.SIGKILL)
        out, err = attach.communicate(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(runner, signal.SIGKILL)
    assert attach.returncode == 255
    assert out == "started\n"
    assert "patchpilot-run=vanished" in err


def test_an_attach_whose_wait_on_the_lock_fails_still_follows_the_run_to_its_end(
    tmp_path: Path,
) -> None:
    # A lock that cannot be waited on (NFS's lockd away, a file the attach may not open) must
    # not make a running update look gone: the attach falls back to looking.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "flock"
    wrapper.write_text('#!/bin/sh\ncase "$1" in -s) exit 1 ;; esac\nexec /usr/bin/flock "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    directory = tmp_path / "runs" / "r.1"
    done = subprocess.run(
        ["sh", "-c", attach_command("echo a; sleep 1; echo b", str(directory))],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert (directory / "lock").exists()
    assert done.returncode == 0, done.stderr
    assert done.stdout == "a\nb\n"
    assert done.stderr.endswith("patchpilot-run=finished\n")
