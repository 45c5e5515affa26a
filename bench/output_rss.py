"""Worker memory against what a host prints (issue 15): RSS growth while one command prints N bytes.

    python bench/output_rss.py                       # 1 GiB through PatchPilot, 256 MiB baseline
    python bench/output_rss.py --size 1G --baseline-size 1G

Each measurement runs in a fresh process of its own against one real sshd lab host: the process
connects, notes its RSS, runs `head -c N /dev/zero | tr '\\0' x` and reports its peak RSS
(VmHWM) minus the RSS before. Contenders, in the same run:
- `patchpilot`: `HostSession.run` (bytes, bounded head and tail; activities/output.py)
- `baseline`: what the worker did before: asyncssh's `run()` keeping the whole output as text
The table gives the growth in MiB and per printed GiB, and the ratio baseline / PatchPilot.
Needs root and sshd (the classic lab).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from activities.ssh import SshRunner  # noqa: E402
from activities.vault import SshCredentials  # noqa: E402
from workflows.models import HostTarget  # noqa: E402

if TYPE_CHECKING:
    from lab.base import LabBase

MIB = 1024 * 1024


def parse_size(text: str) -> int:
    """'1G', '256M', '1000' -> bytes (powers of 1024)."""
    units = {"K": 1024, "M": MIB, "G": 1024 * MIB}
    text = text.strip().upper()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


async def _measure(contender: str, size: int, where: dict[str, object]) -> dict[str, float]:
    """In this (fresh) process: connect, note RSS, print `size` bytes, report the peak growth."""
    command = f"head -c {size} /dev/zero | tr '\\0' x"
    key = await asyncio.to_thread(Path(str(where["key"])).read_text)
    host = HostTarget(
        name="o1", cluster="bench", address=str(where["address"]), port=int(str(where["port"]))
    )
    credentials = SshCredentials(private_key=key, username=str(where["user"]), source_path="lab")
    runner = SshRunner(Path(str(where["known_hosts"])))
    async with runner.session(host, credentials) as session:
        await session.run("true", 30)  # the connection and its buffers exist before the start
        if contender == "baseline":
            connection = session._connection
        # Reset the peak to the current RSS (proc(5), /proc/pid/clear_refs "5"), so VmHWM is
        # this command's peak, not the imports'.
        Path("/proc/self/clear_refs").write_text("5")  # noqa: ASYNC240
        before = _status_kib("VmRSS")
        started = time.monotonic()
        if contender == "patchpilot":
            result = await session.run(command, 600)
            kept = len(result.stdout)
        else:
            completed = await connection.run(command, check=False)
            kept = len(str(completed.stdout))
        seconds = time.monotonic() - started
    runner.close_all()
    growth_mib = (_status_kib("VmHWM") - before) / 1024
    return {
        "growth_mib": growth_mib,
        "rss_before_mib": before / 1024,
        "kept_chars": kept,
        "seconds": seconds,
    }


def where_of(lab: LabBase, name: str) -> dict[str, object]:
    """How the measuring child reaches lab host `name` (its `where` argument, JSON)."""
    h = lab.host(name)
    return {
        "address": h.address,
        "port": h.port,
        "user": lab.user,
        "key": str(lab.client_key_path),
        "known_hosts": str(lab.known_hosts_path),
    }


def _child(contender: str, size: int, where: dict[str, object]) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", contender, str(size), json.dumps(where)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1G", help="bytes PatchPilot reads (default 1G)")
    parser.add_argument("--baseline-size", default="256M", help="bytes the baseline reads")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        contender, size, where = args.child
        print(json.dumps(asyncio.run(_measure(contender, int(size), json.loads(where)))))
        return
    from bot.embedded import free_port
    from lab import Lab

    size, baseline_size = parse_size(args.size), parse_size(args.baseline_size)
    with tempfile.TemporaryDirectory(prefix="output-rss-") as tmp:
        lab = Lab(Path(tmp), {"bench": ["o1"]}, port=free_port(), address_prefix="127.0.9.")
        with lab:
            where = where_of(lab, "o1")
            runs = [
                ("baseline", baseline_size, _child("baseline", baseline_size, where)),
                ("patchpilot", baseline_size, _child("patchpilot", baseline_size, where)),
                ("patchpilot", size, _child("patchpilot", size, where)),
            ]
    print(
        f"{'contender':<11} {'printed MiB':>11} {'RSS before':>10} {'RSS growth MiB':>15} "
        f"{'MiB per GiB':>12} {'kept chars':>11} {'seconds':>8}"
    )
    for contender, printed, r in runs:
        per_gib = r["growth_mib"] / (printed / (1024 * MIB))
        print(
            f"{contender:<11} {printed / MIB:>11.0f} {r['rss_before_mib']:>10.1f} "
            f"{r['growth_mib']:>15.2f} {per_gib:>12.1f} "
            f"{r['kept_chars']:>11.0f} {r['seconds']:>8.1f}"
        )
    base = runs[0][2]["growth_mib"]
    same = max(runs[1][2]["growth_mib"], 0.1)
    print(f"ratio baseline / PatchPilot at {baseline_size / MIB:.0f} MiB: {base / same:.0f}x")
    print(
        f"PatchPilot growth at {size / MIB:.0f} MiB vs {baseline_size / MIB:.0f} MiB: "
        f"{runs[2][2]['growth_mib']:.1f} vs {runs[1][2]['growth_mib']:.1f} MiB (constant = bounded)"
    )


if __name__ == "__main__":
    main()
