"""The pre-flight doctor's command (activities/doctor.py PREFLIGHT) run by a real sh: its `df`
section asks one df for every path and pairs each line with its path, and when df fails for one
path (and leaves its line out) it asks one df per path, so no path is given another's numbers.
A `df` stand-in on PATH answers as GNU df does; the lab tests run the real one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from activities.doctor import PREFLIGHT, _sections

# GNU df -P: a header, then one line per path it could read, in order; a path it cannot read
# is a message on stderr and exit status 1, and the other paths are still listed.
FAKE_DF = """#!/bin/sh
echo "$*" >> "$DF_LOG"
shift  # -Pk
echo "Filesystem 1024-blocks Used Available Capacity Mounted on"
status=0
for p; do
    case " $DF_FAILS " in
    *" $p "*) echo "df: $p: Stale file handle" >&2; status=1 ;;
    *) echo "fs$p 1000 $(( ${#p} * 100 )) 500 50% $p" ;;
    esac
done
exit $status
"""


def df_section(tmp_path: Path, fails: str) -> tuple[list[str], list[str]]:
    """The df section's lines, and the df calls made, with df failing for `fails`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "df").write_text(FAKE_DF)
    (bin_dir / "df").chmod(0o755)
    log = tmp_path / "df.log"
    log.write_text("")
    section = PREFLIGHT[PREFLIGHT.index("echo '== df'") : PREFLIGHT.index("echo '== held'")]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DF_LOG": str(log)}
    env["DF_FAILS"] = fails
    ran = subprocess.run(["sh", "-c", section], env=env, capture_output=True, text=True)
    return _sections(ran.stdout)["df"], log.read_text().splitlines()


# The paths the section asks about, those this machine has (/ and /var always).
PATHS = [p for p in ("/", "/var", "/boot") if Path(p).exists()]


def line(path: str) -> str:
    return f"{path} fs{path} 1000 {len(path) * 100} 500 50% {path}"


def test_one_df_for_every_path_each_line_with_its_own_path(tmp_path: Path) -> None:
    lines, calls = df_section(tmp_path, fails="")
    assert calls == [f"-Pk {' '.join(PATHS)}"]
    assert lines == [line(p) for p in PATHS]


def test_when_df_fails_for_one_path_no_path_gets_another_paths_numbers(tmp_path: Path) -> None:
    lines, calls = df_section(tmp_path, fails="/var")
    assert calls == [f"-Pk {' '.join(PATHS)}", *(f"-Pk {p}" for p in PATHS)]
    # /var's own df printed only its header: the line says so (and parses as no df line).
    header = "Filesystem 1024-blocks Used Available Capacity Mounted on"
    assert lines == [line(p) if p != "/var" else f"/var {header}" for p in PATHS]
