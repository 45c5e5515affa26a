"""The reboot decision's look in the update's own SSH command (activities/detached.py, engine
v10), run by this machine's own sh through `finish_detached`: after a run that succeeded the boot
id and the reboot-required answer come back beside the package report, and whenever they cannot
be trusted (the run failed, no time left, no timeout(1), killed, forged, unusable) they are left
unread, so that the reboot step reads the host itself as before; the one rule both places decide
by (workflows/reboots.py)."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

import pytest

from activities import package_report
from activities.detached import LOOK_BEGIN, LOOK_END, Detached, _look, finish_detached
from activities.host_values import reboot_look
from activities.remote_shell import unwrap_commands, wrap_command
from activities.ssh import CommandResult
from workflows.reboots import RebootLook, look_commands, reboot_decision
from workflows.targets import HostCommands, HostTarget

BOOT_ID = "0b6d0c2e-8a52-4b7c-9d51-6f0e1e9b2a11"
LOOK = [f"echo {BOOT_ID}", "test -e /nonexistent/reboot-required"]
NONCE = "0123456789abcdef0123456789abcdef"


class LocalShell:
    """A HostSession stand-in for one function's test: each command run by this machine's sh."""

    host = HostTarget(name="local", cluster="c", address="127.0.0.1")

    def __init__(self, path: str | None = None) -> None:
        self.sent: list[str] = []
        self.env = {**os.environ, **({"PATH": path} if path else {})}

    async def run(self, command: str, timeout: float, **_: object) -> CommandResult:
        self.sent.append(command)
        process = await asyncio.create_subprocess_exec(
            "sh", "-c", command, env=self.env, stdout=-1, stderr=-1
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        assert process.returncode is not None
        return CommandResult(command, process.returncode, out.decode(), err.decode())


async def _update(
    command: str, *, timeout: float = 60, look: list[str] | None = LOOK, path: str | None = None
) -> Detached:
    directory = tempfile.mkdtemp() + "/runs/r.1"
    after = "echo 'upgraded nginx 1.0 1.1'"
    return await finish_detached(
        LocalShell(path),  # type: ignore[arg-type]
        command,
        directory,
        timeout,
        what="update command",
        before=package_report.BEFORE,
        after=after,
        look=look,
    )


async def test_a_successful_update_brings_back_the_boot_id_and_the_reboot_answer() -> None:
    done = await _update("echo done; echo warn >&2")
    assert done.result.ok and done.result.stdout == "done\n"
    # The update's own stderr and its package report are what they were without the look.
    assert done.result.stderr == "warn\n"
    assert (done.report, done.report_known) == ("upgraded nginx 1.0 1.1\n", True)
    assert done.look is not None
    assert [(r.command, r.exit_status) for r in done.look] == [(LOOK[0], 0), (LOOK[1], 1)]
    assert reboot_look(done.look, "local") == RebootLook(boot_id=BOOT_ID, reboot_required=False)
    pending = await _update("true", look=[LOOK[0], "true"])
    assert reboot_look(pending.look, "local") == RebootLook(boot_id=BOOT_ID, reboot_required=True)


async def test_no_look_after_a_failed_run_or_without_time_or_timeout() -> None:
    failed = await _update("echo broken >&2; exit 100")
    assert failed.result.exit_status == 100 and failed.look is None
    assert failed.result.stderr == "broken\n" and failed.report_known
    # Less than the look's limit and 2 s left of the attach's time (the worker's less its
    # reserve): not started.
    late = await _update("true", timeout=16)
    assert late.result.ok and late.look is None and late.report_known
    in_time = await _update("true", timeout=20)
    assert in_time.look is not None
    assert (await _update("true", look=None)).look is None


async def test_no_look_on_a_host_without_timeout(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for directory in ("/usr/bin", "/bin"):
        for tool in Path(directory).iterdir():
            if tool.name != "timeout" and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    done = await _update("echo done", path=str(bin_dir))
    assert done.result.ok and done.look is None and done.report_known


def test_a_look_cut_short_or_forged_is_not_read_and_the_report_is_kept() -> None:
    report = "patchpilot-report-begin\nupgraded a 1 2\n\npatchpilot-report-end\n"
    whole = f"{NONCE} begin\n{BOOT_ID}\n\n{NONCE} end 0\n{NONCE} begin\n\n{NONCE} end 1\n"
    good = f"warn\n{report}{LOOK_BEGIN}\n{whole}\n{LOOK_END}\n"
    looked, rest = _look(good, True, LOOK, NONCE)
    assert looked is not None and rest == f"warn\n{report}"
    killed = f"warn\n{report}{LOOK_BEGIN}\n{NONCE} begin\n{BOOT_ID}\n{LOOK_END}\n"
    other = good.replace(NONCE, "f" * 32)  # sections of another look: printed by the update?
    for text, complete in ((killed, True), (other, True), (good, False)):
        looked, rest = _look(text, complete, LOOK, NONCE)
        assert looked is None and rest == f"warn\n{report}", text
    # Only the last frame, at the very end, is the attach's.
    assert _look(good + "more\n", True, LOOK, NONCE) == (None, good + "more\n")


def test_answers_that_cannot_be_used_are_left_to_the_reboot_step() -> None:
    def ran(command: str, status: int, out: str = "") -> CommandResult:
        return CommandResult(command, status, out, "")

    for looked in (
        [ran("cat boot_id", 0, "not a boot id!\n"), ran("test", 1)],
        [ran("cat boot_id", 1), ran("test", 0)],
        [ran("cat boot_id", 0, BOOT_ID), ran("test", 2)],  # neither yes nor no
        [ran("cat boot_id", 0, BOOT_ID)],
        None,
    ):
        assert reboot_look(looked, "h1") is None


def test_the_logged_update_unwraps_to_the_update_and_its_look() -> None:
    from activities.detached import attach_command

    line = attach_command("apt-get -y upgrade", "/r/x.1", look=LOOK, nonce=NONCE, seconds=99.7)
    assert unwrap_commands(wrap_command(line, become_user="root")) == ["apt-get -y upgrade", *LOOK]
    assert unwrap_commands(attach_command("apt-get -y upgrade", "/r/x.1")) == ["apt-get -y upgrade"]


@pytest.mark.parametrize(
    ("policy", "pending", "decided"),
    [
        ("if-required", True, (True, "reboot required")),
        ("if-required", False, (False, "no reboot required")),
        ("always", True, (True, "reboot required")),
        ("always", False, (True, "policy always")),
        ("never", True, (False, "a reboot is pending but the policy is never")),
        ("never", False, (False, "policy never")),
    ],
)
def test_the_reboot_decision(policy: str, pending: bool, decided: tuple[bool, str]) -> None:
    assert reboot_decision(policy, pending) == decided  # type: ignore[arg-type]


async def test_a_process_the_look_leaves_behind_does_not_hold_the_update() -> None:
    """A check that leaves a child running (or a timeout(1) that kills only its own child) must
    not keep the SSH command open: a successful update would otherwise time out as one."""
    started = asyncio.get_running_loop().time()
    done = await _update("echo done", look=[LOOK[0], "(sleep 30 &); exit 1"])
    assert asyncio.get_running_loop().time() - started < 10
    assert done.result.ok and done.report_known
    assert reboot_look(done.look, "local") == RebootLook(boot_id=BOOT_ID, reboot_required=False)


def test_the_look_is_left_out_when_the_policy_reboots_anyway() -> None:
    commands = HostCommands(boot_id="cat /run/id", reboot_required_check="test -e /run/r")
    assert look_commands("always", commands) is None
    for policy in ("if-required", "never"):
        assert look_commands(policy, commands) == ["cat /run/id", "test -e /run/r"]
