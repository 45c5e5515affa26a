"""Rollouts on the real-apt lab (lab/apt_lab.py): real apt-get and dpkg on real sshd hosts, the
lab repository as their only source; what each host's dpkg says afterwards is what is asserted."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowFailureError

from bot.embedded import free_port
from bot.settings import Settings
from bot.worker import WorkerParts
from lab.apt_lab import AptLab
from lab.apt_repo import build_repo
from lab.processes import OpenBaoProcess
from tests.integration.test_rollout import approve, rollout, start
from tests.support import SECRET_PREFIX, running_worker
from workflows.models import Phase
from workflows.targets import UPDATE_PROFILES

HOSTS = ["p1", "p2"]
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
        assert str(log.stdout).strip() == "1"
        # pp-reboot's postinst asked for a reboot; the host came back with a new boot id.
        assert apt_lab.reboot_count(host) == 1 and apt_lab.boot_id(host) != boot_before[host]
        assert not apt_lab.reboot_required(host)
        assert not apt_lab.in_maintenance(host)
        assert apt_lab.service_state(host, "nginx") == "active"
    assert all(h.rebooted for h in summary.hosts)


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
    p2 = await packages(apt_lab, "p2")
    assert "pp-broken 1.1 install ok half-configured" in p2
    assert "pp-hello 1.1 install ok installed" in p2  # the rest of the upgrade went through
    assert apt_lab.in_maintenance("p2")
    assert await packages(apt_lab, "p1") == UPGRADED  # the pilot was patched before
