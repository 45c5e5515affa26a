"""What a host prints and answers, on real sshd lab hosts: bytes that are not UTF-8, endless output,
a prompt that never ends, a known_hosts file that changes under a pooled connection, and sudo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError

from activities.output import HEAD_BYTES, TAIL_BYTES
from activities.ssh import SshRunner
from activities.vault import SshCredentials
from bench import output_rss
from lab import Lab
from workflows.models import HostTarget


def target(lab: Lab, name: str, **extra: object) -> HostTarget:
    h = lab.host(name)
    return HostTarget.model_validate(
        {"name": name, "cluster": "lab", "address": h.address, "port": h.port, **extra}
    )


def credentials(lab: Lab) -> SshCredentials:
    return SshCredentials(private_key=lab.client_private_key, username=lab.user, source_path="lab")


@pytest_asyncio.fixture
async def runner(lab: Lab) -> AsyncIterator[SshRunner]:
    ssh = SshRunner(lab.known_hosts_path)
    yield ssh
    ssh.close_all()


async def test_latin1_output_is_read_with_replacement_characters_and_the_real_exit_code(
    lab: Lab, runner: SshRunner
) -> None:
    # apt under fr_FR.ISO-8859-1: "Paramétrage" with é as the single byte 0xE9.
    command = (
        r"printf 'Param\351trage de nginx\n'; printf '\311chec de la mise \340 jour\n' >&2; "
        "exit 100"
    )
    async with runner.session(target(lab, "a1"), credentials(lab)) as session:
        result = await session.run(command, 30)
    assert result.exit_status == 100
    assert result.stdout == "Param\ufffdtrage de nginx\n"
    assert result.tail() == "\ufffdchec de la mise \ufffd jour"


async def test_a_gigantic_output_keeps_only_its_head_and_tail(lab: Lab, runner: SshRunner) -> None:
    printed = 50_000_000
    command = f"head -c {printed} /dev/zero | tr '\\0' x; echo; echo LAST-LINE"
    async with runner.session(target(lab, "a1"), credentials(lab)) as session:
        result = await session.run(command, 120)
    assert result.ok and not result.stdout_complete
    assert result.stdout.startswith("x" * HEAD_BYTES)
    assert result.stdout.endswith("xxx\nLAST-LINE\n")
    assert len(result.stdout) < HEAD_BYTES + TAIL_BYTES + 200
    omitted = printed + len("\nLAST-LINE\n") - HEAD_BYTES - TAIL_BYTES
    assert f"[… {omitted} bytes of output not kept …]" in result.stdout


def test_a_gibibyte_of_output_does_not_grow_the_readers_memory(lab: Lab) -> None:
    # bench/output_rss.py's own measurement: a fresh process connects, notes its RSS, runs one
    # command printing 1 GiB through PatchPilot's session, and reports its peak RSS (VmHWM, reset
    # after connecting) minus the RSS before. Reading it all, as the worker once did, grew the
    # process by about 2 GiB per GiB printed (bench/README.md).
    printed = 1024**3
    bench = Path(__file__).resolve().parents[2] / "bench" / "output_rss.py"
    where = json.dumps(output_rss.where_of(lab, "a1"))
    child = subprocess.run(
        [sys.executable, str(bench), "--child", "patchpilot", str(printed), where],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    measured = json.loads(child.stdout.strip().splitlines()[-1])
    before, growth = measured["rss_before_mib"], measured["growth_mib"]
    print(f"1 GiB printed: RSS {before:.1f} MiB before, grew {growth:.2f} MiB")
    assert measured["growth_mib"] < 16, measured
    assert measured["kept_chars"] < HEAD_BYTES + TAIL_BYTES + 200, measured


async def still_running(lab: Lab, host: str, marker: str) -> str:
    # "[x]" keeps pgrep from finding its own shell, whose command line holds the pattern too.
    left = await lab.run(host, f"pgrep -f '{marker[0]}[{marker[1]}]{marker[2:]}' || true")
    return str(left.stdout).strip()


async def test_endless_output_is_killed_at_its_limit_and_named(lab: Lab, runner: SshRunner) -> None:
    marker = f"working-{uuid.uuid4().hex[:8]}"
    async with runner.session(target(lab, "a2"), credentials(lab)) as session:
        with pytest.raises(ApplicationError) as failed:
            await session.run(f"yes 'still {marker}'", 2, what="the busy loop")
    assert failed.value.type == "CommandTimedOut" and failed.value.non_retryable
    assert "the busy loop on a2" in failed.value.message
    assert "did not finish within 2s and was killed on the host" in failed.value.message
    assert await still_running(lab, "a2", marker) == "", "the loop still runs on the host"


async def test_a_command_that_keeps_asking_fails_fast_with_the_question(
    lab: Lab, runner: SshRunner
) -> None:
    # A program that asks again after every empty answer: stdin is at EOF, so it never stops.
    marker = f"ask-{uuid.uuid4().hex[:8]}"
    question = f"Configuration file {marker} changed. Keep it? [y/N] "
    script = f"while true; do printf '{question}'; read answer; done"
    async with runner.session(target(lab, "a2"), credentials(lab)) as session:
        with pytest.raises(ApplicationError) as failed:
            await session.run(script, 600, what="the update command")
    assert failed.value.type == "CommandWaitsForInput" and failed.value.non_retryable
    message = failed.value.message
    assert "the update command on a2" in message and "waits for input that never comes" in message
    assert "Keep it? [y/N]" in message and "it was killed on the host" in message
    assert await still_running(lab, "a2", marker) == "", "the question loop still runs"


async def test_a_prompt_that_reads_the_terminal_fails_at_once(lab: Lab, runner: SshRunner) -> None:
    # No PTY: a program that wants the terminal (passwd, ssh asking a passphrase) gets none.
    async with runner.session(target(lab, "a2"), credentials(lab)) as session:
        result = await session.run("read answer < /dev/tty", 30)
    assert result.exit_status != 0 and "/dev/tty" in result.tail()


async def test_a_pooled_connection_is_dropped_when_known_hosts_changes(
    lab: Lab, runner: SshRunner
) -> None:
    a1 = target(lab, "a1")
    async with runner.session(a1, credentials(lab)) as session:
        assert (await session.run("true", 10)).ok
    async with runner.session(a1, credentials(lab)) as session:
        assert (await session.run("true", 10)).ok
    assert runner.handshakes == 1, "the second session should reuse the pooled connection"
    # The operator replaces a1's key in known_hosts (here with b1's key, which a1 does not have).
    b1_key = next(line for line in lab._known_hosts_lines() if lab.host("b1").address in line)
    a1_entry = b1_key.replace(lab.host("b1").address, lab.host("a1").address)
    others = [line for line in lab._known_hosts_lines() if lab.host("a1").address not in line]
    lab.known_hosts_path.write_text("".join([*others, a1_entry]))
    with pytest.raises(ApplicationError) as refused:
        async with runner.session(a1, credentials(lab)) as session:
            await session.run("true", 10)
    assert refused.value.type == "HostKeyMismatch"
    assert "refusing to connect, no command was run" in refused.value.message


async def test_known_hosts_is_parsed_once_for_each_version_of_the_file(
    lab: Lab, runner: SshRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a path, asyncssh parses the file at every connection: 151 ms of worker CPU a host
    # with a 10,000-host fleet's known_hosts (issue 16). The runner parses each version once.
    parsed: list[str] = []
    real = asyncssh.import_known_hosts

    def counting(text: str) -> asyncssh.SSHKnownHosts:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(asyncssh, "import_known_hosts", counting)
    for name in ("a1", "a2", "b1"):
        async with runner.session(target(lab, name), credentials(lab)) as session:
            assert (await session.run("true", 10)).ok
    assert (runner.handshakes, len(parsed)) == (3, 1)
    # A new version of the file (here one line fewer: b2's) is read at the next connection.
    lines = lab._known_hosts_lines()
    lab.known_hosts_path.write_text(
        "".join(line for line in lines if lab.host("b2").address not in line)
    )
    with pytest.raises(ApplicationError) as refused:
        async with runner.session(target(lab, "b2"), credentials(lab)) as session:
            await session.run("true", 10)
    assert refused.value.type == "HostKeyMismatch" and len(parsed) == 2


async def test_a_key_replaced_within_the_same_clock_tick_is_still_seen(
    lab: Lab, runner: SshRunner
) -> None:
    # An edit that keeps the file's inode, size and mtime (made in the same timestamp tick as
    # the version read before it) must not leave new connections trusting the old key.
    lab.write_known_hosts()
    async with runner.session(target(lab, "a1"), credentials(lab)) as session:
        assert (await session.run("true", 10)).ok
    path = lab.known_hosts_path
    before = path.stat()
    b1, b2 = lab.host("b1"), lab.host("b2")
    wrong = next(line for line in lab._known_hosts_lines() if b1.address in line)
    wrong = wrong.replace(f"[{b1.address}]:{b1.port}", f"[{b2.address}]:{b2.port}")
    text = path.read_text()
    right = next(line for line in text.splitlines(keepends=True) if b2.address in line)
    assert len(wrong) == len(right)
    with path.open("r+") as f:  # in place: same inode, same size
        f.write(text.replace(right, wrong))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino,
        before.st_size,
        before.st_mtime_ns,
    )
    with pytest.raises(ApplicationError) as refused:
        async with runner.session(target(lab, "b2"), credentials(lab)) as session:
            await session.run("true", 10)
    assert refused.value.type == "HostKeyMismatch"


async def test_become_runs_every_command_through_sudo_n(lab: Lab, runner: SshRunner) -> None:
    host = target(lab, "b2", become=True, becomeUser="postgres")
    async with runner.session(host, credentials(lab)) as session:
        result = await session.run("echo hello", 10)
    assert result.ok and result.stdout == "hello\n"
    [(user, command)] = lab.sudo_calls("b2")
    assert user == "postgres" and command.endswith("echo hello")
    assert "DEBIAN_FRONTEND=noninteractive" in command


async def test_a_sudo_that_wants_a_password_fails_with_sudos_reason(
    lab: Lab, runner: SshRunner
) -> None:
    lab.set_fault("b2", "sudo-needs-password")
    async with runner.session(target(lab, "b2", become=True), credentials(lab)) as session:
        result = await session.run("true", 10)
    assert result.exit_status == 1 and result.tail() == "sudo: a password is required"


async def test_a_command_run_with_become_is_killed_through_sudo_when_it_overruns(
    lab: Lab, runner: SshRunner
) -> None:
    marker = f"sleeper-{uuid.uuid4().hex[:8]}"
    host = target(lab, "b1", become=True)
    async with runner.session(host, credentials(lab)) as session:
        with pytest.raises(ApplicationError) as failed:
            await session.run(f"sh -c 'sleep 600; echo {marker}'", 1, what="the slow command")
    assert failed.value.type == "CommandTimedOut"
    assert await still_running(lab, "b1", marker) == "", "the command still runs on the host"
    users_and_commands = lab.sudo_calls("b1")
    assert users_and_commands[0][0] == "root" and marker in users_and_commands[0][1]
    assert any("kill -KILL" in command for _, command in users_and_commands[1:])


async def test_sessions_use_aes_gcm_which_every_openssh_host_offers(
    lab: Lab, runner: SshRunner
) -> None:
    # AES-GCM costs the worker a quarter less CPU per command than asyncssh's first choice,
    # ChaCha20-Poly1305 (issue 16); the lab's sshd is a stock OpenSSH with its default ciphers.
    async with runner.session(target(lab, "a1"), credentials(lab)) as session:
        result = await session.run("true", 30)
        connection = session._connection
    assert result.exit_status == 0
    assert connection.get_extra_info("send_cipher") == "aes128-gcm@openssh.com"
    assert connection.get_extra_info("recv_cipher") == "aes128-gcm@openssh.com"
