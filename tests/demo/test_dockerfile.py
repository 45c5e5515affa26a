"""The Dockerfile, checked without a Docker engine: its commands against the project's own files.

- every `uv sync` installs exactly the lock file, without the dev group;
- what it COPYs exists and is not excluded by .dockerignore;
- ENTRYPOINT is a console script of pyproject's [project.scripts], CMD and HEALTHCHECK are
  commands that script really has, and the health check behaves (0 with Temporal up, 1 down);
- a non-root user, python 3.11-slim, openssh-client; the pins in pyproject are the lock's versions.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer

from bot.cli import app
from lab import free_port

ROOT = Path(__file__).resolve().parents[2]
PATCHPILOT = str(Path(sys.executable).parent / "patchpilot")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        joined.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    result = []
    for line in joined:
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def exec_form(arguments: str) -> list[str]:
    """A JSON-array (exec form) argument list, after any --options of the instruction."""
    start = arguments.index("[")
    value = json.loads(arguments[start:])
    assert isinstance(value, list) and all(isinstance(item, str) for item in value)
    return value


def only(keyword: str) -> str:
    found = [rest for kw, rest in instructions() if kw == keyword]
    assert len(found) == 1, f"expected exactly one {keyword}, found {found}"
    return found[0]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def dockerignore_excludes(relative: str) -> bool:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!").removeprefix("/")
        candidates = {pattern, pattern.replace("**/", "")}
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatch(p, c) for c in candidates for p in prefixes):
            excluded = not negate
    return excluded


def command_exists(args: list[str]) -> bool:
    """Whether `patchpilot <args>` names a real (sub)command of the typer app."""
    group = typer.main.get_command(app)
    for word in args:
        if word.startswith("-"):
            return True
        commands = getattr(group, "commands", None)
        if commands is None:
            return True  # a leaf command: the rest are its arguments
        if word not in commands:
            return False
        group = commands[word]
    return True


def test_dependencies_come_from_the_lock_file_without_dev_tools() -> None:
    syncs = [rest for kw, rest in instructions() if kw == "RUN" and "uv sync" in rest]
    assert syncs, "no `uv sync` in the Dockerfile"
    for run in syncs:
        words = shlex.split(run[run.index("uv sync") :])
        assert "--locked" in words and "--no-dev" in words, run
    copied = " ".join(rest for kw, rest in instructions() if kw == "COPY")
    assert "uv.lock" in copied and "pyproject.toml" in copied
    assert not any(kw == "RUN" and "pip install" in rest for kw, rest in instructions())
    uv_image = re.search(r"ghcr\.io/astral-sh/uv:(\S+)", copied)
    assert uv_image and re.fullmatch(r"\d+\.\d+\.\d+", uv_image.group(1)), "pin uv's image"


def test_pins_in_pyproject_are_the_versions_in_the_lock() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    locked = {package["name"]: package.get("version") for package in lock["package"]}
    for requirement in pyproject()["project"]["dependencies"]:
        name, _, version = requirement.partition("==")
        assert version, f"{requirement} is not pinned exactly"
        key = re.sub(r"[-_.]+", "-", name.strip().lower())
        assert locked.get(key) == version.strip(), f"{requirement}: uv.lock has {locked.get(key)}"


def test_copied_files_exist_and_are_not_ignored() -> None:
    for keyword, rest in instructions():
        if keyword != "COPY" or "--from=" in rest:
            continue
        *sources, _destination = shlex.split(rest)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
            assert not dockerignore_excludes(source), f"COPY {source} is excluded by .dockerignore"
    # The build needs the readme (pyproject's `readme`) and must not ship tests or the venv.
    assert pyproject()["project"]["readme"] == "README.md"
    assert not dockerignore_excludes("README.md")
    for private in (".venv", ".git", "tests", "bot/__pycache__/cli.cpython-311.pyc"):
        assert dockerignore_excludes(private), private


def test_entry_point_default_command_and_health_check_are_real_commands() -> None:
    scripts = pyproject()["project"]["scripts"]
    entrypoint = exec_form(only("ENTRYPOINT"))
    assert entrypoint[0] in scripts, f"ENTRYPOINT {entrypoint} is not in [project.scripts]"
    assert scripts[entrypoint[0]] == "bot.cli:main"
    command = exec_form(only("CMD"))
    assert entrypoint + command == ["patchpilot", "bot"]
    assert command_exists(command), f"`patchpilot {' '.join(command)}` is not a command"
    health = exec_form(only("HEALTHCHECK"))
    assert health[0] in scripts and command_exists(health[1:]), health
    assert re.search(r"--timeout=\d+s", only("HEALTHCHECK"))


def test_small_base_non_root_user_and_ssh_client() -> None:
    base = [rest for kw, rest in instructions() if kw == "ARG" and rest.startswith("PYTHON_IMAGE")]
    assert base == ["PYTHON_IMAGE=python:3.11-slim"]
    froms = [rest.split()[0] for kw, rest in instructions() if kw == "FROM"]
    assert froms and all(image == "${PYTHON_IMAGE}" for image in froms)
    assert pyproject()["project"]["requires-python"] == ">=3.11"
    user = only("USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    keywords = [kw for kw, _ in instructions()]
    last_run = max(i for i, kw in enumerate(keywords) if kw == "RUN")
    assert keywords.index("USER") > last_run, "USER must come after the last RUN"
    installs = " ".join(rest for kw, rest in instructions() if kw == "RUN" and "apt-get" in rest)
    assert "openssh-client" in installs and "--no-install-recommends" in installs
    assert "rm -rf /var/lib/apt/lists/*" in installs


@pytest.mark.parametrize("temporal_up", [True, False])
def test_health_check_command_reports_temporal(temporal_dev_server, temporal_up: bool) -> None:
    health = exec_form(only("HEALTHCHECK"))
    address = temporal_dev_server.address if temporal_up else f"127.0.0.1:{free_port()}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "PATCHPILOT_"))},
        "TEMPORAL_ADDRESS": address,
    }
    result = subprocess.run(
        [PATCHPILOT, *health[1:]], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == (0 if temporal_up else 1), result.stdout + result.stderr
