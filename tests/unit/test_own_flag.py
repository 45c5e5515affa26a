"""The maintenance check that tells whose flag it is (workflows.targets.OWN_FLAG_CHECK), with the
real sh: the preconditions run again after a lost workflow task must go on with the maintenance
this rollout set, and refuse any other."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from activities.preconditions import render
from workflows.targets import DEFAULT_COMMANDS, MAINTENANCE_FLAG, OWN_FLAG_CHECK, HostCommands


def check(flag: Path, rollout_id: str) -> int:
    command = render(OWN_FLAG_CHECK, rollout_id=rollout_id).replace(MAINTENANCE_FLAG, str(flag))
    return subprocess.run(["sh", "-c", command], check=False).returncode


def set_by(flag: Path, rollout_id: str) -> None:
    command = render(DEFAULT_COMMANDS.maintenance_on, rollout_id=rollout_id)
    command = command.replace(MAINTENANCE_FLAG, str(flag)).replace(
        "mkdir -p /var/lib/patchpilot", f"mkdir -p {flag.parent}"
    )
    subprocess.run(["sh", "-c", command], check=True)


@pytest.mark.parametrize("shell_word", ["patch-a-1", "it's; rm -rf /", "x y"])
def test_the_check_knows_the_flag_its_own_rollout_set(tmp_path: Path, shell_word: str) -> None:
    flag = tmp_path / "patchpilot" / "maintenance"
    assert check(flag, shell_word) == 1  # not in maintenance
    set_by(flag, shell_word)
    assert check(flag, shell_word) == 2  # in this rollout's own maintenance
    assert check(flag, "patch-other-2") == 0  # in someone else's: refused
    flag.write_text("")  # a flag PatchPilot did not write (touch): someone else's
    assert check(flag, shell_word) == 0
    flag.write_text(f"{shell_word}-and-more\n")
    assert check(flag, shell_word) == 0  # only the whole id is ours


def test_only_the_default_check_and_setter_know_their_own_flag() -> None:
    assert DEFAULT_COMMANDS.knows_own_flag()
    assert not HostCommands(maintenance_check="test -e /etc/maint").knows_own_flag()
    assert not HostCommands(maintenance_on="touch /var/lib/patchpilot/maintenance").knows_own_flag()
    # The other commands of a host do not matter to it.
    assert HostCommands(service_stop="rc-service {service} stop").knows_own_flag()
