"""What PatchPilot keeps of a host's output and how it reads a host's answers, without a host:
bounded buffers, lenient decoding, a repeated question, the wrapper, value checks, become."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.host_values import HostValueError, boot_id, package_lines, yes_no
from activities.inventory import load_inventory
from activities.output import HEAD_BYTES, TAIL_BYTES, BoundedOutput, PromptWatch, decode
from activities.remote_shell import unwrap_command, wrap_command
from activities.ssh import CommandResult


def result(
    stdout: str = "", exit_status: int = 0, stderr: str = "", **extra: bool
) -> CommandResult:
    return CommandResult("cmd", exit_status, stdout, stderr, **extra)


def test_decoding_never_fails_and_marks_each_bad_byte() -> None:
    assert decode(b"Param\xe9trage \xff ok") == "Param\ufffdtrage \ufffd ok"
    assert decode("déjà".encode()) == "déjà"


def test_a_bounded_output_keeps_head_and_tail_and_counts_the_rest() -> None:
    out = BoundedOutput(head=10, tail=20)
    for index in range(100_000):
        out.feed(f"line {index}\n".encode())
        assert len(out._head) + len(out._tail) <= 10 + 2 * 20
    text = out.text()
    assert text.startswith("line 0\nlin")
    assert text.endswith("line 99999\n")
    assert f"[… {out.total - 30} bytes of output not kept …]" in text
    assert not out.complete


def test_a_short_output_is_kept_whole_with_the_default_bounds() -> None:
    out = BoundedOutput()
    data = b"x" * (HEAD_BYTES + TAIL_BYTES)
    out.feed(data[:1000])
    out.feed(data[1000:])
    assert out.complete and out.text() == data.decode()


def test_a_repeated_question_is_noticed_and_progress_is_not() -> None:
    asking = PromptWatch()
    for _ in range(3):
        asking.feed(b"Keep your version? [y/N] " * 7)
    assert asking.prompt == "Keep your version? [y/N]"
    working = PromptWatch()
    for index in range(1000):
        working.feed(f"Unpacking package{index} (1.{index}) ...\nSetting up x:\n".encode())
    assert working.prompt is None
    waiting = PromptWatch()
    for _ in range(100):
        waiting.feed(b"Waiting for cache lock: Could not get lock, held by process 4242 (apt)...\n")
    assert waiting.prompt is None


def test_the_wrapper_round_trips_with_and_without_become() -> None:
    command = "apt-get -y upgrade && echo 'it''s done'"
    plain = wrap_command(command)
    assert "export DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a" in plain
    assert unwrap_command(plain) == command
    sudo = wrap_command(command, "root")
    assert "sudo -n -u root -- sh -c " in sudo
    assert unwrap_command(sudo) == command


def test_boot_id_is_refused_when_empty_or_not_an_id() -> None:
    assert boot_id(result("0b4f7c1e-6a5b-4b38-9c55-5a1e2f3d4c5b\n"), "h") == (
        "0b4f7c1e-6a5b-4b38-9c55-5a1e2f3d4c5b"
    )
    with pytest.raises(HostValueError, match=r"printed nothing, not a boot id"):
        boot_id(result("\n"), "h")
    with pytest.raises(HostValueError, match=r"printed 'cat: /x: No such file"):
        boot_id(result("cat: /x: No such file or directory\n"), "h")
    with pytest.raises(HostValueError, match=r"exited 1"):
        boot_id(result("", 1, "denied"), "h")


def test_a_yes_no_check_accepts_only_0_and_1() -> None:
    assert yes_no(result(exit_status=0), "h", "check") is True
    assert yes_no(result(exit_status=1), "h", "check") is False
    with pytest.raises(HostValueError, match=r"exited 127, which means neither yes \(0\) nor no"):
        yes_no(result(exit_status=127, stderr="sh: needs-restarting: not found"), "h", "check")


def test_package_lines_are_checked() -> None:
    apt = "openssl/stable-security 3.0.15-1~deb12u1 amd64 [upgradable from: 3.0.14-1~deb12u2]"
    dnf = "kernel.x86_64    5.14.0-503.el9    baseos"
    assert package_lines(result(f"{apt}\n\n{dnf}\n"), "h", "list") == [apt, dnf]
    assert package_lines(result(exit_status=1), "h", "list") == []  # grep found nothing
    with pytest.raises(HostValueError, match=r"not a package: 'E: Could not get lock"):
        package_lines(result("E: Could not get lock /var/lib/dpkg/lock-frontend\n"), "h", "list")
    with pytest.raises(HostValueError, match=r"would be incomplete"):
        package_lines(result(apt, stdout_complete=False), "h", "list")


def test_become_is_read_from_ansible_and_patchpilot_variables(tmp_path: Path) -> None:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        "web:\n"
        "  vars: {ansible_become: 'yes'}\n"
        "  hosts:\n"
        "    w1: {ansible_user: patch}\n"
        "    w2: {patchpilot_become: false}\n"
        "    w3: {ansible_become_user: postgres}\n"
    )
    hosts = {h.name: h for h in load_inventory(inventory)["web"]}
    assert hosts["w1"].become and hosts["w1"].become_user is None
    assert not hosts["w2"].become
    assert hosts["w3"].become and hosts["w3"].become_user == "postgres"
    assert "become" not in hosts["w2"].model_dump(by_alias=True)  # defaults stay off the wire
