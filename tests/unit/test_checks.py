"""A batch of checks in one SSH command (activities/checks.py) and the package report in the
detached update's own output (activities/detached.py), run by a real `sh`: what each command
printed and its exit status come back apart, the batch stops where one command each would have,
and output that is not exactly the script's is never taken for an answer."""

from __future__ import annotations

import subprocess
import tempfile

from activities import package_report
from activities.checks import ANY, Check, checks_command, parse_checks, unwrap_checks
from activities.detached import _report, _status, attach_command
from activities.remote_shell import unwrap_commands, wrap_command
from activities.ssh import CommandResult
from workflows.targets import DEFAULT_COMMANDS, NO_OP_COMMANDS, is_no_op

NONCE = "0123456789abcdef0123456789abcdef"


def run(line: str) -> CommandResult:
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)
    return CommandResult(
        command=line, exit_status=done.returncode, stdout=done.stdout, stderr=done.stderr
    )


def test_each_command_keeps_its_own_output_streams_and_status() -> None:
    checks = [
        Check("printf 'no newline'; echo oops >&2; exit 3", go_on=ANY),
        Check("printf 'two\\nlines\\n'"),
        Check("exit 1"),
    ]
    results = parse_checks(run(checks_command(checks, NONCE)), checks, NONCE)
    assert results is not None
    assert [(r.command, r.exit_status) for r in results] == [
        (c.command, s) for c, s in zip(checks, [3, 0, 1], strict=True)
    ]
    assert results[0].stdout == "no newline" and results[0].stderr == "oops\n"
    assert results[1].stdout == "two\nlines\n" and results[1].stderr == ""


def test_the_batch_stops_where_one_command_each_stopped() -> None:
    checks = [Check("true", go_on="0"), Check("exit 0", go_on="1"), Check("echo never")]
    results = parse_checks(run(checks_command(checks, NONCE)), checks, NONCE)
    assert results is not None and [r.exit_status for r in results] == [0, 0]


def test_output_that_is_not_exactly_the_scripts_is_not_an_answer() -> None:
    checks = [Check("echo hi")]
    good = run(checks_command(checks, NONCE))
    other = good.stdout.replace(NONCE, "f" * 32)  # sections of another batch
    for result in (
        CommandResult(command="x", exit_status=0, stdout=good.stdout + "extra", stderr=good.stderr),
        CommandResult(command="x", exit_status=0, stdout=good.stdout, stderr=""),
        CommandResult(command="x", exit_status=255, stdout=good.stdout, stderr=good.stderr),
        CommandResult(
            command="x",
            exit_status=0,
            stdout=good.stdout,
            stderr=good.stderr,
            stdout_complete=False,
        ),
        CommandResult(command="x", exit_status=0, stdout=other, stderr=good.stderr),
    ):
        assert parse_checks(result, checks, NONCE) is None
    # A command that prints the script's own command line cannot end its section early.
    noisy = [Check(f"echo '{NONCE} end 0'; echo after")]
    results = parse_checks(run(checks_command(noisy, NONCE)), noisy, NONCE)
    assert results is not None and results[0].stdout == f"{NONCE} end 0\nafter\n"


def test_a_logged_batch_unwraps_to_its_commands() -> None:
    checks = [Check("true", go_on="0"), Check("systemctl is-active 'a b'")]
    line = wrap_command(checks_command(checks, NONCE), become_user="root")
    assert unwrap_checks(checks_command(checks, NONCE)) == ["true", "systemctl is-active 'a b'"]
    assert unwrap_commands(line) == ["true", "systemctl is-active 'a b'"]
    assert unwrap_commands(wrap_command("true")) == ["true"]


def test_the_update_prints_its_package_report_before_its_status() -> None:
    directory = tempfile.mkdtemp() + "/runs/r.1"
    after = "echo 'upgraded nginx 1.0 1.1'; echo reboot"
    line = attach_command("echo done; echo warn >&2", directory, package_report.BEFORE, after)
    status, result = _status(run(line))
    assert status == "finished" and result.stdout == "done\n"
    assert _report(result.stderr) == ("upgraded nginx 1.0 1.1\nreboot\n", True, "warn\n")
    # A run without an after script says so; a report cut off by the bound is not guessed at.
    status, bare = _status(run(attach_command("true", tempfile.mkdtemp() + "/r.2")))
    assert status == "finished" and _report(bare.stderr) == (None, True, "")
    cut = "…upgraded nginx 1.0 1.1\n\npatchpilot-report-end\n"
    assert _report(cut) == (None, False, cut)


def test_only_commands_that_do_nothing_are_answered_without_a_session() -> None:
    for command in NO_OP_COMMANDS:
        done = run(command)  # a real sh: exit 0, nothing printed
        assert (done.exit_status, done.stdout, done.stderr) == (0, "", "")
        assert is_no_op(f"  {command}\n")
    assert is_no_op(DEFAULT_COMMANDS.drain_check)
    for command in ("true; reboot", "true && test -e /run/drained", "/bin/true", "false", "truex"):
        assert not is_no_op(command), command
