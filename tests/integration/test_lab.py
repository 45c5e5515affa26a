"""The lab itself, against the real things: sshd hosts, OpenBao and the Temporal dev server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncssh
import hvac
import pytest
import yaml
from temporalio.client import Client

from lab import Lab, ManagedProcess, OpenBaoProcess
from tests.fixtures import SESSION_PREFIX

# The fixtures (lab, lab_factory, openbao, temporal_dev_server) come from tests.fixtures,
# which tests/conftest.py imports.


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_each_host_logs_exactly_the_commands_it_received(lab: Lab) -> None:
    before = time.time()
    # Tabs, a newline, multi-byte characters: each logged exactly, as one record.
    odd = "printf '%s\\n' 'tab\there' \"quote's\"\necho 'größer → ok'"
    # The log is written in the C locale; the command still gets the session's own locale.
    locale = "printf '%s\\n' \"$LC_ALL\" # größer"
    async with asyncssh.connect(**lab.ssh_options("a1")) as conn:
        first = await conn.run(
            "hostname-of-lab; cat /var/lib/patchpilot-lab/.lab-host", check=False
        )
        await conn.run(odd, check=True)
        own = await conn.run(locale, env={"LC_ALL": "C.UTF-8"}, check=True)
    await lab.run("b2", "true")

    assert first.stdout == "a1\n"
    assert own.stdout == "C.UTF-8\n"
    assert lab.command_log("a1") == [
        "hostname-of-lab; cat /var/lib/patchpilot-lab/.lab-host",
        odd,
        locale,
    ]
    assert lab.command_log("b2") == ["true"]
    assert lab.command_log("a2") == []
    stamps = [stamp for stamp, _ in lab.command_log_timed("a1")]
    assert before <= stamps[0] <= stamps[1] <= stamps[2] <= time.time()

    lab.clear_logs()
    assert lab.command_log("a1") == []


async def test_services_are_per_host(lab: Lab) -> None:
    stopped = await lab.run("a1", "systemctl stop nginx")
    assert stopped.exit_status == 0
    assert lab.service_state("a1", "nginx") == "inactive"
    assert lab.service_state("a1", "postgresql") == "active"
    assert lab.service_state("a2", "nginx") == "active"

    probe = await lab.run("a1", "systemctl is-active nginx postgresql")
    assert (probe.exit_status, probe.stdout) == (3, "inactive\nactive\n")
    quiet = await lab.run("a2", "systemctl is-active --quiet nginx.service")
    assert (quiet.exit_status, quiet.stdout) == (0, "")

    unknown = await lab.run("a1", "systemctl start redis")
    assert unknown.exit_status == 5
    assert "Unit redis.service not found." in str(unknown.stderr)

    started = await lab.run("a1", "systemctl start nginx && systemctl is-system-running")
    assert (started.exit_status, started.stdout) == (0, "running\n")
    assert lab.service_state("a1", "nginx") == "active"


async def test_maintenance_flag_is_per_host(lab: Lab) -> None:
    result = await lab.run("a2", "touch /var/lib/patchpilot/maintenance")
    assert result.exit_status == 0
    assert [h.name for h in lab.hosts if lab.in_maintenance(h.name)] == ["a2"]
    # The host's /var/lib/patchpilot is private: the machine running the lab is untouched.
    assert not Path("/var/lib/patchpilot/maintenance").exists()

    await lab.run("a2", "rm /var/lib/patchpilot/maintenance")
    assert not lab.in_maintenance("a2")


async def test_upgrade_counts_and_absolute_paths_stay_simulated(lab: Lab) -> None:
    result = await lab.run("b1", "apt-get update && apt-get upgrade -y")
    assert result.exit_status == 0, result.stderr
    assert "Simulated upgrade on b1" in str(result.stdout)
    assert lab.update_count("b1") == 1

    again = await lab.run(
        "b1", "sudo DEBIAN_FRONTEND=noninteractive /usr/bin/apt-get -qy dist-upgrade"
    )
    assert again.exit_status == 0, again.stderr
    assert lab.update_count("b1") == 2
    assert lab.update_count("b2") == 0

    prompt = await lab.run("b1", "apt-get upgrade")
    assert prompt.exit_status == 1
    other = await lab.run("b1", "apt-get install -y cowsay")
    assert other.exit_status == 100
    assert lab.update_count("b1") == 2


async def test_reboot_drops_the_host_and_brings_it_back_with_a_new_boot_id(lab: Lab) -> None:
    before = lab.boot_id("b1")
    assert before, f"empty boot id file {lab.host('b1').boot_id_path}"
    lab.set_reboot_required("b1")
    seen = await lab.run("b1", "cat /proc/sys/kernel/random/boot_id")
    assert str(seen.stdout).strip() == before
    rebooted = await lab.run("b1", "/sbin/reboot")
    assert rebooted.exit_status == 0
    assert lab.reboot_count("b1") == 1
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        await asyncio.sleep(0.2)
        try:
            after = await lab.run("b1", "cat /proc/sys/kernel/random/boot_id")
        except (OSError, asyncssh.Error):
            continue  # down, as a rebooting host is
        if after.exit_status != 0 or not str(after.stdout).strip():
            continue  # the session was cut by the reboot half-way through the command
        if str(after.stdout).strip() != before:
            break
        assert asyncio.get_running_loop().time() < deadline, "b1 never came back"
    assert lab.boot_id("b1") == str(after.stdout).strip()
    assert not lab.reboot_required("b1")
    assert lab.boot_id("a1") != lab.boot_id("b1")


async def test_update_fail(lab: Lab) -> None:
    lab.set_fault("a1", "update-fail")
    result = await lab.run("a1", "apt-get update && apt-get -y upgrade")
    assert result.exit_status == 100
    assert result.stderr == "E: simulated upgrade failure on a1\n"
    assert lab.update_count("a1") == 0

    lab.clear_fault("a1", "update-fail")
    assert (await lab.run("a1", "apt-get -y upgrade")).exit_status == 0
    assert lab.update_count("a1") == 1


async def test_start_fail_and_unhealthy(lab: Lab) -> None:
    lab.set_fault("a2", "start-fail:nginx")
    lab.set_fault("a2", "unhealthy:postgresql")
    assert lab.service_state("a2", "postgresql") == "failed"

    failed = await lab.run("a2", "systemctl stop nginx; systemctl start nginx")
    assert failed.exit_status == 1
    assert "Job for nginx.service failed" in str(failed.stderr)
    assert lab.service_state("a2", "nginx") == "failed"

    started = await lab.run("a2", "systemctl restart postgresql")
    assert started.exit_status == 0
    health = await lab.run("a2", "systemctl is-active postgresql")
    assert (health.exit_status, health.stdout) == (3, "failed\n")

    lab.clear_faults("a2")
    assert (await lab.run("a2", "systemctl start nginx postgresql")).exit_status == 0
    assert lab.service_state("a2", "nginx") == lab.service_state("a2", "postgresql") == "active"


async def test_fail_command_does_not_run_the_command(lab: Lab) -> None:
    lab.set_fault("b2", "fail-command:drain")
    result = await lab.run("b2", "touch /var/lib/patchpilot/drained && echo drain done")
    assert (result.exit_status, result.stdout, result.stderr) == (1, "", "simulated failure\n")
    assert not (lab.host("b2").state_dir / "drained").exists()
    assert lab.command_log("b2") == ["touch /var/lib/patchpilot/drained && echo drain done"]
    assert (await lab.run("b2", "echo fine")).stdout == "fine\n"


async def test_hang_command_can_be_killed(lab: Lab) -> None:
    lab.set_fault("a1", "hang-command:wait-for-drain")
    with pytest.raises(asyncssh.TimeoutError):
        await lab.run("a1", "wait-for-drain --timeout 600", timeout=0.5)
    hung = lab.hung_processes("a1")
    assert len(hung) == 1
    assert lab.hung_processes("a2") == []

    killed = await lab.run("a1", f"kill {hung[0]}")
    assert killed.exit_status == 0
    await wait_for(lambda: lab.hung_processes("a1") == [])


async def test_update_hang_is_cleaned_up_by_stop_host(lab: Lab) -> None:
    lab.set_fault("b1", "update-hang")
    with pytest.raises(asyncssh.TimeoutError):
        await lab.run("b1", "apt-get -y upgrade", timeout=0.5)
    hung = lab.hung_processes("b1")
    assert hung == [int((lab.host("b1").lab_dir / "update.pid").read_text())]

    lab.stop_host("b1")
    assert lab.hung_processes("b1") == []
    assert lab.update_count("b1") == 0


async def test_stopped_host_refuses_connections(lab: Lab) -> None:
    lab.stop_host("a2")
    with pytest.raises(ConnectionRefusedError):
        await lab.run("a2", "true")
    assert (await lab.run("a1", "true")).exit_status == 0

    lab.start_host("a2")
    assert (await lab.run("a2", "systemctl is-active nginx")).stdout == "active\n"


async def test_rekeyed_host_fails_host_key_verification(lab: Lab) -> None:
    lab.rekey_host("b2")
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await lab.run("b2", "true")
    assert lab.command_log("b2") == []

    lab.write_known_hosts()
    assert (await lab.run("b2", "true")).exit_status == 0


def test_lab_shell_refuses_outside_a_lab_host(lab: Lab, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    result = subprocess.run(
        [str(lab.sim_bin / "lab-shell")],  # as sshd runs it: by its own #! line
        env={**os.environ, "SSH_ORIGINAL_COMMAND": f"touch {marker}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 126
    assert "refusing" in result.stderr
    assert not marker.exists()


def test_inventory_lists_clusters_in_order(lab: Lab, tmp_path: Path) -> None:
    path = lab.write_inventory(
        tmp_path / "inv.yml",
        host_vars={"a2": {"pilot": True}},
        group_vars={"cluster-b": {"services": ["nginx"]}},
    )
    inventory = yaml.safe_load(path.read_text())
    children = inventory["all"]["children"]
    assert list(children) == ["cluster-a", "cluster-b"]
    assert list(children["cluster-a"]["hosts"]) == ["a1", "a2"]
    a2 = lab.host("a2")
    assert children["cluster-a"]["hosts"]["a2"] == {
        "ansible_host": a2.address,
        "ansible_port": a2.port,
        "ansible_user": "root",
        "pilot": True,
    }
    assert "vars" not in children["cluster-a"]
    assert children["cluster-b"]["vars"] == {"services": ["nginx"]}
    assert [h.address for h in lab.hosts] == [f"{SESSION_PREFIX}{i}" for i in range(1, 5)]


async def test_stop_leaves_no_process_behind(lab_factory: Callable[..., Lab]) -> None:
    small = lab_factory({"solo": ["s1"]}, services=("web",))
    assert (await small.run("s1", "systemctl is-active web")).stdout == "active\n"
    small.set_fault("s1", "hang-command:sleepy")
    with pytest.raises(asyncssh.TimeoutError):
        await small.run("s1", "sleepy", timeout=0.5)
    assert small.hung_processes("s1")

    small.stop()
    assert small.hung_processes("s1") == []
    with pytest.raises(ConnectionRefusedError):
        await small.run("s1", "true")
    small.stop()


def test_openbao_seed_vault_reads_back(openbao: OpenBaoProcess, lab: Lab) -> None:
    # A prefix of its own: the OpenBao server is shared by the session, and other tests' hosts
    # would find this lab's key under the default patch-deploy/<host> paths.
    prefix = f"lab-test-{uuid.uuid4().hex[:8]}"
    lab.seed_vault(openbao.address, openbao.root_token, prefix=prefix, per_host=True)
    client = hvac.Client(url=openbao.address, token=openbao.root_token)
    for path in [f"{prefix}/default", f"{prefix}/b2"]:
        data = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
        assert data == {"private_key": lab.client_private_key, "username": "root"}
    assert lab.client_private_key.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert lab.client_key_path.read_text() == lab.client_private_key


def test_a_key_seeded_for_the_fleet_is_not_shadowed_by_an_earlier_labs_host_entry(
    openbao: OpenBaoProcess, lab: Lab
) -> None:
    # The worker reads <prefix>/<host> before <prefix>/default: an entry another lab left for
    # the same host name on this session's Vault would make it log in with that lab's key.
    prefix = f"lab-test-{uuid.uuid4().hex[:8]}"
    client = hvac.Client(url=openbao.address, token=openbao.root_token)
    stale = {"private_key": "another lab's key", "username": "nobody"}
    for name in ("b2", "not-a-host-of-this-lab"):
        client.secrets.kv.v2.create_or_update_secret(
            path=f"{prefix}/{name}", secret=stale, mount_point="secret"
        )
    lab.seed_vault(openbao.address, openbao.root_token, prefix=prefix)
    keys = client.secrets.kv.v2.list_secrets(path=prefix, mount_point="secret")["data"]["keys"]
    assert sorted(keys) == ["default", "not-a-host-of-this-lab"]


async def test_temporal_dev_server_accepts_clients(temporal_dev_server: ManagedProcess) -> None:
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest

    client = await Client.connect(temporal_dev_server.address)
    # The server is shared by the session: other tests' workflows may be listed, the namespace is.
    described = await client.workflow_service.describe_namespace(
        DescribeNamespaceRequest(namespace="default")
    )
    assert described.namespace_info.name == "default"
