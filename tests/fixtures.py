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

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.embedded import ManagedProcess, free_port
from bot.embedded import start_temporal_dev_server as _start_temporal
from lab.lab import Lab
from lab.processes import OpenBaoProcess, start_openbao

__all__ = ["lab", "lab_factory", "lab_session", "openbao", "temporal_dev_server"]

DEFAULT_CLUSTERS: dict[str, list[str]] = {"cluster-a": ["a1", "a2"], "cluster-b": ["b1", "b2"]}
# Distinct from Lab's default prefix, so a demo lab on 127.0.1.x never collides with the tests.
SESSION_PREFIX = "127.0.2."
FACTORY_PREFIX = "127.0.3."


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
    """The session's 2 x 2 lab on 127.0.2.x, as the last test left it (see ``lab``)."""
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
