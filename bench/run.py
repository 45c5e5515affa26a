"""PatchPilot vs Ansible vs raw asyncssh on the same fleet, same steps, same concurrency (issue 6).

    uv run --group bench python bench/run.py            # N = 20, 100, 500 x C = 1, 10, 50
    uv run --group bench python bench/run.py --quick    # N = 20, C = 1, 10 (a few minutes)
    uv run --group bench python bench/run.py --hosts 100 --concurrency 10 --only patchpilot

The fleet is a `lab.mass.MassLab` (real sshd, one loopback address per host, per-host state);
every contender runs the 14 per-host commands of `bench/steps.py` on every host, in its own process,
and the lab is reset and checked (updated exactly once, out of maintenance, services up) after each
run. Results go to stdout as tables and to bench/results/run-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.fingerprint import engine_fingerprint  # noqa: E402
from bot.embedded import ManagedProcess, start_temporal_dev_server  # noqa: E402
from lab.mass import MassLab  # noqa: E402
from lab.processes import OpenBaoProcess, start_openbao  # noqa: E402

CONTENDERS = ("raw", "raw-window", "ansible", "patchpilot")
TARGET_VS_ANSIBLE = 0.5  # at N=100, C=10
TARGET_VS_RAW = 1.3
TARGET_VAULT_READS = 1.0
TARGET_HANDSHAKES = 2.0
NOISE_NOTE = (
    "2 cores shared with other work: sshd, the contender, Temporal and OpenBao all compete for "
    "them, so numbers are noisy; compare ratios from one run, repeat for confidence."
)


class Servers:
    """OpenBao and a Temporal dev server for the whole bench run."""

    def __init__(self, workdir: Path, need_patchpilot: bool, eager: bool = False) -> None:
        self.workdir = workdir
        self.need = need_patchpilot
        self.eager = eager
        self.bao: OpenBaoProcess | None = None
        self.temporal: ManagedProcess | None = None

    def __enter__(self) -> Servers:
        if self.need:
            self.bao = start_openbao(log_file=self.workdir / "openbao.log")
            # Eager activity execution: the server hands an activity the workflow task just
            # scheduled straight back to the worker that scheduled it (off by default).
            dynamic: dict[str, object] | None = (
                {"system.enableActivityEagerExecution": True} if self.eager else None
            )
            self.temporal = start_temporal_dev_server(
                log_file=self.workdir / "temporal.log", dynamic_config=dynamic
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (self.temporal, self.bao):
            if server is not None:
                server.stop()


def fleet_spec(lab: MassLab) -> dict[str, Any]:
    return {
        "inventory": str(lab.inventory_path),
        "known_hosts": str(lab.known_hosts_path),
        "client_key": str(lab.client_key_path),
        "clusters": list(lab.clusters),
        "hosts": [{"name": h.name, "address": h.address, "port": h.port} for h in lab.hosts],
        "user": lab.user,
    }


def run_contender(kind: str, spec: dict[str, Any], workdir: Path, timeout: float) -> dict[str, Any]:
    """Run one contender in a process of its own; its last BENCH-RESULT line is the result."""
    spec = {**spec, "timeout": timeout}
    module_kind = "raw" if kind.startswith("raw") else kind
    if kind == "raw-window":
        spec["mode"] = "window"
    spec_path = workdir / f"spec-{kind}-{uuid.uuid4().hex[:6]}.json"
    spec_path.write_text(json.dumps(spec))
    log_path = spec_path.with_suffix(".log")
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.contenders", module_kind, str(spec_path)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"error": f"timed out after {timeout:.0f}s", "log": str(log_path)}
    for line in reversed(out.splitlines()):
        if line.startswith("BENCH-RESULT "):
            result = json.loads(line.removeprefix("BENCH-RESULT "))
            result["log"] = str(log_path)
            return result
    tail = log_path.read_text()[-2000:]
    return {"error": f"exit {proc.returncode}: {tail}", "log": str(log_path)}


def configurations(args: argparse.Namespace) -> list[tuple[int, int]]:
    if args.quick:
        hosts, conc = [20], [1, 10]
    else:
        hosts = args.hosts or [20, 100, 500]
        conc = args.concurrency or [1, 10, 50]
    out = []
    for n in hosts:
        for c in conc:
            if c > n:
                continue
            if n >= 500 and c == 1 and not args.slow:
                continue  # ~25 min for Ansible alone; --slow runs it
            out.append((n, c))
    return out


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def check(value: float | None, target: float) -> str:
    if value is None:
        return ""
    return "ok" if value <= target else "MISS"


def print_tables(rows: list[dict[str, Any]]) -> None:
    def get(row: dict[str, Any], kind: str, key: str) -> float | None:
        result = row["results"].get(kind) or {}
        if result.get("error") or not result.get("ok", False):
            return None
        value = result.get(key)
        return float(value) if value is not None else None

    print(
        "\nWall time (s); ratios are PatchPilot / other. Targets: vs Ansible <= 0.50 at N=100,"
        " C=10; vs raw (waves) <= 1.30"
    )
    header = (
        f"{'N':>5} {'C':>4} | {'raw':>7} {'raw-win':>7} {'ansible':>8} {'PP':>8} |"
        f" {'PP/ans':>7} {'tgt':>5} | {'PP/raw':>7} {'tgt':>5}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        raw = get(row, "raw", "wall")
        pp = get(row, "patchpilot", "wall")
        ans = get(row, "ansible", "wall")
        vs_ans = pp / ans if pp and ans else None
        vs_raw = pp / raw if pp and raw else None
        tgt_ans = check(vs_ans, TARGET_VS_ANSIBLE) if (row["n"], row["c"]) == (100, 10) else ""
        print(
            f"{row['n']:>5} {row['c']:>4} | {fmt(raw):>7} {fmt(get(row, 'raw-window', 'wall')):>7}"
            f" {fmt(ans):>8} {fmt(pp):>8} | {fmt(vs_ans):>7} {tgt_ans:>5} |"
            f" {fmt(vs_raw):>7} {check(vs_raw, TARGET_VS_RAW):>5}"
        )

    print(
        "\nCPU seconds (client side: the contender's process tree; PatchPilot = worker + Temporal"
        " dev server + OpenBao) and host side (all sshd sessions)"
    )
    header = (
        f"{'N':>5} {'C':>4} | {'raw':>6} {'ansible':>8} {'PP':>7} ({'worker':>6} {'tmprl':>6}"
        f" {'vault':>5}) | {'PP/ans':>6} {'PP/raw':>6} | host: {'raw':>5} {'ans':>6} {'PP':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        raw = get(row, "raw", "cpu")
        ans = get(row, "ansible", "cpu")
        pp = get(row, "patchpilot", "cpu")
        print(
            f"{row['n']:>5} {row['c']:>4} | {fmt(raw):>6} {fmt(ans):>8} {fmt(pp):>7}"
            f" ({fmt(get(row, 'patchpilot', 'cpu_worker')):>6}"
            f" {fmt(get(row, 'patchpilot', 'cpu_temporal')):>6}"
            f" {fmt(get(row, 'patchpilot', 'cpu_vault')):>5}) |"
            f" {fmt(pp / ans if pp and ans else None):>6}"
            f" {fmt(pp / raw if pp and raw else None):>6}"
            f" | host: {fmt(get(row, 'raw', 'host_cpu'), 1):>5}"
            f" {fmt(get(row, 'ansible', 'host_cpu'), 1):>6}"
            f" {fmt(get(row, 'patchpilot', 'host_cpu'), 1):>6}"
        )

    print("\nPer-host cost of a PatchPilot rollout (measured vs target) and worker memory")
    header = (
        f"{'N':>5} {'C':>4} | {'vault reads/host':>16} {'tgt<=1':>6} | {'handshakes/host':>15}"
        f" {'tgt<=2':>6} | {'cmds/host':>9} | {'worker peak RSS MiB':>19} | engine"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        reads = get(row, "patchpilot", "vault_reads_per_host")
        shakes = get(row, "patchpilot", "handshakes_per_host")
        cmds = get(row, "patchpilot", "commands_per_host")
        print(
            f"{row['n']:>5} {row['c']:>4} | {fmt(reads):>16}"
            f" {check(reads, TARGET_VAULT_READS):>6} |"
            f" {fmt(shakes):>15} {check(shakes, TARGET_HANDSHAKES):>6} | {fmt(cmds, 0):>9} |"
            f" {fmt(get(row, 'patchpilot', 'rss_peak_mib'), 0):>19} |"
            f" {(row['results'].get('patchpilot') or {}).get('engine', '-')}"
        )

    print("\nTemporal history of a PatchPilot rollout (events; warning threshold 10,240 per run)")
    header = (
        f"{'N':>5} {'C':>4} | {'runs':>4} {'max/run':>8} {'parent/host':>11} |"
        f" {'child events':>12} | top parent event types"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        result = row["results"].get("patchpilot") or {}
        events = result.get("events")
        if not events:
            continue
        top = sorted(events["parent_by_type"].items(), key=lambda kv: -kv[1])[:4]
        print(
            f"{row['n']:>5} {row['c']:>4} | {events['runs']:>4} {events['max_events_per_run']:>8}"
            f" {events['parent_total_events'] / row['n']:>11.1f} |"
            f" {events['child_events_mean']:>12.1f} | "
            + ", ".join(f"{k.lower()} {v}" for k, v in top)
        )

    failures = [
        (row["n"], row["c"], kind, result.get("error") or "; ".join(result.get("problems", [])[:3]))
        for row in rows
        for kind, result in row["results"].items()
        if result.get("error") or not result.get("ok", False)
    ]
    if failures:
        print("\nRuns that failed or left the fleet wrong (excluded from the tables):")
        for n, c, kind, why in failures:
            print(f"  N={n} C={c} {kind}: {str(why)[:300]}")
    print(f"\nNote: {NOISE_NOTE}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N=20, C=1,10")
    parser.add_argument("--hosts", type=int, nargs="+", help="fleet sizes (default 20 100 500)")
    parser.add_argument("--concurrency", type=int, nargs="+", help="C values (default 1 10 50)")
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, help="contenders to run")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per run")
    parser.add_argument("--listeners", type=int, default=4, help="sshd processes in the lab")
    parser.add_argument("--slow", action="store_true", help="also N>=500 with C=1")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--eager-activities",
        action="store_true",
        help="Temporal dev server with system.enableActivityEagerExecution=true",
    )
    parser.add_argument(
        "--no-reboot-check",
        action="store_true",
        help="raw and Ansible skip the 2 reboot-check commands PatchPilot runs after the update",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the PatchPilot worker (approval to result); .prof files go to --out",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where JSON goes")
    args = parser.parse_args(argv)

    contenders = args.only or [
        kind for kind in CONTENDERS if not (args.quick and kind == "raw-window")
    ]
    configs = configurations(args)
    workdir = Path(tempfile.mkdtemp(prefix="ppb-", dir="/tmp"))
    print(f"bench: {len(configs)} configurations {configs}, contenders {contenders}")
    print(f"bench: work directory {workdir}; engine {engine_fingerprint()}; {NOISE_NOTE}")
    rows: list[dict[str, Any]] = []
    started = time.time()
    with Servers(workdir, "patchpilot" in contenders, eager=args.eager_activities) as servers:
        for n in sorted({n for n, _ in configs}):
            lab = MassLab(workdir / f"lab-{n}", n, listeners=args.listeners)
            lab.start()
            try:
                if servers.bao is not None:
                    lab.seed_vault(servers.bao.address, servers.bao.root_token)
                for _, c in [cfg for cfg in configs if cfg[0] == n]:
                    row: dict[str, Any] = {"n": n, "c": c, "results": {}}
                    for kind in contenders:
                        lab.reset()
                        spec = {
                            **fleet_spec(lab),
                            "concurrency": c,
                            "rollout_id": f"bench-{kind}-{n}-{c}-{uuid.uuid4().hex[:6]}",
                            "reboot_check": not args.no_reboot_check,
                        }
                        if servers.temporal is not None and servers.bao is not None:
                            spec.update(
                                temporal_address=servers.temporal.address,
                                temporal_pid=servers.temporal.pid,
                                vault_addr=servers.bao.address,
                                vault_token=servers.bao.root_token,
                                vault_pid=servers.bao.pid,
                            )
                        if kind == "patchpilot":
                            spec["history"] = True
                            if args.profile:
                                args.out.mkdir(parents=True, exist_ok=True)
                                spec["profile"] = "cprofile"
                                spec["profile_out"] = str(args.out / f"profile-n{n}-c{c}.prof")
                        host0 = lab.host_cpu_seconds()
                        result = run_contender(kind, spec, workdir, args.timeout)
                        result["host_cpu"] = lab.host_cpu_seconds() - host0
                        problems = [] if result.get("error") else lab.verify_patched()
                        result["problems"] = problems
                        result["ok"] = not problems and not result.get("error")
                        result["commands_per_host"] = len(lab.command_log(lab.hosts[0].name))
                        row["results"][kind] = result
                        status = "ok" if result["ok"] else f"FAILED ({len(problems)} problems)"
                        print(
                            f"  N={n:<4} C={c:<3} {kind:<10} wall {fmt(result.get('wall')):>7}s"
                            f"  cpu {fmt(result.get('cpu')):>6}s  {status}",
                            flush=True,
                        )
                    rows.append(row)
            finally:
                lab.stop()
    print(f"\nbench: {time.time() - started:.0f}s in all")
    print_tables(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out / f"run-{stamp}.json"
    out.write_text(json.dumps({"configs": rows, "note": NOISE_NOTE}, indent=1))
    print(f"bench: results in {out}")
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
