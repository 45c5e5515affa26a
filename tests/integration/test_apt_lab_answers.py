"""Rollouts on the real-apt lab (lab/apt_lab.py) whose hosts answer in ways that used to be
misread, each checked against what dpkg itself says on the host afterwards (`dpkg-query -W`,
/var/log/dpkg.log): the real apt and dpkg speaking French in Latin-1, a boot id that is empty when
a postinst asked for a reboot, another dpkg holding the lock, and an operator's own apt command
that sets nothing non-interactive while a package asks a debconf question and a conffile differs
(with a reboot already pending on one host, which its package report names).

The lab and the worker are test_apt_lab.py's (one lab per module, hosts reset per test)."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import Client, WorkflowFailureError

from bot.settings import Settings
from bot.worker import WorkerParts
from lab.apt_lab import REPO_MOUNT, AptLab
from tests.integration import test_apt_lab
from tests.integration.test_apt_lab import (
    UPGRADED,
    approve,
    configuring,
    packages,
    patchpilot,
    slow_upgrade,
)
from tests.integration.test_rollout import commands, rollout, start
from tests.support import wait_for
from workflows.models import HostState, Phase, RolloutProgress
from workflows.targets import UPDATE_PROFILES

# test_apt_lab.py's fixtures, made this module's: pytest finds fixtures by name in the module.
apt_lab = test_apt_lab.apt_lab
apt_worker = test_apt_lab.apt_worker

BEFORE = [line.replace("1.1", "1.0") for line in UPGRADED]
# apt and dpkg as a French administrator runs them: their own translations (apt.mo, dpkg.mo), in
# the Latin-1 locale, generated on the host (its overlay) from the machine's `locales` sources.
FRENCH = "fr_FR.ISO-8859-1"
MAKE_FRENCH = f"localedef -i fr_FR -f ISO-8859-1 {FRENCH}"


def run_output(lab: AptLab, host: str, command: str) -> bytes:
    """The raw bytes `command` printed on the host (its detached run's stdout file)."""
    [run] = [
        run
        for run in (lab.host(host).state_dir / "runs").iterdir()
        if (run / "command").is_file() and (run / "command").read_text().strip() == command
    ]
    return (run / "stdout").read_bytes()


async def host_states(handle) -> dict[str, HostState]:
    progress = await handle.query("progress", result_type=RolloutProgress)
    return {h.name: h.state for h in progress.hosts()}


async def test_apt_speaking_latin1_patches_one_host_and_fails_the_other_with_its_code_and_text(
    apt_lab: AptLab, apt_worker: tuple[Settings, WorkerParts], temporal_client: Client
) -> None:
    settings, _ = apt_worker
    for host in ("p1", "p2"):
        made = await apt_lab.run(host, MAKE_FRENCH)
        assert made.exit_status == 0, made.stderr
    apt_lab.install("p2", "pp-broken")  # its 1.1 postinst fails
    update = f"export LC_ALL={FRENCH}; {UPDATE_PROFILES['full']}"
    handle = await start(
        temporal_client,
        settings,
        rollout(["apt"], pilotHostCount=1, updateCommand=update, updateTimeout=90),
    )
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), timeout=150)
    # The pilot p1: apt printed Latin-1 (0xE9 is "é"), the upgrade succeeded, and so did the host.
    assert b"Param\xe9trage de pp-hello (1.1) ..." in run_output(apt_lab, "p1", update)
    assert await packages(apt_lab, "p1") == UPGRADED
    assert apt_lab.upgrade_runs("p1") == 1 and apt_lab.reboot_count("p1") == 1
    assert not apt_lab.in_maintenance("p1") and apt_lab.service_state("p1", "nginx") == "active"
    # p2: dpkg's French error, apt's exit code, never taken for a lost connection.
    assert b"a renvoy\xe9 un \xe9tat de sortie d'erreur 1" in run_output(apt_lab, "p2", update)
    reason = str(failed.value.cause)
    assert "host p2 failed at step update" in reason
    assert "update command on p2 exited 100" in reason
    assert "E: Sub-process /usr/bin/dpkg returned an error code (1)" in reason
    assert "UNFINISHED pp-broken 1.1 (half-configured)" in reason
    assert "lost the SSH connection" not in reason and "codec" not in reason
    assert sum(c == update for c in commands(apt_lab, "p2")) == 1, "the update was retried"
    p2 = await packages(apt_lab, "p2")
    assert "pp-broken 1.1 install ok half-configured" in p2
    assert "pp-hello 1.1 install ok installed" in p2 and apt_lab.upgrade_runs("p2") == 1
    assert apt_lab.in_maintenance("p2")
    assert await host_states(handle) == {"p1": HostState.DONE, "p2": HostState.FAILED}
    # apt said "conservés" for what it kept back; the report still reads it (in the C locale).
    shown = patchpilot(settings, "report", handle.id, "--format", "csv")
    assert shown.returncode == 0, shown.stderr
    assert [row for row in shown.stdout.splitlines() if row.startswith("p1,kept-back,")] == [
        "p1,kept-back,pp-held,held (dpkg selection hold),"
    ]


async def test_an_empty_boot_id_refuses_the_reboot_a_postinst_asked_for(
    apt_lab: AptLab, apt_worker: tuple[Settings, WorkerParts], temporal_client: Client
) -> None:
    settings, _ = apt_worker
    # As on hosts where the default boot id source does not exist (ansible/ansible#72629).
    empty = "cat /nonexistent 2>/dev/null; true"
    apt_lab.write_inventory(host_vars={"p1": {"patchpilot_boot_id": empty}})
    boot_before = apt_lab.boot_id("p1")
    handle = await start(
        temporal_client,
        settings,
        rollout(["apt"], pilotHostCount=1, updateCommand=UPDATE_PROFILES["full"], updateTimeout=60),
    )
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await asyncio.wait_for(handle.result(), timeout=120)
    reason = str(failed.value.cause)
    assert "host p1 failed at step reboot" in reason
    assert f"reading the boot id on p1 ({empty}) printed nothing, not a boot id" in reason
    assert "did not come back" not in reason and "old boot id" not in reason
    # The upgrade ran for real, pp-reboot's postinst asked for the reboot, and it was not done.
    assert await packages(apt_lab, "p1") == UPGRADED
    assert apt_lab.reboot_required("p1")
    assert apt_lab.reboot_count("p1") == 0 and apt_lab.boot_id("p1") == boot_before
    assert apt_lab.in_maintenance("p1")
    # The pilot failed: p2 was never touched (no command; dpkg's state as it was).
    assert commands(apt_lab, "p2") == []
    assert await packages(apt_lab, "p2") == BEFORE and apt_lab.dpkg_log("p2") == []


async def test_a_dpkg_holding_the_lock_is_named_and_its_host_left_alone(
    apt_lab: AptLab, apt_worker: tuple[Settings, WorkerParts], temporal_client: Client
) -> None:
    settings, _ = apt_worker
    # Another dpkg on p2 (as unattended-upgrades would run one), busy in pp-slow's postinst.
    slow_upgrade(apt_lab, "p2", 300)
    other = await apt_lab.run(
        "p2",
        f"setsid dpkg -i {REPO_MOUNT}/pp-slow_1.1_all.deb < /dev/null > /dev/null 2>&1 & echo $!",
    )
    holder = str(other.stdout).strip()
    try:
        await wait_for(lambda: configuring(apt_lab, "p2"), timeout=60)
        apt_lab.write_inventory(host_vars={"p2": {"patchpilot_preflight_lock_wait": 3}})
        handle = await start(
            temporal_client,
            settings,
            rollout(
                ["apt"], pilotHostCount=1, updateCommand=UPDATE_PROFILES["full"], updateTimeout=60
            ),
        )
        await approve(handle)
        with pytest.raises(WorkflowFailureError) as failed:
            await asyncio.wait_for(handle.result(), timeout=120)
        reason = str(failed.value.cause)
        assert "host p2 failed at step preconditions" in reason
        assert (
            "the package manager on p2 is busy: /var/lib/dpkg/lock-frontend by process "
            f"{holder} (dpkg)"
        ) in reason
        assert "still held after 3s" in reason
        # The other dpkg still runs; PatchPilot's apt never ran on p2 and changed nothing there.
        assert configuring(apt_lab, "p2")
        assert apt_lab.upgrade_runs("p2", "pp-hello") == 0
        assert not apt_lab.in_maintenance("p2")
        assert UPDATE_PROFILES["full"] not in commands(apt_lab, "p2")
        p2 = await packages(apt_lab, "p2")
        assert [line for line in p2 if not line.startswith("pp-slow ")] == BEFORE
        # The pilot went first and was patched.
        assert await packages(apt_lab, "p1") == UPGRADED
        assert await host_states(handle) == {"p1": HostState.DONE, "p2": HostState.FAILED}
    finally:
        # The other dpkg's whole session (dpkg, the postinst, its sleep): it outlives the host.
        await apt_lab.run("p2", f"pkill -KILL -s {holder} || true")


async def test_an_operators_own_apt_command_never_waits_for_a_question(
    apt_lab: AptLab, apt_worker: tuple[Settings, WorkerParts], temporal_client: Client
) -> None:
    settings, _ = apt_worker
    # No DEBIAN_FRONTEND, no --force-conf*: left to itself, dpkg would ask about p1's changed
    # conffile and debconf about pp-debconf's question. PatchPilot's environment answers both.
    update = "apt-get update && apt-get -y dist-upgrade"
    changed = await apt_lab.run("p1", "echo mode=mine >> /etc/pp-conf/pp-conf.conf")
    assert changed.exit_status == 0, changed.stderr
    # p2 already waits for a reboot from an earlier kernel upgrade: its report says so too.
    (apt_lab.host("p2").run_dir / "reboot-required").write_text("*** System restart required ***\n")
    (apt_lab.host("p2").run_dir / "reboot-required.pkgs").write_text("linux-image-6.1.0-28-amd64\n")
    handle = await start(
        temporal_client,
        settings,
        rollout(["apt"], pilotHostCount=1, updateCommand=update, updateTimeout=600),
    )
    await approve(handle)
    began = asyncio.get_running_loop().time()
    summary = await asyncio.wait_for(handle.result(), timeout=120)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2
    assert asyncio.get_running_loop().time() - began < 120  # nowhere near updateTimeout
    for host in ("p1", "p2"):
        assert await packages(apt_lab, host) == UPGRADED
        # The question took its default and was never shown ("*" would mark it seen).
        asked = await apt_lab.run(host, "debconf-show pp-debconf")
        assert str(asked.stdout).strip() == "pp-debconf/mode: safe", asked.stderr
    # dpkg kept p1's own conffile and left the package's beside it.
    kept = await apt_lab.run("p1", "tail -n 1 /etc/pp-conf/pp-conf.conf; ls /etc/pp-conf")
    assert str(kept.stdout).split() == ["mode=mine", "pp-conf.conf", "pp-conf.conf.dpkg-dist"]
    reports = {h.name: h.packages for h in summary.hosts}
    assert reports["p1"].endswith("; conffiles left: /etc/pp-conf/pp-conf.conf.dpkg-dist")
    assert reports["p2"].endswith("; reboot required by linux-image-6.1.0-28-amd64, pp-reboot")
    assert all(apt_lab.reboot_count(host) == 1 for host in ("p1", "p2"))
