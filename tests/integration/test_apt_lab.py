"""Rollouts on the real-apt lab (lab/apt_lab.py): real apt-get and dpkg on real sshd hosts, the
lab repository as their only source; what each host's dpkg says afterwards is what is asserted."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowFailureError

from activities.notify import summary_text
from bot.embedded import free_port
from bot.settings import Settings
from bot.worker import WorkerParts
from lab.apt_lab import AptLab
from lab.apt_repo import build_repo
from lab.processes import OpenBaoProcess
from tests.integration.test_doctor import interrupt_dpkg
from tests.integration.test_rollout import ALICE, BOB, commands, rollout, start
from tests.integration.test_rollout import approve as approve_now
from tests.support import SECRET_PREFIX, SERVICES, running_worker, wait_for
from workflows.models import Phase, RolloutProgress, RolloutSummary
from workflows.targets import UPDATE_PROFILES

HOSTS = ["p1", "p2"]
PATCHPILOT = str(Path(sys.executable).parent / "patchpilot")
QUERY = "dpkg-query -W -f='${Package} ${Version} ${Status}\\n' 'pp-*'"
UPGRADED = [
    "pp-conf 1.1 install ok installed",
    "pp-debconf 1.1 install ok installed",
    "pp-held 1.0 hold ok installed",
    "pp-hello 1.1 install ok installed",
    "pp-reboot 1.1 install ok installed",
]


@pytest.fixture(scope="module")
def apt_lab(tmp_path_factory: pytest.TempPathFactory, openbao: OpenBaoProcess) -> Iterator[AptLab]:
    root = tmp_path_factory.mktemp("apt-lab")
    repo = build_repo(root / "repo")
    lab = AptLab(
        root / "lab", {"apt": HOSTS}, repo=repo, port=free_port(), address_prefix="127.0.7."
    )
    with lab:
        lab.seed_vault(openbao.address, openbao.root_token, prefix=SECRET_PREFIX, per_host=True)
        yield lab


@pytest_asyncio.fixture
async def apt_worker(
    apt_lab: AptLab, temporal_client: Client, openbao: OpenBaoProcess, temporal_dev_server
) -> AsyncIterator[tuple[Settings, WorkerParts]]:
    for host in HOSTS:
        apt_lab.reset_packages(host)
        apt_lab.reset_host(host)
    apt_lab.reboot_delay = 1.0
    settings = Settings(
        temporal_address=temporal_dev_server.address,
        task_queue=f"apt-{uuid.uuid4().hex[:8]}",
        inventory=apt_lab.write_inventory(),
        known_hosts=apt_lab.write_known_hosts(),
        vault_addr=openbao.address,
        vault_token=openbao.root_token,
    )
    async with running_worker(temporal_client, settings) as parts:
        yield settings, parts


def worker_environment(settings: Settings) -> dict[str, str]:
    """What an operator would export for `patchpilot` with these settings (no SMTP here)."""
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "PATCHPILOT_TASK_QUEUE": settings.task_queue,
        "PATCHPILOT_INVENTORY": str(settings.inventory),
        "PATCHPILOT_KNOWN_HOSTS": str(settings.known_hosts),
        "VAULT_ADDR": str(settings.vault_addr),
        "VAULT_TOKEN": settings.vault_token.get_secret_value() if settings.vault_token else "",
    }


def patchpilot(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PATCHPILOT, *args],
        env={**worker_environment(settings), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def approve(handle) -> None:
    """Approve once the rollout asks (it resolves its hosts first)."""
    await wait_for_phase(handle, Phase.AWAITING_APPROVAL)
    await approve_now(handle)


async def wait_for_phase(handle, phase: Phase, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        progress = await handle.query("progress", result_type=RolloutProgress)
        if progress.phase == phase or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.1)


async def packages(lab: AptLab, host: str) -> list[str]:
    result = await lab.run(host, QUERY)
    return str(result.stdout).splitlines()


async def test_a_real_upgrade_on_every_host_with_the_reboot_its_postinst_asked_for(
    apt_lab: AptLab, apt_worker: tuple[Settings, WorkerParts], temporal_client: Client
) -> None:
    settings, _ = apt_worker
    boot_before = {host: apt_lab.boot_id(host) for host in HOSTS}
    for host in HOSTS:
        assert await packages(apt_lab, host) == [line.replace("1.1", "1.0") for line in UPGRADED]
    # p1's administrator changed pp-conf's conffile; 1.1 ships a new version of it.
    changed = await apt_lab.run("p1", "echo mode=mine >> /etc/pp-conf/pp-conf.conf")
    assert changed.exit_status == 0, changed.stderr
    handle = await start(
        temporal_client,
        settings,
        rollout(["apt"], pilotHostCount=1, updateCommand=UPDATE_PROFILES["full"], updateTimeout=60),
    )
    await approve(handle)
    summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2
    for host in HOSTS:
        assert await packages(apt_lab, host) == UPGRADED
        # dpkg's own log: each package upgraded exactly once.
        log = await apt_lab.run(host, "grep -c ' upgrade pp-hello:all 1.0 1.1' /var/log/dpkg.log")
        assert str(log.stdout).strip() == "1" and apt_lab.upgrade_runs(host) == 1
        # pp-reboot's postinst asked for a reboot; the host came back with a new boot id.
        assert apt_lab.reboot_count(host) == 1 and apt_lab.boot_id(host) != boot_before[host]
        assert not apt_lab.reboot_required(host)
        assert not apt_lab.in_maintenance(host)
        assert apt_lab.service_state(host, "nginx") == "active"
    assert all(h.rebooted for h in summary.hosts)
    # The package report, per host, in the summary everyone gets (e-mail, `patchpilot status`).
    line = "upgraded 4, installed 0, removed 0, kept back 1, held 1; reboot required by pp-reboot"
    assert {h.name: h.packages for h in summary.hosts} == {
        "p1": f"{line}; conffiles left: /etc/pp-conf/pp-conf.conf.dpkg-dist",
        "p2": line,
    }
    assert f"      packages: {line}\n" in summary_text(summary)
    # `patchpilot report` prints the whole report of every host, as CSV and JSON too.
    shown = patchpilot(settings, "report", summary.rollout_id, "--format", "csv")
    assert shown.returncode == 0, shown.stderr
    rows = shown.stdout.splitlines()
    assert rows[0] == "host,kind,package,old,new"
    for host in HOSTS:
        assert f"{host},upgraded,pp-hello,1.0,1.1" in rows
        assert f"{host},held,pp-held,," in rows
        assert f"{host},reboot-required,pp-reboot,," in rows
    assert "p1,conffile,/etc/pp-conf/pp-conf.conf.dpkg-dist,," in rows
    kept = [row for row in rows if ",kept-back,pp-held," in row]
    assert len(kept) == 2 and all("held (dpkg selection hold)" in row for row in kept)
    as_json = patchpilot(settings, "report", summary.rollout_id, "--format", "json")
    reports = {r["hostname"]: r["packages"] for r in json.loads(as_json.stdout)}
    assert {c["name"]: (c["old"], c["new"]) for c in reports["p2"]["upgraded"]} == {
        "pp-conf": ("1.0", "1.1"),
        "pp-debconf": ("1.0", "1.1"),
        "pp-hello": ("1.0", "1.1"),
        "pp-reboot": ("1.0", "1.1"),
    }
    as_text = patchpilot(settings, "report", summary.rollout_id)
    assert "p1: done\n" in as_text.stdout and "  upgraded pp-hello 1.0 → 1.1\n" in as_text.stdout
    # --force-confold: p1 keeps its own conffile, the package's new one waits as .dpkg-dist;
    # p2 had not changed it, so dpkg installed the new one.
    p1 = await apt_lab.run("p1", "cat /etc/pp-conf/pp-conf.conf; ls /etc/pp-conf")
    assert str(p1.stdout).split() == [
        "#",
        "pp-conf",
        "1.0",
        "mode=default",
        "mode=mine",
        "pp-conf.conf",
        "pp-conf.conf.dpkg-dist",
    ]
    p2 = await apt_lab.run("p2", "cat /etc/pp-conf/pp-conf.conf; ls /etc/pp-conf")
    assert str(p2.stdout).split() == ["#", "pp-conf", "1.1", "mode=default", "pp-conf.conf"]
    # pp-debconf's question took its default and was never shown (debconf-show marks a question
    # shown to someone with "*"): no prompt, no hang.
    for host in HOSTS:
        asked = await apt_lab.run(host, "debconf-show pp-debconf")
        assert str(asked.stdout).strip() == "pp-debconf/mode: safe", asked.stderr
        # The held package stayed held at 1.0, and apt said so.
        assert apt_lab.upgrade_runs(host, "pp-held") == 0


async def test_a_failing_postinst_fails_the_host_at_update_with_dpkgs_message(
    apt_lab: AptLab, apt_worker: tuple[Settings, WorkerParts], temporal_client: Client
) -> None:
    settings, _ = apt_worker
    broken = await apt_lab.run("p2", "dpkg -i /srv/patchpilot-repo/pp-broken_1.0_all.deb")
    assert broken.exit_status == 0, broken.stderr
    handle = await start(
        temporal_client,
        settings,
        rollout(["apt"], pilotHostCount=1, updateCommand=UPDATE_PROFILES["full"], updateTimeout=60),
    )
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    reason = str(failed.value.cause)
    assert "host p2 failed at step update" in reason and "exited 100" in reason
    assert "E: Sub-process /usr/bin/dpkg returned an error code (1)" in reason
    # The report says which package dpkg left half-way.
    assert "packages: upgraded 5, " in reason
    assert "UNFINISHED pp-broken 1.1 (half-configured)" in reason
    p2 = await packages(apt_lab, "p2")
    assert "pp-broken 1.1 install ok half-configured" in p2
    assert "pp-hello 1.1 install ok installed" in p2  # the rest of the upgrade went through
    assert apt_lab.in_maintenance("p2")
    assert await packages(apt_lab, "p1") == UPGRADED  # the pilot was patched before
    # The failed host keeps its whole report, where an SRE looks for it: `patchpilot report`.
    shown = patchpilot(settings, "report", handle.id, "--format", "csv")
    assert shown.returncode == 0, shown.stderr
    rows = shown.stdout.splitlines()
    assert "p2,upgraded,pp-hello,1.0,1.1" in rows
    assert "p2,unfinished,pp-broken,1.1,half-configured" in rows, rows
    unknown = patchpilot(settings, "report", "no-such-rollout")
    assert unknown.returncode != 0 and "no rollout with id no-such-rollout" in unknown.stderr


async def test_an_interrupted_dpkg_is_refused_unless_the_rollout_opts_in_to_repair_it(
    apt_lab: AptLab, apt_worker: tuple[Settings, WorkerParts], temporal_client: Client
) -> None:
    settings, _ = apt_worker
    await interrupt_dpkg(apt_lab, "p1")  # the pilot: pp-slow 1.1 half-configured
    full = {"pilotHostCount": 1, "updateCommand": UPDATE_PROFILES["full"], "updateTimeout": 60}
    handle = await start(temporal_client, settings, rollout(["apt"], **full))
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    reason = str(failed.value.cause)
    assert "host p1 failed at step preconditions" in reason, reason
    assert "run dpkg --configure -a on the host, then patch it again" in reason
    assert "pp-slow 1.1 install ok half-configured" in await packages(apt_lab, "p1")
    assert not apt_lab.in_maintenance("p1") and apt_lab.dpkg_log("p2") == []  # nothing touched

    # The opt-in, as an operator gives it: `patchpilot start --repair-interrupted-dpkg`.
    rollout_id = f"it-repair-{uuid.uuid4().hex[:8]}"
    started = patchpilot(
        settings,
        *("start", "-c", "apt", "--pilot", "1", "--approver", ALICE, "--requester", BOB),
        *("--services", ",".join(SERVICES), "--update", UPDATE_PROFILES["full"]),
        *("--update-timeout", "60", "--repair-interrupted-dpkg", "--id", rollout_id),
    )
    assert started.returncode == 0, started.stderr
    handle = temporal_client.get_workflow_handle(rollout_id, result_type=RolloutSummary)
    await approve(handle)
    summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2
    assert await packages(apt_lab, "p1") == [*UPGRADED, "pp-slow 1.1 install ok installed"]
    assert await packages(apt_lab, "p2") == UPGRADED
    repaired = "an interrupted dpkg was repaired (repairInterruptedDpkg: dpkg --configure -a)"
    held = "held packages (left as they are): pp-held"
    assert {h.name: h.notes for h in summary.hosts} == {
        "p1": [f"{repaired}: pp-slow", held],
        "p2": [held],
    }
    # What the summary e-mail and `patchpilot status` show.
    assert f"      notes: {repaired}: pp-slow; {held}\n" in summary_text(summary)
    shown = patchpilot(settings, "result", rollout_id)
    assert f"      notes: {repaired}: pp-slow; {held}\n" in shown.stdout, shown.stderr


def slow_upgrade(lab: AptLab, host: str, seconds: int) -> None:
    """pp-slow 1.0 on the host; the upgrade's postinst of 1.1 then takes `seconds`."""
    lab.install(host, "pp-slow")
    (lab.host(host).root / "aptfs" / "upper" / "etc" / "pp-slow.seconds").write_text(f"{seconds}\n")


def configuring(lab: AptLab, host: str) -> bool:
    """pp-slow's postinst is running: dpkg is half-way through the upgrade."""
    return (lab.host(host).run_dir / "pp-slow.configuring").exists()


def dpkg_runs(lab: AptLab, host: str) -> int:
    """How many times dpkg unpacked packages on the host since its lab packages were installed
    (one per apt run that changed something)."""
    return sum("startup archives unpack" in line for line in lab.dpkg_log(host))


async def test_a_connection_cut_in_the_middle_of_apt_is_attached_to_again(
    apt_lab: AptLab, apt_worker: tuple[Settings, WorkerParts], temporal_client: Client
) -> None:
    settings, _ = apt_worker
    for host in HOSTS:
        slow_upgrade(apt_lab, host, 4)
    handle = await start(
        temporal_client,
        settings,
        rollout(["apt"], pilotHostCount=1, updateCommand=UPDATE_PROFILES["full"], updateTimeout=90),
    )
    await approve(handle)
    # The pilot's apt is configuring pp-slow: cut every SSH connection to it, as a network would.
    await wait_for(lambda: configuring(apt_lab, "p1"), timeout=60)
    assert apt_lab.cut_connections("p1") >= 1
    summary = await asyncio.wait_for(handle.result(), timeout=120)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2
    for host in HOSTS:
        # One apt run on each host, every package upgraded once: no second update overlapped.
        assert dpkg_runs(apt_lab, host) == 1, apt_lab.dpkg_log(host)
        assert apt_lab.upgrade_runs(host, "pp-slow") == 1
        assert apt_lab.upgrade_runs(host, "pp-hello") == 1
        assert "pp-slow 1.1 install ok installed" in await packages(apt_lab, host)
        assert not apt_lab.in_maintenance(host)
    # The one SSH command that starts or attaches ran more than once on p1: it attached again.
    p1_updates = [c for c in commands(apt_lab, "p1") if c == UPDATE_PROFILES["full"]]
    assert len(p1_updates) >= 2, commands(apt_lab, "p1")


async def test_a_worker_killed_in_the_middle_of_apt_leaves_one_upgrade_that_the_next_one_reads(
    apt_lab: AptLab,
    apt_worker: tuple[Settings, WorkerParts],
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    settings, _ = apt_worker
    # A worker of its own, in its own process, on another task queue: killed with SIGKILL.
    settings = settings.model_copy(update={"task_queue": f"apt-kill-{uuid.uuid4().hex[:8]}"})
    env = worker_environment(settings)
    log = tmp_path / "worker.log"

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [PATCHPILOT, "worker", "--no-policy"],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    slow_upgrade(apt_lab, "p1", 6)
    first = spawn()
    second: subprocess.Popen[bytes] | None = None
    try:
        handle = await start(
            temporal_client,
            settings,
            rollout(
                ["apt"], pilotHostCount=1, updateCommand=UPDATE_PROFILES["full"], updateTimeout=90
            ),
        )
        await approve(handle)
        await wait_for(lambda: configuring(apt_lab, "p1"), timeout=60)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=20)
        second = spawn()
        summary = await asyncio.wait_for(handle.result(), timeout=150)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=20)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2, log.read_text()[-3000:]
    # p1's apt ran once, though its update step ran on two workers.
    assert dpkg_runs(apt_lab, "p1") == 1, apt_lab.dpkg_log("p1")
    assert apt_lab.upgrade_runs("p1", "pp-slow") == 1
    assert [c for c in commands(apt_lab, "p1")].count(UPDATE_PROFILES["full"]) == 2
    for host in HOSTS:
        assert dpkg_runs(apt_lab, host) == 1, apt_lab.dpkg_log(host)  # p2: by the second worker
        assert apt_lab.upgrade_runs(host) == 1
        assert await packages(apt_lab, host) == UPGRADED + (
            ["pp-slow 1.1 install ok installed"] if host == "p1" else []
        )


async def test_a_dry_run_shows_what_apt_would_change_and_changes_nothing(
    apt_lab: AptLab, apt_worker: tuple[Settings, WorkerParts], temporal_client: Client
) -> None:
    settings, _ = apt_worker
    handle = await start(temporal_client, settings, rollout(["apt"], dryRun=True))
    summary = await handle.result()  # a dry run needs no approval
    assert summary.phase == Phase.DRY_RUN_DONE and summary.dry_run is not None
    for found in summary.dry_run:  # pp-held stays: it is on hold
        assert sorted(found.would_change) == [
            "upgrade pp-conf 1.0 → 1.1",
            "upgrade pp-debconf 1.0 → 1.1",
            "upgrade pp-hello 1.0 → 1.1",
            "upgrade pp-reboot 1.0 → 1.1",
        ], found.would_change
    text = summary_text(summary)
    assert "    apt-get -s: the update would (4):\n" in text
    assert "      upgrade pp-hello 1.0 → 1.1\n" in text and "pp-held 1.0 →" not in text
    for host in HOSTS:
        assert await packages(apt_lab, host) == [line.replace("1.1", "1.0") for line in UPGRADED]
        assert apt_lab.dpkg_log(host) == []
