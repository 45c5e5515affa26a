"""What ships: the wheel holds the three packages and no test double, lab or pytest fixture, and the
production code imports without the lab and the tests (the demo alone reaches for the lab, lazily).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("bot", "workflows", "activities")


def build_wheel(out: Path) -> Path:
    uv = shutil.which("uv")
    assert uv, "uv is needed to build the wheel (the README's test command installs it)"
    subprocess.run(
        [uv, "build", "--wheel", "--out-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("patchpilot-*.whl")
    return wheel


def test_wheel_holds_the_three_packages_and_no_test_double(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_wheel(tmp_path)) as wheel:
        names = wheel.namelist()
        sources = {name: wheel.read(name).decode() for name in names if name.endswith(".py")}
    packages = {
        name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")
    }
    assert packages == set(SHIPPED)
    assert not [name for name in names if "standin" in name or "fixture" in name]
    assert not [name for name in names if "/sim/" in name or name.startswith("lab/")]
    assert [name for name, text in sources.items() if "import pytest" in text] == []
    # Only the demo command reaches for the lab (lazily, with a clear error when it is missing).
    lab_users = [
        name for name, text in sources.items() if "from lab" in text or "import lab" in text
    ]
    assert all(name.startswith("bot/cli/demo") for name in lab_users), lab_users


def test_production_code_imports_without_the_lab_and_the_tests() -> None:
    probe = """
import importlib, pkgutil, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("lab", "tests", "pytest"):
            raise ImportError(f"production code imported {name}")
        return None
sys.meta_path.insert(0, Refuse())
for package in ("bot", "workflows", "activities"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        importlib.import_module(info.name)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
