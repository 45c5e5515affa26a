"""Shared test setup.

temporalio can abort the interpreter at exit after everything passed (sdk-python#300, exit 134);
pytest's own exit status is kept and the process leaves with it once the summary is printed.
"""

from __future__ import annotations

import os
import sys

import pytest

_exit_status: list[int] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "run_last: run after every other test of the session")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status and os.environ.get("PATCHPILOT_TEST_HARD_EXIT", "1") == "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])


# The lab's real servers (Temporal dev server, OpenBao, sshd hosts) and the shared real parts
# (fleet, SMTP, workers) as session fixtures, registered here once for every test package.
from collections.abc import AsyncIterator  # noqa: E402

import pytest_asyncio  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

from tests.fixtures import *  # noqa: E402, F403
from tests.support import *  # noqa: E402, F403


@pytest_asyncio.fixture(scope="session")
async def temporal_client(temporal_dev_server) -> AsyncIterator[Client]:
    yield await Client.connect(temporal_dev_server.address, data_converter=pydantic_data_converter)
