"""Commands that change a host, in order in one SSH command (activities/checks.py run_in_order),
run by a real local `sh` and GNU timeout: the batch stops at the first command that fails, a
command over its limit is killed with its children and reported as HostSession.run reports one,
and when the batch's output cannot be read back only what it did not show as finished runs again.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
from temporalio.exceptions import ApplicationError

from activities.checks import OVERRAN, Check, checks_command, parse_checks, run_in_order, shown_ran
from activities.remote_shell import unwrap_commands, wrap_command
from activities.ssh import CommandResult, HostSession
from workflows.models import HostTarget

NONCE = "0123456789abcdef0123456789abcdef"


class LocalHost:
    """A HostSession stand-in whose commands run in a local `sh`, each in a session of its own as
    sshd starts them; `lines`: what it was sent. `path`: the PATH commands see; `noise`: printed
    after every command, as a host's logout script would."""

    def __init__(self, path: str | None = None, noise: str = "") -> None:
        self.host = HostTarget(name="h1", cluster="c", address="127.0.0.1")
        self.lines: list[str] = []
        self._env = {**os.environ, "PATH": path or os.environ["PATH"]}
        self._noise = noise

    async def run(
        self,
        command: str,
        timeout: float,
        *,
        what: str = "command",
        heartbeat: Callable[[], None] | None = None,
    ) -> CommandResult:
        self.lines.append(command)
        line = f"{command}\nrc=$?; printf %s {self._noise!r}; exit $rc" if self._noise else command
        process = await asyncio.create_subprocess_exec(
            "sh",
            "-c",
            line,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=self._env,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            raise self.overran(what, command, timeout) from None
        assert process.returncode is not None
        return CommandResult(command, process.returncode, out.decode(), err.decode())

    def overran(self, what: str, command: str, timeout: float) -> ApplicationError:
        # The same CommandTimedOut as a real session's (it reads `host` only).
        return HostSession.overran(session(self), what, command, timeout)


def session(host: LocalHost) -> HostSession:
    return cast(HostSession, host)  # run_in_order uses run, overran and host


def still_running(marker: str) -> str:
    # "[x]" keeps pgrep from finding its own shell, whose command line holds the pattern too.
    pattern = f"{marker[0]}[{marker[1]}]{marker[2:]}"
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return found.stdout.strip()


async def test_the_batch_stops_at_the_first_failing_command_and_keeps_its_message(
    tmp_path: Path,
) -> None:
    host = LocalHost()
    commands = [
        (f"touch {tmp_path}/a; echo 'a stopped'", "stopping a"),
        ("echo 'b refuses to stop' >&2; exit 5", "stopping b"),
        (f"touch {tmp_path}/c", "stopping c"),
    ]
    ran = await run_in_order(session(host), commands, 30)
    assert len(host.lines) == 1, "one command on the host"
    assert [r.exit_status for r in ran] == [0, 5]
    assert ran[0].stdout == "a stopped\n" and ran[1].tail() == "b refuses to stop"
    assert (tmp_path / "a").exists()
    assert not (tmp_path / "c").exists(), "a command after the failing one ran"


async def test_a_command_over_its_limit_is_killed_with_its_children_and_named(
    tmp_path: Path,
) -> None:
    host = LocalHost()
    marker = f"sleep {7000 + uuid.uuid4().int % 999}"  # a child of the command's shell
    commands = [
        (f"{marker} && touch {tmp_path}/a", "stopping nginx"),
        (f"touch {tmp_path}/b", "stopping postgresql"),
    ]
    began = time.monotonic()
    with pytest.raises(ApplicationError) as failed:
        await run_in_order(session(host), commands, 1)
    assert time.monotonic() - began < 5, "not killed at its limit"
    assert failed.value.type == "CommandTimedOut" and failed.value.non_retryable
    assert failed.value.message == (
        "stopping nginx on h1 (127.0.0.1:22) did not finish within 1s and was killed on the "
        f"host: {marker} && touch {tmp_path}/a"
    )
    assert still_running(marker) == "", "the overrunning command still runs"
    assert not (tmp_path / "b").exists(), "the next command ran"
    assert len(host.lines) == 1


async def test_a_command_that_exits_137_itself_is_not_taken_for_one_the_limit_killed() -> None:
    host = LocalHost()
    ran = await run_in_order(session(host), [("true", "a"), ("exit 137", "b")], 30)
    assert [r.exit_status for r in ran] == [0, 137]
    ran = await run_in_order(session(host), [("exit 124", "a"), ("true", "b")], 30)
    assert [r.exit_status for r in ran] == [124]


def test_the_workers_kill_of_the_batch_kills_the_running_command() -> None:
    # HostSession.run kills a cancelled command by TERM to the remote shell's process group;
    # timeout(1) put the command in a group of its own, which the batch's trap takes along.
    marker = f"sleep {8000 + uuid.uuid4().int % 999}"
    line = checks_command([Check(marker, go_on="0"), Check("true")], NONCE, each=600)
    batch = subprocess.Popen(
        ["sh", "-c", line], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    deadline = time.monotonic() + 10
    while still_running(marker) == "" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert still_running(marker) != ""
    os.killpg(batch.pid, signal.SIGTERM)
    batch.communicate(timeout=10)
    time.sleep(0.2)
    assert still_running(marker) == "", "the command outlived the batch's kill"


def test_a_killed_section_reads_back_as_overran_and_ends_the_batch() -> None:
    checks = [Check("sleep 30", go_on="0"), Check("echo never", go_on="0")]
    done = subprocess.run(
        ["sh", "-c", checks_command(checks, NONCE, each=0.5)], capture_output=True, text=True
    )
    result = CommandResult("x", done.returncode, done.stdout, done.stderr)
    ran = parse_checks(result, checks, NONCE)
    assert ran is not None and [r.exit_status for r in ran] == [OVERRAN]


async def test_without_timeout_on_the_host_each_command_runs_alone(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sh", "touch"):
        which = shutil.which(tool)
        assert which is not None
        (tools / tool).symlink_to(which)
    host = LocalHost(path=str(tools))
    commands = [(f"touch {tmp_path}/a", "starting a"), (f"touch {tmp_path}/b", "starting b")]
    ran = await run_in_order(session(host), commands, 30)
    assert [r.exit_status for r in ran] == [0, 0]
    assert host.lines[1:] == [command for command, _ in commands]
    assert (tmp_path / "a").exists() and (tmp_path / "b").exists()


async def test_what_the_batch_showed_as_finished_is_not_run_again(tmp_path: Path) -> None:
    # Text after the sections (a host's logout script): the batch does not parse as a whole,
    # but every command's section is there, so nothing runs twice.
    host = LocalHost(noise="bye")
    commands = [(f"echo x >> {tmp_path}/a", "a"), (f"echo x >> {tmp_path}/b", "b")]
    ran = await run_in_order(session(host), commands, 30)
    assert [r.exit_status for r in ran] == [0, 0] and len(host.lines) == 1
    assert (tmp_path / "a").read_text() == "x\n" and (tmp_path / "b").read_text() == "x\n"


def test_shown_ran_trusts_only_whole_sections_of_uncut_output() -> None:
    checks = [Check(f"echo {n}; echo e{n} >&2", go_on="0") for n in range(3)]
    done = subprocess.run(
        ["sh", "-c", checks_command(checks, NONCE, each=30)], capture_output=True, text=True
    )
    whole = CommandResult("x", 0, done.stdout, done.stderr)
    assert [r.stdout for r in shown_ran(whole, checks, NONCE)] == ["0\n", "1\n", "2\n"]
    # The batch died during the third command: two whole sections on both streams.
    cut_at = done.stdout.index(f"{NONCE} begin\n2")
    died = CommandResult("x", 137, done.stdout[:cut_at], done.stderr)
    assert parse_checks(died, checks, NONCE) is None
    assert [r.stderr for r in shown_ran(died, checks, NONCE)] == ["e0\n", "e1\n"]
    # Cut by the worker's bound: a section could be spliced from two, so nothing is trusted.
    bounded = CommandResult("x", 0, done.stdout, done.stderr, stdout_complete=False)
    assert shown_ran(bounded, checks, NONCE) == []
    # A failure ends what was shown: the script never goes past it.
    failing = [Check("exit 3", go_on="0"), *checks[1:]]
    done = subprocess.run(
        ["sh", "-c", checks_command(failing, NONCE, each=30)], capture_output=True, text=True
    )
    failed = CommandResult("x", 1, done.stdout + "noise", done.stderr)
    assert [r.exit_status for r in shown_ran(failed, failing, NONCE)] == [3]


def test_a_logged_batch_of_steps_unwraps_to_the_operators_commands() -> None:
    checks = [Check("systemctl stop nginx", go_on="0"), Check("systemctl stop 'a b'", go_on="0")]
    line = wrap_command(checks_command(checks, NONCE, each=180), become_user="root")
    assert line.startswith("echo patchpilot-pid=$$ >&2; sudo -n -u root -- sh -c ")
    assert unwrap_commands(line) == ["systemctl stop nginx", "systemctl stop 'a b'"]
