"""`patchpilot demo` where the lab package is missing (a wheel install): a clear refusal, exit 2,
and nothing started or written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WITHOUT_LAB = """
import sys

class NoLab:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "lab":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoLab())
from bot.cli import main
main(sys.argv[1:])
"""


def test_the_demo_says_it_needs_a_source_checkout(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_LAB, "demo", "--headless", "--data-dir", str(data_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, out
    assert "error: the demo runs from a source checkout: the lab package is not installed" in out
    assert "Traceback" not in out
    assert not data_dir.exists()
