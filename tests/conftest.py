"""Shared test setup.

temporalio can abort the interpreter at exit after everything passed (sdk-python#300, exit 134);
pytest's own exit status is kept and the process leaves with it once the summary is printed.
Under pytest-xdist every worker does the same after it has sent its results (its status is its
own session's; the run's is the controller's, computed from every worker's reports).

Parallel runs (``-n``) are dealt out by tests/scheduling.py: per file or ``xdist_group``, and the
``run_last`` tests at the end of every worker.

Tests press Ctrl-C on the demo and the worker (SIGINT). A shell starts a background job with
SIGINT ignored, and an ignored signal stays ignored across exec: the test processes set it back
to the default, so the processes they start get Ctrl-C as a terminal would send it.
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

from tests.scheduling import XdistPlugin, mark_nodeids, remember_durations

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_exit_status: list[int] = []
_durations: list[tuple[str, float]] = []  # (nodeid, seconds) of every setup, call, teardown


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "run_last: run after every other test of the session (with xdist: of every worker's)",
    )
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistPlugin(), "patchpilot-xdist-scheduling")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)
    if _is_worker(config):
        mark_nodeids(items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _durations.append((report.nodeid, report.duration))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))
    if not _is_worker(session.config):
        remember_durations(session.config, _durations)


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
