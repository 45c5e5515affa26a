"""Which engine was measured: the commit plus a hash of the engine's files as they are on disk.

Benchmarks load `workflows/`, `activities/` and `bot/worker.py` fresh in every PatchPilot run, so
an edit made while a long benchmark runs shows up as a different fingerprint in its results.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ("workflows", "activities", "bot/worker.py")


def engine_fingerprint() -> str:
    """``<commit>+<sha256 of the engine files>[:10]``, e.g. ``d811b73+3f2a9c0b1e``."""
    digest = hashlib.sha256()
    for entry in ENGINE:
        path = ROOT / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode())
            digest.update(file.read_bytes())
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{commit or 'nogit'}+{digest.hexdigest()[:10]}"
