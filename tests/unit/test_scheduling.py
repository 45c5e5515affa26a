"""tests/scheduling.py: how pytest-xdist deals the suite out, played with stand-in worker nodes
(what the controller sends each worker, in order, and when it tells a worker to stop)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.fixtures import worker_prefix
from tests.scheduling import SuiteScheduling

COLLECTION = [
    "tests/integration/test_a.py::test_one",
    "tests/integration/test_a.py::test_two",
    "tests/unit/test_b.py::test_one",
    "tests/integration/test_c.py::test_one@ports",
    "tests/demo/test_d.py::test_one@ports",
    "tests/integration/test_e.py::test_one",
    "tests/integration/test_z.py::test_secrets@run_last",
]


@dataclass(eq=False)
class Node:
    """What SuiteScheduling calls on an xdist WorkerController."""

    name: str
    sent: list[str] = field(default_factory=list)
    shutting_down: bool = False

    @property
    def gateway(self) -> Any:  # named in xdist's check that every worker collected the same
        return type("Gateway", (), {"id": self.name})()

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(COLLECTION[i] for i in indices)

    def shutdown(self) -> None:
        self.shutting_down = True


class Cache:
    def __init__(self, durations: dict[str, float]) -> None:
        self.durations = durations

    def get(self, key: str, default: Any) -> Any:
        return self.durations


class Config:
    def __init__(self, workers: int, durations: dict[str, float]) -> None:
        self.workers = workers
        self.cache = Cache(durations)

    def getvalue(self, name: str) -> Any:
        assert name == "tx"
        return [f"{self.workers}*popen"]


def run(workers: int, durations: dict[str, float] | None = None) -> list[Node]:
    """Schedule COLLECTION on `workers` nodes that each finish what they were sent, in turn."""
    scheduler = SuiteScheduling(Config(workers, durations or {}))  # type: ignore[arg-type]
    nodes = [Node(f"gw{i}") for i in range(workers)]
    for node in nodes:
        scheduler.add_node(node)  # type: ignore[arg-type]
        scheduler.add_node_collection(node, COLLECTION)  # type: ignore[arg-type]
    scheduler.schedule()
    done = {node.name: 0 for node in nodes}
    while any(done[node.name] < len(node.sent) for node in nodes):
        for node in nodes:
            if done[node.name] < len(node.sent):
                index = COLLECTION.index(node.sent[done[node.name]])
                done[node.name] += 1
                scheduler.mark_test_complete(node, index)  # type: ignore[arg-type]
    assert scheduler.tests_finished
    return nodes


def files(node: Node) -> list[str]:
    return [nodeid.split("::")[0] for nodeid in node.sent]


def test_every_test_runs_once_a_file_or_group_on_one_worker_and_run_last_ends_every_worker():
    nodes = run(3)
    last = COLLECTION[-1]
    everything = [nodeid for node in nodes for nodeid in node.sent if nodeid != last]
    assert sorted(everything) == sorted(COLLECTION[:-1])
    for node in nodes:
        assert node.sent[-1] == last and node.sent.count(last) == 1, node
        assert node.shutting_down
    # A file's tests, and a group's across files, all on the worker that got the first of them.
    holder = {name: node.name for node in nodes for name in files(node)[:-1]}
    a, c, d = (f"tests/{p}.py" for p in ("integration/test_a", "integration/test_c", "demo/test_d"))
    assert files(next(n for n in nodes if n.name == holder[a])).count(a) == 2
    assert holder[c] == holder[d]


def test_longer_files_are_dealt_out_first():
    measured = {
        "tests/integration/test_a.py": 5.0,
        "tests/unit/test_b.py": 300.0,
        "tests/integration/test_c.py": 1.0,
        "tests/demo/test_d.py": 1.0,
        "tests/integration/test_e.py": 60.0,
    }
    first = [node.sent[0] for node in run(3, measured)]
    assert first == [COLLECTION[2], COLLECTION[5], COLLECTION[0]]
    # Before any measured run: the directories of real servers and processes first.
    unmeasured = [node.sent[0] for node in run(1)]
    assert unmeasured[0].startswith("tests/integration/")


def test_one_worker_runs_everything_with_run_last_at_the_end():
    (node,) = run(1)
    assert sorted(node.sent) == sorted(COLLECTION) and node.sent[-1] == COLLECTION[-1]


def test_worker_addresses_are_apart(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    assert worker_prefix("127.0.2.") == "127.0.2." and worker_prefix("127.51.") == "127.51."
    seen = set()
    for worker in range(10):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{worker}")
        for prefix in ("127.0.2.", "127.0.3.", "127.0.4.", "127.50.", "127.54."):
            moved = worker_prefix(prefix)
            assert moved not in seen
            seen.add(moved)
    classic = {p.split(".")[1] for p in seen if p.count(".") == 3}
    mass = {p.split(".")[1] for p in seen if p.count(".") == 2}
    assert not classic & mass, "a worker's lab would share a /16 with another's mass lab"
