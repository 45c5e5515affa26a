"""The layout's rules (README "Development", docs/architecture.md), checked on the code's imports
and calls so that a change cannot quietly break them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "workflows", "activities", "lab")
# Libraries that do I/O: deterministic workflow code must not import them.
IO_LIBRARIES = {
    "aiohttp",
    "asyncssh",
    "httpx",
    "hvac",
    "requests",
    "slack_bolt",
    "slack_sdk",
    "smtplib",
    "socket",
    "subprocess",
}
# Client calls that talk to Temporal about rollouts: only the facade makes them.
ROLLOUT_CALLS = {
    "execute_update",
    "start_update",
    "start_workflow",
    "get_workflow_handle",
    "get_workflow_handle_for",
    "list_workflows",
    "signal_workflow",
}
# The demo ends the workflows an interrupted demo left in its own private database: not a rollout
# operation a person asks for, so it stays with the demo (its docstring says why).
FACADE_EXCEPTIONS = {"bot/rollouts.py", "bot/cli/demo_servers.py"}
MAX_MODULE_LINES = 450  # "no module over ~400 lines"


def modules(*packages: str) -> list[Path]:
    return sorted(path for package in packages for path in (ROOT / package).rglob("*.py"))


def imported(path: Path) -> list[tuple[str, bool]]:
    """(top-level package, imported at module level) for every import in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    found: list[tuple[str, bool]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module.split(".")[0], id(node) in top_level))
    return found


def name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_workflows_import_nothing_that_does_io() -> None:
    wrong = [
        (name(path), package)
        for path in modules("workflows")
        for package, _ in imported(path)
        if package in IO_LIBRARIES | {"bot", "activities", "lab", "tests"}
    ]
    assert wrong == []


# Builtins that do I/O or wait for a person; the sandbox does not check them (workflows/sandbox.py).
IO_BUILTINS = {"open", "input", "breakpoint", "print", "exec", "eval", "compile"}


def io_builtin_calls(source: str) -> list[tuple[int, str]]:
    """(line, name) of every call of an IO_BUILTINS name in `source`."""
    return [
        (node.lineno, node.func.id)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in IO_BUILTINS
    ]


def test_workflows_call_no_builtin_that_does_io() -> None:
    assert io_builtin_calls("def step():\n    with open('/etc/hosts') as f:\n        f.read()") == [
        (2, "open")
    ]
    wrong = [
        (name(path), call)
        for path in modules("workflows")
        for call in io_builtin_calls(path.read_text(encoding="utf-8"))
    ]
    assert wrong == []


def test_activities_never_import_the_front_ends_the_lab_or_the_tests() -> None:
    wrong = [
        (name(path), package)
        for path in modules("activities")
        for package, _ in imported(path)
        if package in {"bot", "lab", "tests"}
    ]
    assert wrong == []


def test_shipped_code_reaches_the_lab_only_from_the_demo_and_only_lazily() -> None:
    wrong = [
        (name(path), package, at_top)
        for path in modules("bot", "workflows", "activities")
        for package, at_top in imported(path)
        if package == "tests"
        or (package == "lab" and (at_top or not name(path).startswith("bot/cli/demo")))
    ]
    assert wrong == []


def test_only_the_facade_talks_to_temporal_about_rollouts() -> None:
    wrong = []
    for path in modules("bot"):
        if name(path) in FACADE_EXCEPTIONS:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ROLLOUT_CALLS:
                wrong.append((name(path), node.lineno, node.attr))
    assert wrong == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_far_over_four_hundred_lines(package: str) -> None:
    long = {
        name(path): lines
        for path in modules(package)
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}
