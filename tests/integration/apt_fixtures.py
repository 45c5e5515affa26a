"""The real-apt lab (lab/apt_lab.py) as a test module's own: one lab per module, its hosts reset
for each test, and an SSH runner that trusts the lab's known_hosts.

A module uses them as

    apt_lab = module_apt_lab("det", ["d1", "d2"], "127.0.8.")
    lab = reset_lab("apt_lab", ["d1", "d2"])
    runner = apt_runner

(pytest finds fixtures by name in the module's namespace)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio

from activities.ssh import SshRunner
from bot.embedded import free_port
from lab.apt_lab import AptLab
from lab.apt_repo import build_repo


def module_apt_lab(cluster: str, hosts: list[str], address_prefix: str) -> Any:
    """A module-scoped fixture: a started AptLab whose one cluster `cluster` holds `hosts`, on
    `address_prefix` (each module its own, so modules on parallel workers never collide)."""

    @pytest.fixture(scope="module")
    def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AptLab]:
        root = tmp_path_factory.mktemp(f"{cluster}-lab")
        repo = build_repo(root / "repo")
        lab = AptLab(
            root / "lab",
            {cluster: hosts},
            repo=repo,
            port=free_port(),
            address_prefix=address_prefix,
        )
        with lab:
            yield lab

    return started


def reset_lab(fixture: str, hosts: list[str]) -> Callable[..., AptLab]:
    """A test-scoped fixture handing the module's lab (the fixture named `fixture`) to a test with
    every host's packages and state as at the start, and known_hosts current."""

    @pytest.fixture
    def lab(request: pytest.FixtureRequest) -> AptLab:
        started: AptLab = request.getfixturevalue(fixture)
        for host in hosts:
            started.reset_packages(host)
            started.reset_host(host)
        started.write_known_hosts()
        return started

    return lab


@pytest_asyncio.fixture
async def apt_runner(lab: AptLab) -> AsyncIterator[SshRunner]:
    """An SshRunner trusting the lab's known_hosts; its pooled connections closed afterwards."""
    ssh = SshRunner(lab.known_hosts_path)
    yield ssh
    ssh.close_all()
