"""tools/dev.py, the README's test and demo commands: what it does on a machine that lacks
something, and that CI runs exactly what the README says."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "tools" / "dev.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_runs_exactly_the_readme_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [
        line for line in ci.splitlines() if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert commands == ["python3 tools/dev.py lint", "python3 tools/dev.py test"]
    assert re.search(r"^python3 tools/dev.py test\b", readme, re.M), "README's test command"
    assert re.search(r"^python3 tools/dev.py demo --auto-approve\b", readme, re.M)


def test_not_root_names_the_missing_packages_and_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = dev()
    monkeypatch.setattr(script, "missing_packages", lambda: ["openssh-server", "chromium"])
    monkeypatch.setattr(script.os, "geteuid", lambda: 1000)
    ran: list[list[str]] = []
    monkeypatch.setattr(script.subprocess, "run", lambda argv, **_: ran.append(argv))
    assert script.main(["test"]) == 2
    said = capsys.readouterr().err
    assert "the tests need Debian packages that are missing: openssh-server, chromium" in said
    assert "Run this as root" in said
    assert "sudo sh -c 'apt-get update && apt-get install -y --no-install-recommends " in said
    assert ran == [], "nothing runs when a package is missing"


def test_the_package_list_matches_what_the_tests_run() -> None:
    script = dev()
    # Every file the tests start for real, by the Debian package that has it on this machine.
    for path, package in script.TEST_PACKAGES.items():
        owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if owner.returncode == 0:
            assert owner.stdout.split(":")[0] == package, (path, owner.stdout)
    assert script.missing_packages() == [], "this machine ran the README's command"


def test_unknown_command_prints_the_usage() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "dev.py"), "bogus"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "python3 tools/dev.py test" in done.stderr
