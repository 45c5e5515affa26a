"""The demo's asyncssh lab (for machines without sshd or root) drives a real rollout too."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from bot.settings import Settings
from lab import OpenBaoProcess, free_port
from lab.fallback import AsyncsshLab
from tests.integration.test_rollout import UPDATE, approve, rollout, start
from tests.support import running_worker
from workflows.models import Phase

# Its own Vault prefix: the session's OpenBao also holds the sshd fleet's key at patch-deploy.
PREFIX = "fallback-lab"


@pytest.fixture
def asyncssh_lab(tmp_path: Path, openbao: OpenBaoProcess) -> Iterator[AsyncsshLab]:
    lab = AsyncsshLab(
        tmp_path / "lab", {"cluster-a": ["a1", "a2"]}, port=free_port(), address_prefix="127.0.6."
    )
    lab.start()
    try:
        lab.seed_vault(openbao.address, openbao.root_token, prefix=PREFIX)
        yield lab
    finally:
        lab.stop()


async def test_rollout_on_the_asyncssh_lab(
    asyncssh_lab: AsyncsshLab, worker_settings: Settings, temporal_client: Client
) -> None:
    settings = worker_settings.model_copy(
        update={
            "inventory": asyncssh_lab.inventory_path,
            "known_hosts": asyncssh_lab.known_hosts_path,
            "task_queue": f"fallback-{uuid.uuid4().hex[:6]}",
        }
    )
    async with running_worker(temporal_client, settings):
        handle = await start(
            temporal_client, settings, rollout(["cluster-a"], secretPathPrefix=PREFIX)
        )
        await approve(handle)
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2
    for host in ("a1", "a2"):
        assert asyncssh_lab.update_count(host) == 1
        assert not asyncssh_lab.in_maintenance(host)
        assert asyncssh_lab.service_state(host, "nginx") == "active"
        assert any(UPDATE in command for command in asyncssh_lab.command_log(host))


async def test_absolute_paths_to_system_tools_are_refused(asyncssh_lab: AsyncsshLab) -> None:
    refused = await asyncssh_lab.run("a1", "/usr/bin/apt-get -y upgrade")
    assert refused.exit_status == 126
    assert "refused in the asyncssh lab" in str(refused.stderr)
    assert asyncssh_lab.update_count("a1") == 0
