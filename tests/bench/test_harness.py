"""Smoke tests of the benchmark harness at tiny N: the many-host lab, the step list, the contenders.

Benchmarks are not tests; these only check that the pieces work, in a few seconds.
"""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path

import asyncssh
import pytest

from activities.inventory import load_inventory
from activities.ssh import unwrap_commands
from bench import contenders, run
from bench.steps import (
    BOOT_ID,
    REBOOT_REQUIRED,
    SERVICES,
    UPDATE,
    host_commands,
    playbook,
    write_ansible_project,
)
from lab.mass import MassLab, host_address
from tests.support import wait_for
from workflows.models import HostCommands


@pytest.fixture(scope="module")
def mass_lab(tmp_path_factory: pytest.TempPathFactory):
    lab = MassLab(tmp_path_factory.mktemp("mass"), 3, listeners=2, address_base="127.51.")
    with lab:
        yield lab


@pytest.fixture
def fleet(mass_lab: MassLab) -> MassLab:
    mass_lab.reset()
    return mass_lab


def test_host_addresses_cover_a_16() -> None:
    assert host_address(0) == "127.50.0.1"
    assert host_address(253) == "127.50.0.254"
    assert host_address(254) == "127.50.1.1"
    assert host_address(9999, "127.9.") == "127.9.39.94"
    with pytest.raises(ValueError):
        host_address(254 * 256)


async def test_each_address_is_a_host_of_its_own(fleet: MassLab) -> None:
    first, second, _ = (h.name for h in fleet.hosts)
    # The wildcard known_hosts line verifies every host (asyncssh; OpenSSH is checked below).
    async with asyncssh.connect(**fleet.ssh_options(first)) as conn:
        made = await conn.run(
            "cat /var/lib/patchpilot-lab/.lab-host && mkdir -p /var/lib/patchpilot && "
            "echo r1 > /var/lib/patchpilot/maintenance && systemctl stop nginx",
            check=True,
        )
        assert str(made.stdout).strip() == first
    async with asyncssh.connect(**fleet.ssh_options(second)) as conn:
        seen = await conn.run("test -e /var/lib/patchpilot/maintenance", check=False)
        assert seen.exit_status == 1, "maintenance flag leaked between hosts"
        assert (
            str((await conn.run("systemctl is-active nginx", check=False)).stdout).strip()
            == "active"
        )
    assert fleet.in_maintenance(first) and not fleet.in_maintenance(second)
    assert fleet.service_state(first, "nginx") == "inactive"
    assert fleet.command_log(second) == [
        "test -e /var/lib/patchpilot/maintenance",
        "systemctl is-active nginx",
    ]


async def test_cpu_of_what_a_session_leaves_running_counts_as_the_hosts(fleet: MassLab) -> None:
    # The detached update's runner is started with `setsid -f` and outlives its session: its CPU
    # must reach host_cpu_seconds (the listener is its subreaper), not init's.
    marker = fleet.root / "left-running.done"
    burn = f"i=0; while [ $i -lt 400000 ]; do i=$((i + 1)); done; touch {marker}"
    before = fleet.host_cpu_seconds()
    async with asyncssh.connect(**fleet.ssh_options(fleet.hosts[0].name)) as conn:
        started = await conn.run(f"setsid -f sh -c '{burn}' < /dev/null > /dev/null 2>&1")
        assert started.exit_status == 0
    await wait_for(marker.exists, timeout=30, interval=0.05)
    spent = run.settled_host_cpu(fleet) - before  # once the listener has reaped it
    # The loop alone takes ~0.3-0.5 s of CPU here; a session without it costs ~0.02 s.
    assert spent > 0.2, f"hosts' CPU grew by {spent:.3f} s only"


def test_openssh_client_accepts_the_wildcard_known_hosts(fleet: MassLab) -> None:
    h = fleet.hosts[2]
    done = subprocess.run(
        ["ssh", "-i", str(fleet.client_key_path), "-o", "BatchMode=yes",
         "-o", f"UserKnownHostsFile={fleet.known_hosts_path}", "-o", "StrictHostKeyChecking=yes",
         "-p", str(h.port), f"root@{h.address}", "cat /var/lib/patchpilot-lab/.lab-host"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == h.name


def test_inventory_is_what_patchpilot_reads(fleet: MassLab) -> None:
    clusters = load_inventory(fleet.inventory_path)
    assert list(clusters) == ["fleet"]
    targets = clusters["fleet"]
    assert [(t.name, t.address, t.port) for t in targets] == [
        (h.name, h.address, h.port) for h in fleet.hosts
    ]


def test_clusters_split_by_size(tmp_path: Path) -> None:
    lab = MassLab(tmp_path, 25, cluster_size=10)
    assert {k: len(v) for k, v in lab.clusters.items()} == {
        "fleet-0": 10,
        "fleet-1": 10,
        "fleet-2": 5,
    }


def test_steps_are_patchpilots_default_commands() -> None:
    c = HostCommands()
    rid = "r-1"
    expected = [c.maintenance_check, c.health_check]
    expected += [c.service_health.replace("{service}", s) for s in SERVICES]
    expected.append(c.maintenance_on.replace("{rollout_id}", rid))
    expected += [c.service_stop.replace("{service}", s) for s in SERVICES]
    expected.append(UPDATE)  # the default drain check `true` is not sent (a no-op)
    after_update = len(expected)
    expected += [c.service_start.replace("{service}", s) for s in reversed(SERVICES)]
    expected += [c.service_health.replace("{service}", s) for s in SERVICES]
    expected.append(c.maintenance_off)
    assert [command for command, _ in host_commands(rid, reboot_check=False)] == expected
    assert [ok for _, ok in host_commands(rid)].count(False) == 1  # the maintenance check
    reboot = [getattr(c, "boot_id", BOOT_ID), getattr(c, "reboot_required_check", REBOOT_REQUIRED)]
    expected[after_update:after_update] = reboot
    assert [command for command, _ in host_commands(rid)] == expected


def test_playbook_is_a_tuned_rolling_play(tmp_path: Path) -> None:
    (play,) = playbook("r-1", 10)
    assert play["serial"] == 10 and play["gather_facts"] is False
    assert len(play["tasks"]) == len(host_commands("r-1"))
    reboot_check = [c for c, _ in host_commands("r-1")].index(REBOOT_REQUIRED)
    assert play["tasks"][reboot_check]["failed_when"] is False  # either way
    cfg, path = write_ansible_project(
        tmp_path / "a",
        rollout_id="r-1",
        concurrency=10,
        private_key=tmp_path / "k",
        known_hosts=tmp_path / "kh",
    )
    text = cfg.read_text()
    assert "pipelining = True" in text and "ControlPersist" in text and "forks = 10" in text
    assert "StrictHostKeyChecking=yes" in text
    assert importlib.util.find_spec("ansible") is not None, "ansible-core (group bench) missing"
    binary = Path(sys.executable).parent / "ansible-playbook"
    checked = subprocess.run(
        [str(binary), "--syntax-check", "-i", "localhost,", str(path)],
        env={"ANSIBLE_CONFIG": str(cfg), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _spec(lab: MassLab, concurrency: int) -> dict:
    return {
        **run.fleet_spec(lab),
        "concurrency": concurrency,
        "rollout_id": "bench-smoke",
        "timeout": 60,
    }


async def test_raw_contender_patches_every_host(fleet: MassLab) -> None:
    result = await contenders._raw({**_spec(fleet, 3), "mode": "window"})
    assert result["handshakes"] == 3 and result["wall"] > 0 and result["cpu"] > 0
    assert fleet.verify_patched() == []
    assert fleet.command_log(fleet.hosts[0].name) == [c for c, _ in host_commands("bench-smoke")]


async def test_patchpilot_contender_runs_a_real_rollout(
    tmp_path: Path, temporal_dev_server, openbao
) -> None:
    fleet = MassLab(tmp_path / "one", 1, listeners=1, address_base="127.52.")
    fleet.start()
    try:
        await _patchpilot_smoke(fleet, temporal_dev_server, openbao)
    finally:
        fleet.stop()


async def _patchpilot_smoke(fleet: MassLab, temporal_dev_server, openbao) -> None:
    fleet.seed_vault(openbao.address, openbao.root_token)
    spec = {
        **_spec(fleet, 1),
        "temporal_address": temporal_dev_server.address,
        "temporal_pid": temporal_dev_server.pid,
        "vault_addr": openbao.address,
        "vault_token": openbao.root_token,
        "vault_pid": openbao.pid,
        "history": True,
    }
    spec["rollout_id"] = f"bench-smoke-{id(spec)}"
    result = await asyncio.wait_for(contenders._patchpilot(spec), timeout=90)
    assert "error" not in result, result.get("error")
    assert result["patched"] == 1
    assert fleet.verify_patched() == []
    # The issue's steps reach the host in order (PatchPilot wraps each command to learn its pid;
    # the engine may add steps, e.g. the reboot check, which the other contenders then mirror).
    log = fleet.command_log(fleet.hosts[0].name)
    sent = iter(command for line in log for command in unwrap_commands(line))
    for command, _ in host_commands(spec["rollout_id"], reboot_check=False):
        assert any(got == command for got in sent), f"{command!r} not sent in order"
    assert result["handshakes"] >= 1 and result["vault_reads"] >= 1
    assert result["cpu_temporal"] > 0 and result["rss_peak_mib"] > 0
    events = result["events"]
    assert events["runs"] >= 1 and events["children"] == 1 and events["child_events_mean"] > 0
    assert events["child_seconds_mean"]["total"] > 0
    # raw-same-work: the commands PatchPilot sent, sent again by raw asyncssh to a reset host,
    # patch it the same way (updated once, out of maintenance, services up), with nothing else.
    fleet.reset()
    name = fleet.hosts[0].name
    replay = await contenders._raw({**_spec(fleet, 1), "host_commands": {name: log}})
    assert replay["handshakes"] == 1
    assert fleet.verify_patched() == []
    assert fleet.command_log(name) == log


def test_tables_print_with_missing_and_failed_results(capsys: pytest.CaptureFixture[str]) -> None:
    ok = {"ok": True, "wall": 2.0, "cpu": 1.0, "host_cpu": 0.5}
    rows = [
        {
            "n": 100,
            "c": 10,
            "results": {
                "raw": ok,
                "ansible": {**ok, "wall": 10.0},
                "patchpilot": {
                    **ok,
                    "wall": 4.0,
                    "vault_reads_per_host": 2.0,
                    "handshakes_per_host": 8.0,
                    "events": {
                        "runs": 1,
                        "max_events_per_run": 1000,
                        "parent_total_events": 1000,
                        "child_events_mean": 80.0,
                        "parent_by_type": {"X": 1},
                    },
                },
            },
        },
        {"n": 20, "c": 1, "results": {"raw": {"error": "timed out"}}},
    ]
    run.print_tables(rows)
    out = capsys.readouterr().out
    assert "0.40" in out and "2.00  MISS" in out  # PP/ansible 4/10 at N=100,C=10; raw ratio 2.0
    assert "N=20 C=1 raw: timed out" in out


def test_issue16_ratios_are_printed_against_the_same_rows_baselines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def ok(wall: float, cpu: float, host_cpu: float, **extra: float) -> dict:
        return {"ok": True, "wall": wall, "cpu": cpu, "host_cpu": host_cpu, **extra}

    rows = [
        {
            "n": 48,
            "c": 12,
            "results": {
                "raw": ok(4.0, 0.8, 8.8),  # 0.2 s of CPU per host
                "ansible": ok(100.0, 35.0, 160.0),
                "patchpilot": ok(5.6, 6.0, 8.4, cpu_worker=3.5, cpu_temporal=2.4),
                "patchpilot@baseline": ok(8.8, 8.0, 8.8),
                "raw-same-work": ok(5.0, 0.7, 10.1),  # 0.225 s per host
            },
        }
    ]
    run.print_tables(rows)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("  48  12 patchpilot ")]
    # 5.6 / 4.0 = 1.40 (target 1.5 at 48x12: ok); 5.6 / 100 = 0.06 (<= 0.1: ok);
    # (6.0 + 8.4) / 48 = 0.300 s per host against raw's 0.200: 1.50 (<= 3: ok).
    assert lines and "1.40   ok" in lines[0] and "0.06   ok" in lines[0]
    assert "0.300  0.200  1.50   ok" in lines[0]
    # Against raw sending PatchPilot's own commands: 5.6 / 5.0 = 1.12; 0.300 / 0.225 = 1.33.
    assert " 1.12 |" in lines[0] and " 1.33 |" in lines[0]
    baseline = [line for line in out.splitlines() if "patchpilot@baseline" in line]
    assert baseline and "2.20 MISS" in baseline[0]


def test_configurations_are_given_as_hosts_by_concurrency() -> None:
    assert run.parse_config("48x12") == (48, 12)
    with pytest.raises(Exception, match="HOSTSxCONCURRENCY"):
        run.parse_config("48")
