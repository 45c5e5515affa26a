"""Pytest fixtures for the lab; a conftest does ``from tests.fixtures import *``.

- ``openbao``: a session-wide OpenBao dev server (``.address``, ``.root_token``)
- ``temporal_dev_server``: a session-wide Temporal dev server (``.address``)
- ``lab_session`` / ``lab``: one 2 x 2 lab (cluster-a: a1 a2, cluster-b: b1 b2) for the session;
  ``lab`` hands it to a test freshly reset (hosts up, initial state, known_hosts current)
- ``lab_factory``: build and start a lab of any shape; stopped when the test ends

PYTEST_DONT_REWRITE: there are no asserts here, and loading this through ``pytest_plugins``
after something imported it would otherwise warn that it cannot be rewritten.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.embedded import ManagedProcess, free_port
from bot.embedded import start_temporal_dev_server as _start_temporal
from lab.lab import Lab
from lab.processes import OpenBaoProcess, start_openbao

__all__ = ["lab", "lab_factory", "lab_session", "openbao", "temporal_dev_server"]

# Each pytest-xdist worker (tools/dev.py test runs several) is a session of its own, with its own
# servers and labs; they get apart in the loopback range by the second field of their addresses.
_WORKER_STEP = 5
_MAX_WORKERS = 10


def worker_index() -> int:
    """This process's pytest-xdist worker number (``gw3`` -> 3); 0 without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(name.removeprefix("gw"))


def worker_prefix(prefix: str) -> str:
    """``prefix`` (``"127.0.2."``, or a mass lab's ``"127.51."``) moved to this worker's part of
    127.0.0.0/8: its second field plus 5 x the worker number, so unchanged without xdist.

    Classic prefixes (second field 0) land on 127.0/5/.../45.x.x and mass-lab bases (127.50-54.)
    on 127.50-254., apart for up to 10 workers. ValueError for more, or a field past 255.
    """
    index = worker_index()
    if index >= _MAX_WORKERS:
        raise ValueError(f"worker {index}: the tests give at most {_MAX_WORKERS} workers addresses")
    fields = prefix.split(".")
    second = int(fields[1]) + _WORKER_STEP * index
    if second > 255:
        raise ValueError(f"{prefix!r} has no room for worker {index}")
    return ".".join([fields[0], str(second), *fields[2:]])


DEFAULT_CLUSTERS: dict[str, list[str]] = {"cluster-a": ["a1", "a2"], "cluster-b": ["b1", "b2"]}
# Distinct from Lab's default prefix, so a demo lab on 127.0.1.x never collides with the tests.
SESSION_PREFIX = worker_prefix("127.0.2.")
FACTORY_PREFIX = worker_prefix("127.0.3.")


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoProcess]:
    """An OpenBao dev server for the session (KV v2 at ``secret/``, shared by every test)."""
    log = tmp_path_factory.mktemp("openbao") / "openbao.log"
    with start_openbao(log_file=log) as server:
        yield server


@pytest.fixture(scope="session")
def temporal_dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedProcess]:
    """A Temporal dev server for the session, state in memory."""
    log = tmp_path_factory.mktemp("temporal") / "temporal.log"
    with _start_temporal(log_file=log) as server:
        yield server


@pytest.fixture(scope="session")
def lab_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """The session's 2 x 2 lab on 127.0.2.x (``SESSION_PREFIX``), as the last test left it (see
    ``lab``)."""
    root = tmp_path_factory.mktemp("lab")
    with Lab(root, DEFAULT_CLUSTERS, port=free_port(), address_prefix=SESSION_PREFIX) as started:
        yield started


@pytest.fixture
def lab(lab_session: Lab) -> Lab:
    """The session's lab, reset: every host up, in its initial state, known_hosts current."""
    lab_session.reset()
    return lab_session


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[Callable[..., Lab]]:
    """``make(clusters=None, **Lab kwargs)`` builds and starts a lab on 127.0.3.x (default
    clusters: the session lab's); every lab made is stopped when the test ends."""
    labs: list[Lab] = []

    def make(clusters: dict[str, list[str]] | None = None, **kwargs: Any) -> Lab:
        kwargs.setdefault("port", free_port())
        kwargs.setdefault("address_prefix", FACTORY_PREFIX)
        made = Lab(tmp_path / f"lab{len(labs)}", clusters or DEFAULT_CLUSTERS, **kwargs)
        labs.append(made)
        made.start()
        return made

    yield make
    for made in labs:
        made.stop()
