"""How pytest-xdist deals the suite out to its workers (``tools/dev.py test`` runs with ``-n``).

Every worker is a pytest session of its own: its own Temporal dev server, OpenBao, SMTP server and
labs (tests/fixtures.py, tests/support.py), on addresses of its own (``worker_prefix``). This
scheduler hands out work units in the spirit of ``--dist loadfile``, with two additions:

- a unit is a test file, or every test marked ``xdist_group(name)`` together, whatever their
  files (tests that need a machine-wide resource, e.g. a fixed port, run one after another);
- the ``run_last`` tests run on *every* worker that ran anything, each after all of that worker's
  other tests: they check what the whole session left on the worker's own servers (e.g. no
  workflow history holds a secret), and under xdist there is one such session per worker.

Longer units go first, so the run does not end waiting for one slow file: by the durations the
previous run on this checkout measured (pytest's cache), and before any run by where the file is
(real servers and processes in integration/slack/demo/teams, in-process tests elsewhere).
The conftest marks the nodeids (``<nodeid>@<group>``, as xdist's own ``loadgroup`` does).
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

RUN_LAST = "run_last"
DURATIONS_KEY = "patchpilot/file-durations"
# Before any measured run: the directories whose tests wait for real servers and processes.
SLOW_DIRECTORIES = ("tests/demo/", "tests/slack/", "tests/integration/", "tests/teams/")
# Files that share something machine-wide without saying so in an xdist_group mark: both start
# a python3 holding dpkg's lock with `fcntl.lockf`, and test_doctor.py finds its own holder with
# `pgrep -f 'fcntl.lockf'`, which sees every process on the machine (a lab host has a mount
# namespace of its own, not a pid namespace). One after the other, on one worker.
FILE_GROUPS = {
    "tests/integration/test_apt_root.py": "dpkg-lock-holders",
    "tests/integration/test_doctor.py": "dpkg-lock-holders",
}


def group_of(nodeid: str) -> str | None:
    """The ``@group`` a nodeid was given by the conftest, or None."""
    at = nodeid.rfind("@")
    return nodeid[at + 1 :] if at > nodeid.rfind("]") else None


def file_of(nodeid: str) -> str:
    """``tests/a/test_b.py::test_c[x]@g`` -> ``tests/a/test_b.py``."""
    return nodeid.split("::", 1)[0]


class SuiteScheduling(LoadScopeScheduling):
    """File or group units, longest first; ``run_last`` units once per worker, at its end."""

    def __init__(self, config: pytest.Config, log: Any = None) -> None:
        super().__init__(config, log)
        self.last: list[str] = []
        self.given_last: set[Any] = set()
        self.scheduled = False
        cache = getattr(config, "cache", None)
        self.durations: dict[str, float] = (cache.get(DURATIONS_KEY, {}) if cache else {}) or {}

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid) or file_of(nodeid)

    def _expected(self, scope: str, nodeids: dict[str, bool]) -> tuple[float, int]:
        """A unit's sort key: measured seconds, else a guess from its place and size."""
        files = {file_of(nodeid) for nodeid in nodeids}
        measured = sum(self.durations.get(name, 0.0) for name in files)
        if all(name in self.durations for name in files):
            return (measured, len(nodeids))
        slow = any(name.startswith(SLOW_DIRECTORIES) for name in files)
        return (1e6 if slow else 0.0, len(nodeids))

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.scheduled:
            for node in self.nodes:
                self._reschedule(node)
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        collection = list(next(iter(self.registered_collections.values())))
        self.collection = collection
        self.scheduled = True
        if not collection:
            return
        units: dict[str, dict[str, bool]] = {}
        for nodeid in collection:
            scope = self._split_scope(nodeid)
            if scope == RUN_LAST:
                self.last.append(nodeid)
            else:
                units.setdefault(scope, {})[nodeid] = False
        ordered = sorted(units.items(), key=lambda unit: self._expected(*unit), reverse=True)
        self.workqueue.clear()
        self.workqueue.update(ordered)
        extra_nodes = len(self.nodes) - len(self.workqueue)
        for _ in range(max(extra_nodes, 0)):
            unused, _assigned = self.assigned_work.popitem()
            unused.shutdown()
        for node in self.nodes:
            if self.workqueue:
                self._assign_work_unit(node)

    def _reschedule(self, node: Any) -> None:
        if node.shutting_down:
            return
        if not self.workqueue:
            # Nothing else will come to this node: its run_last tests go after what it has.
            if self.last and node not in self.given_last:
                self.given_last.add(node)
                unit = {nodeid: False for nodeid in self.last}
                self.assigned_work[node][RUN_LAST] = unit
                collection = self.registered_collections[node]
                node.send_runtest_some([collection.index(nodeid) for nodeid in unit])
            node.shutdown()
            return
        if self._pending_of(self.assigned_work[node]) > 2:
            return
        self._assign_work_unit(node)


def mark_nodeids(items: list[pytest.Item]) -> None:
    """Under xdist: ``@run_last`` and ``@<xdist_group name>`` (or the FILE_GROUPS group) on the
    nodeids SuiteScheduling reads (a worker's items are sent to the controller by nodeid only)."""
    for item in items:
        if item.get_closest_marker(RUN_LAST) is not None:
            group: str | None = RUN_LAST
        else:
            marker = item.get_closest_marker("xdist_group")
            group = FILE_GROUPS.get(file_of(item.nodeid))
            if marker is not None:
                group = str(marker.args[0] if marker.args else marker.kwargs.get("name"))
        if group is not None and group_of(item.nodeid) is None:
            _rename(item, f"{item.nodeid}@{group}")


def _rename(item: pytest.Item, nodeid: str) -> None:
    # pytest 9.2 keeps a structured id (`_id`, a NodeId) where older releases, and xdist's own
    # loadgroup (which therefore no longer groups on 9.2), set `_nodeid`.
    current = getattr(item, "_id", None)
    if current is not None:
        item._id = type(current).parse(nodeid)
    else:
        setattr(item, "_nodeid", nodeid)  # noqa: B010


class XdistPlugin:
    """The xdist hook, registered only when xdist is loaded (``-p no:xdist`` runs without it)."""

    @pytest.hookimpl
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        # ``-n`` alone means ``--dist load``: this scheduler instead (files, groups, run_last).
        if config.getoption("dist") in ("load", "loadfile", "loadgroup"):
            return SuiteScheduling(config, log)
        return None


def remember_durations(config: pytest.Config, durations: list[tuple[str, float]]) -> None:
    """Keep each file's total seconds (setup + call + teardown: `durations` holds one
    (nodeid, seconds) per phase of every test) in pytest's cache, for the next run's order."""
    cache = getattr(config, "cache", None)
    if cache is None or not durations:
        return
    totals: dict[str, float] = {}
    for nodeid, seconds in durations:
        name = file_of(nodeid)
        totals[name] = totals.get(name, 0.0) + seconds
    cache.set(DURATIONS_KEY, {**(cache.get(DURATIONS_KEY, {}) or {}), **totals})
