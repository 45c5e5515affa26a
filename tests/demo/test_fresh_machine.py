"""The README's demo line on a machine that has Python and pip but no uv: tools/dev.py installs uv
with pip, the locked dependencies with the `demo` extra, and the demo patches its lab."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def checkout_copy(target: Path) -> Path:
    """The working tree as a fresh clone would have it (tracked and new files, nothing ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.split(b"\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            (target / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name.decode())
    return target


# The demo's Web UI tries Temporal's default port 8233, as does the embedded Temporal of
# tests/integration/test_embedded.py: the two never run at the same time (tests/scheduling.py).
pytestmark = pytest.mark.xdist_group("temporal-default-ports")


def test_the_demo_line_works_without_uv(tmp_path: Path) -> None:
    checkout = checkout_copy(tmp_path / "checkout")
    python = tmp_path / "python"
    subprocess.run([sys.executable, "-m", "venv", str(python)], check=True, timeout=120)
    path = [
        folder
        for folder in os.environ["PATH"].split(os.pathsep)
        if folder and not (Path(folder) / "uv").exists()
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV")}
    env["PATH"] = os.pathsep.join(path)
    assert shutil.which("uv", path=env["PATH"]) is None
    done = subprocess.run(
        [str(python / "bin" / "python"), "tools/dev.py", "demo", "--auto-approve",
         "--data-dir", str(tmp_path / "data")],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-3000:]
    assert "installing uv" in done.stderr
    assert "Rollout succeeded: 6 hosts patched" in done.stdout
    assert (checkout / ".venv" / "bin" / "bao").exists(), "the demo extra was installed"
