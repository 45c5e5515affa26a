#!/usr/bin/env python3
"""PatchPilot's developer commands on a fresh machine: only Python 3.11+ and pip are assumed.

    python3 tools/dev.py test [PYTEST ARGS]   the test suite (what CI runs after `lint`), in
                                              TEST_WORKERS parallel pytest-xdist workers
                                              (`-n 0` among the arguments: one process)
    python3 tools/dev.py lint                 ruff check, ruff format --check, mypy
    python3 tools/dev.py demo [DEMO ARGS]     `patchpilot demo` with the demo extra

Each installs what is missing first: uv (from PyPI with pip, the version CI and the Dockerfile
use), then the locked dependencies (`uv sync --locked`). `test` also needs Debian packages the
tests run for real (OpenSSH's server and client, Chromium, Prometheus, procps, util-linux, dpkg,
dpkg-dev): installed with apt-get when run as root, otherwise named with the command to run.
Exit codes: the command's own; 2 when something needed cannot be installed.
Standard library only: this file runs before anything is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UV_VERSION = "0.13.8"  # the same release as the Dockerfile's uv image
# The tests mostly wait (servers, sshd hosts, timers), so even 2 cores run several at once: each
# worker has servers and lab addresses of its own (tests/fixtures.py, tests/scheduling.py).
TEST_WORKERS = "3"
# What the tests run for real: a path that must exist -> the Debian package that provides it.
TEST_PACKAGES = {
    "/usr/sbin/sshd": "openssh-server",  # the lab's hosts
    "/usr/bin/ssh-keygen": "openssh-client",
    "/usr/bin/ps": "procps",
    "/usr/bin/unshare": "util-linux",  # the lab's mount namespaces
    "/usr/bin/dpkg-scanpackages": "dpkg-dev",  # the real-apt lab's repository (lab/apt_repo.py)
    "/usr/bin/chromium": "chromium",  # the link-approval pages, driven by Playwright
    "/usr/bin/prometheus": "prometheus",  # health gates against a real Prometheus
    "/usr/bin/dpkg-deb": "dpkg",  # builds the real-apt lab's test packages
    # apt and dpkg speaking Latin-1 French (tests/integration/test_apt_lab_answers.py)
    "/usr/share/i18n/locales/fr_FR": "locales",
    # The lab's Rocky host (lab/rpm_lab.py): real dnf and rpm, a local rpm repository.
    "/usr/bin/dnf": "dnf",
    "/usr/bin/rpmbuild": "rpm",
    "/usr/bin/createrepo_c": "createrepo-c",
    "/usr/lib/python3/dist-packages/dnf-plugins/needs_restarting.py": "dnf-plugins-core",
    # GNU awk (RHEL's and SUSE's awk; Debian's is mawk): the doctor's script in POSIX mode.
    "/usr/bin/gawk": "gawk",
}


class Missing(Exception):
    """Something needed cannot be installed here; the message says what to do."""


def say(text: str) -> None:
    print(f"tools/dev.py: {text}", file=sys.stderr, flush=True)


def missing_packages() -> list[str]:
    """The Debian packages of TEST_PACKAGES whose file is absent (also looked up on PATH)."""
    absent = []
    for path, package in TEST_PACKAGES.items():
        if not Path(path).exists() and not shutil.which(Path(path).name):
            absent.append(package)
    return absent


def install_packages(packages: list[str]) -> None:
    """apt-get install `packages` as root; Missing with the command to run otherwise."""
    if not packages:
        return
    command = f"apt-get update && apt-get install -y --no-install-recommends {' '.join(packages)}"
    if not shutil.which("apt-get"):
        raise Missing(
            f"the tests need {', '.join(packages)} (Debian package names) and this machine has "
            "no apt-get: install their equivalents, then run this again"
        )
    if os.geteuid() != 0:
        raise Missing(
            f"the tests need Debian packages that are missing: {', '.join(packages)}. Run this "
            f"as root (it installs them), or first: sudo sh -c '{command}'"
        )
    say(f"installing {', '.join(packages)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True,
        env=env,
    )


def _pip_install_uv(extra: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", *extra, f"uv=={UV_VERSION}"],
        capture_output=True,
        text=True,
    )


def uv() -> list[str]:
    """The command that runs uv: on PATH, or installed now with this Python's pip."""
    found = shutil.which("uv")
    if found:
        return [found]
    probe = subprocess.run([sys.executable, "-m", "uv", "--version"], capture_output=True)
    if probe.returncode != 0:
        say(f"installing uv {UV_VERSION} with pip")
        done = _pip_install_uv([])
        if done.returncode != 0 and "externally-managed-environment" in done.stderr:
            # Debian's own Python refuses system-wide pip installs (PEP 668): the user's site.
            done = _pip_install_uv(["--user", "--break-system-packages"])
        if done.returncode != 0:
            raise Missing(f"cannot install uv with pip: {done.stderr.strip()[-600:]}")
    return [sys.executable, "-m", "uv"]


def uv_env(command: list[str]) -> dict[str, str]:
    """The environment for uv and what it runs: uv itself on PATH (the wheel test builds with
    `uv`): pip put it in this Python's scripts folder, or in ~/.local/bin."""
    env = dict(os.environ)
    if len(command) > 1:
        folders = [str(Path(sys.executable).parent), os.path.expanduser("~/.local/bin")]
        env["PATH"] = os.pathsep.join([*folders, env.get("PATH", "")])
    return env


def run(argv: list[str], env: dict[str, str]) -> int:
    return subprocess.run(argv, cwd=ROOT, env=env).returncode


def main(argv: list[str]) -> int:
    """Dispatch `test`, `lint` or `demo`; see the module doc."""
    if not argv or argv[0] not in ("test", "lint", "demo"):
        print(__doc__, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "test":
            install_packages(missing_packages())
        runner = uv()
    except Missing as problem:
        say(str(problem))
        return 2
    env = uv_env(runner)
    if command == "demo":
        demo = ["run", "--locked", "--extra", "demo", "patchpilot", "demo"]
        return run([*runner, *demo, *rest], env)
    synced = run([*runner, "sync", "--locked"], env)
    if synced != 0:
        return synced
    if command == "test":
        # The caller's own -n comes later and wins.
        return run([*runner, "run", "--locked", "pytest", "-n", TEST_WORKERS, *rest], env)
    for check in (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy", "."]):
        code = run([*runner, "run", "--locked", *check], env)
        if code != 0:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
