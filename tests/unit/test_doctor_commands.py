"""The pre-flight doctor's command (activities/doctor.py PREFLIGHT) run by a real sh: its `df`
section asks one df for every path and pairs each line with its path, and when df fails for one
path (and leaves its line out) it asks one df per path, so no path is given another's numbers
(a `df` stand-in on PATH answers as GNU df does; the lab tests run the real one). Its `locks`
section names every holder of a lock file from /proc/locks, in the files' order, with mawk and
with GNU awk in POSIX mode (real fcntl locks on files of the test's own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from activities.doctor import LOCK_FILES, PREFLIGHT, _sections

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


LOCK_HOLDER = """import fcntl, sys, time
held = [open(path, "w") for path in sys.argv[1:]]
for f in held:
    fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("awk", ["mawk", "gawk --posix"])
def test_the_lock_section_names_each_holder_in_order_with_any_awk(tmp_path: Path, awk: str) -> None:
    # Debian's awk is mawk, RHEL's and SUSE's is GNU awk, which in POSIX mode (POSIXLY_CORRECT,
    # e.g. from /etc/environment) refuses a newline in a -v value: the section would go blind.
    files = [tmp_path / name for name in ("lock-frontend", "lock", "lists-lock", "absent")]
    section = PREFLIGHT[PREFLIGHT.index("echo '== locks'") : PREFLIGHT.index("echo '== df'")]
    section = section.replace(" ".join(LOCK_FILES), " ".join(map(str, files)))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "awk").write_text(f'#!/bin/sh\nexec {awk} "$@"\n')
    (bin_dir / "awk").chmod(0o755)
    held = [files[2], files[0]]  # not in LOCK_FILES order; files[1] exists but is not held
    files[1].write_text("")
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, *map(str, held)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        comm = Path(f"/proc/{holder.pid}/comm").read_text().strip()
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "POSIXLY_CORRECT": "1"}
        ran = subprocess.run(["sh", "-c", section], env=env, capture_output=True, text=True)
    finally:
        holder.kill()
        holder.wait()
    assert ran.stderr == ""
    assert _sections(ran.stdout)["locks"] == [
        f"{files[0]} {holder.pid} {comm}",
        f"{files[2]} {holder.pid} {comm}",
    ]
