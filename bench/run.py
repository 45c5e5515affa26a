"""PatchPilot vs Ansible vs raw asyncssh on the same fleet, same steps, same concurrency (issue 6).

    uv run --group bench python bench/run.py            # N = 20, 100, 500 x C = 1, 10, 50
    uv run --group bench python bench/run.py --quick    # N = 20, C = 1, 10 (a few minutes)
    uv run --group bench python bench/run.py --hosts 100 --concurrency 10 --only patchpilot
    uv run --group bench python bench/run.py --issue16 --repeat 2   # 12x1 and 48x12, issue 16
    uv run --group bench python bench/run.py --config 48x12 --variants shipped unsandboxed

The fleet is a `lab.mass.MassLab` (real sshd, one loopback address per host, per-host state);
every contender runs the per-host commands of `bench/steps.py` (15; 13 without the reboot
check) on every host, in its own process, except raw-same-work, which sends each host the
commands PatchPilot sent it in the same row (PatchPilot's host work without its engine),
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

from bench.contenders import VARIANTS  # noqa: E402
from bench.fingerprint import engine_fingerprint  # noqa: E402
from bot.embedded import (  # noqa: E402
    DEV_SERVER_DYNAMIC_CONFIG,
    ManagedProcess,
    start_temporal_dev_server,
)
from lab.mass import MassLab  # noqa: E402
from lab.processes import OpenBaoProcess, start_openbao  # noqa: E402

# raw-same-work: raw asyncssh sending each host the very commands PatchPilot sent it in the
# same row (so it runs after PatchPilot): the same work on the hosts, without the engine.
CONTENDERS = ("raw", "raw-window", "ansible", "patchpilot", "raw-same-work")
TARGET_VS_ANSIBLE = 0.5  # at N=100, C=10
TARGET_VS_RAW = 1.3
# Issue 16 (the engine's cost), each at its configuration: PatchPilot / raw wall time, whole-machine
# CPU per host (client side + hosts) PatchPilot / raw, PatchPilot / Ansible wall time.
ISSUE16_CONFIGS = ((12, 1), (48, 12))
ISSUE16_VS_RAW = {(48, 12): 1.5, (12, 1): 2.0}
ISSUE16_CPU_VS_RAW = 3.0
ISSUE16_VS_ANSIBLE = 0.1
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
            dynamic: dict[str, object] | None = DEV_SERVER_DYNAMIC_CONFIG if self.eager else None
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


def contender_env(workdir: Path) -> dict[str, str]:
    """A contender's environment: this one, with Python's bytecode written and read under
    `workdir`, as in the shipped image (the Dockerfile compiles every module: UV_COMPILE_BYTECODE).
    Where PYTHONDONTWRITEBYTECODE is set (this machine sets it), Temporal's workflow sandbox,
    which imports the workflow's module afresh for every workflow it starts, would otherwise
    compile the module's source each time: ~2-3 ms of worker CPU a host that no deployment pays.
    Outside the tree (PYTHONPYCACHEPREFIX), which stays clean."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(workdir / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_contender(
    kind: str, spec: dict[str, Any], workdir: Path, timeout: float, root: Path = ROOT
) -> dict[str, Any]:
    """Run one contender in a process of its own; its last BENCH-RESULT line is the result.
    `root` is the source tree it runs from (another checkout for a before/after comparison)."""
    spec = {**spec, "timeout": timeout}
    module_kind = "raw" if kind.startswith("raw") else kind.partition(":")[0].partition("@")[0]
    if kind == "raw-window":
        spec["mode"] = "window"
    spec_path = workdir / f"spec-{kind.replace(':', '-')}-{uuid.uuid4().hex[:6]}.json"
    spec_path.write_text(json.dumps(spec))
    log_path = spec_path.with_suffix(".log")
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.contenders", module_kind, str(spec_path)],
            cwd=root,
            env=contender_env(workdir),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        sampler = None
        if spec.get("py_spy_out"):
            # Sampling profile of the whole contender process (idle threads left out), collapsed
            # stacks: `--py-spy` below; grep/sum them by frame.
            sampler = subprocess.Popen(
                [
                    *(str(Path(sys.executable).parent / "py-spy"), "record"),
                    *("--pid", str(proc.pid), "--format", "raw", "--rate", "200"),
                    *("--nonblocking", "--output", spec["py_spy_out"]),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        try:
            out, _ = proc.communicate(timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return {"error": f"timed out after {timeout:.0f}s", "log": str(log_path)}
    if sampler is not None:
        sampler.wait(timeout=60)  # py-spy writes its file when the process it samples exits
    for line in reversed(out.splitlines()):
        if line.startswith("BENCH-RESULT "):
            result = json.loads(line.removeprefix("BENCH-RESULT "))
            result["log"] = str(log_path)
            return result
    tail = log_path.read_text()[-2000:]
    return {"error": f"exit {proc.returncode}: {tail}", "log": str(log_path)}


def settled_host_cpu(lab: MassLab, timeout: float = 10.0) -> float:
    """The hosts' CPU once every session of the last contender has ended and been reaped.

    A session's CPU reaches its listener's only when the listener reaps it, and a contender
    that keeps its connections open (PatchPilot's pool) ends them only as its process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_children(pid) for pid in lab.listener_pids()):
            break
        time.sleep(0.05)
    return lab.host_cpu_seconds()


def _children(pid: int) -> list[str]:
    found: list[str] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            found += Path(f"/proc/{pid}/task/{task}/children").read_text().split()
    except OSError:
        pass
    return found


def parse_config(text: str) -> tuple[int, int]:
    """'48x12' -> (48, 12): hosts x concurrency."""
    hosts, _, conc = text.lower().partition("x")
    try:
        return int(hosts), int(conc)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected HOSTSxCONCURRENCY, e.g. 48x12"
        ) from None


def configurations(args: argparse.Namespace) -> list[tuple[int, int]]:
    if args.config:
        return list(args.config)
    if args.issue16:
        return list(ISSUE16_CONFIGS)
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

    print_issue16(rows)

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


def _ok(row: dict[str, Any], kind: str) -> dict[str, Any] | None:
    result = row["results"].get(kind) or {}
    return result if result.get("ok") and not result.get("error") else None


def whole_cpu_per_host(result: dict[str, Any], hosts: int) -> float:
    """Whole-machine CPU per host: the contender's side (for PatchPilot worker + Temporal +
    OpenBao) plus the hosts' side (every sshd session), seconds."""
    return (float(result["cpu"]) + float(result.get("host_cpu") or 0.0)) / hosts


def print_issue16(rows: list[dict[str, Any]]) -> None:
    """Issue 16's ratios for every PatchPilot run (and variant) against the raw and Ansible runs
    of the same row (same lab, same invocation)."""
    kinds = sorted({k for row in rows for k in row["results"] if k.startswith("patchpilot")})
    if not kinds:
        return
    print(
        "\nIssue 16, engine cost (same lab, same invocation). Targets: PP/raw wall <= 1.5 at"
        f" 48x12 and <= 2.0 at 12x1; whole-machine CPU per host PP/raw <= {ISSUE16_CPU_VS_RAW:g};"
        f" PP/Ansible wall <= {ISSUE16_VS_ANSIBLE:g}. raw = asyncssh in waves of C (raw-win: a"
        " sliding window; same: raw sending each host PatchPilot's own commands, the engine's"
        " cost alone); CPU = client side + hosts' sshd sessions"
    )
    header = (
        f"{'N':>4} {'C':>3} {'contender':<22} | {'wall':>6} {'raw':>6} {'PP/raw':>6} {'tgt':>4}"
        f" {'/raw-win':>8} {'/same':>6} | {'ansible':>7} {'PP/ans':>6} {'tgt':>4} |"
        f" {'CPU/host':>8} {'raw':>6} {'ratio':>5} {'tgt':>4} {'/same':>6} |"
        f" {'worker':>6} {'tmprl':>6}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        n, c = row["n"], row["c"]
        raw, window, ans = _ok(row, "raw"), _ok(row, "raw-window"), _ok(row, "ansible")
        same = _ok(row, "raw-same-work")
        for kind in kinds:
            pp = _ok(row, kind)
            if pp is None:
                continue
            wall = float(pp["wall"])
            vs_raw = wall / raw["wall"] if raw else None
            vs_window = wall / window["wall"] if window else None
            vs_ans = wall / ans["wall"] if ans else None
            cpu = whole_cpu_per_host(pp, n)
            raw_cpu = whole_cpu_per_host(raw, n) if raw else None
            cpu_ratio = cpu / raw_cpu if raw_cpu else None
            vs_same = wall / same["wall"] if same else None
            cpu_vs_same = cpu / whole_cpu_per_host(same, n) if same else None
            target = ISSUE16_VS_RAW.get((n, c))
            ans_wall = fmt(ans["wall"] if ans else None, 1)
            print(
                f"{n:>4} {c:>3} {kind:<22} | {wall:>6.2f} {fmt(raw['wall'] if raw else None):>6}"
                f" {fmt(vs_raw):>6} {check(vs_raw, target) if target else '':>4}"
                f" {fmt(vs_window):>8} {fmt(vs_same):>6} | {ans_wall:>7}"
                f" {fmt(vs_ans):>6} {check(vs_ans, ISSUE16_VS_ANSIBLE):>4} | {cpu:>8.3f}"
                f" {fmt(raw_cpu, 3):>6} {fmt(cpu_ratio):>5}"
                f" {check(cpu_ratio, ISSUE16_CPU_VS_RAW):>4} {fmt(cpu_vs_same):>6} |"
                f" {fmt(pp.get('cpu_worker')):>6} {fmt(pp.get('cpu_temporal')):>6}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N=20, C=1,10")
    parser.add_argument("--hosts", type=int, nargs="+", help="fleet sizes (default 20 100 500)")
    parser.add_argument("--concurrency", type=int, nargs="+", help="C values (default 1 10 50)")
    parser.add_argument("--only", nargs="+", choices=CONTENDERS, help="contenders to run")
    parser.add_argument(
        "--config",
        type=parse_config,
        nargs="+",
        help="HOSTSxCONCURRENCY pairs, e.g. 12x1 48x12 (instead of --hosts x --concurrency)",
    )
    parser.add_argument(
        "--issue16", action="store_true", help="issue 16's configurations: 12x1 and 48x12"
    )
    parser.add_argument("--repeat", type=int, default=1, help="run every configuration N times")
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=["shipped"],
        help="PatchPilot variants, each a run of its own in every row (A/B in one invocation):"
        " shipped, noeager, sandboxed, passthrough, unsandboxed",
    )
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
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="another checkout (e.g. `git archive` of the commit before a change): its PatchPilot"
        " runs as 'patchpilot@baseline' in every row, for a before/after in one invocation",
    )
    parser.add_argument(
        "--py-spy",
        action="store_true",
        help="sample the PatchPilot contender with py-spy (collapsed stacks go to --out)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where JSON goes")
    args = parser.parse_args(argv)

    contenders = args.only or [
        kind for kind in CONTENDERS if not (args.quick and kind in ("raw-window", "raw-same-work"))
    ]
    if "raw-same-work" in contenders:
        if "patchpilot" not in contenders or "shipped" not in args.variants:
            parser.error("raw-same-work replays the shipped PatchPilot's commands: add patchpilot")
        contenders.remove("raw-same-work")
        contenders.append("raw-same-work")
    if "patchpilot" in contenders:
        at = contenders.index("patchpilot")
        contenders[at : at + 1] = [
            "patchpilot" if v == "shipped" else f"patchpilot:{v}" for v in args.variants
        ]
        if args.baseline_tree:
            contenders.insert(at, "patchpilot@baseline")
    configs = configurations(args)
    workdir = Path(tempfile.mkdtemp(prefix="ppb-", dir="/tmp"))
    print(f"bench: {len(configs)} configurations {configs}, contenders {contenders}")
    print(f"bench: work directory {workdir}; engine {engine_fingerprint()}; {NOISE_NOTE}")
    rows: list[dict[str, Any]] = []
    started = time.time()
    need_patchpilot = any(kind.startswith("patchpilot") for kind in contenders)
    with Servers(workdir, need_patchpilot, eager=args.eager_activities) as servers:
        for n in sorted({n for n, _ in configs}):
            lab = MassLab(workdir / f"lab-{n}", n, listeners=args.listeners)
            lab.start()
            try:
                if servers.bao is not None:
                    lab.seed_vault(servers.bao.address, servers.bao.root_token)
                runs = [cfg for cfg in configs if cfg[0] == n for _ in range(args.repeat)]
                for _, c in runs:
                    row: dict[str, Any] = {"n": n, "c": c, "results": {}}
                    sent: dict[str, list[str]] | None = None  # PatchPilot's, host by host
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
                        if kind.startswith("patchpilot"):
                            spec["history"] = True
                            spec["variant"] = kind.partition(":")[2] or "shipped"
                            if args.py_spy:
                                args.out.mkdir(parents=True, exist_ok=True)
                                spec["py_spy_out"] = str(
                                    args.out / f"pyspy-n{n}-c{c}-{spec['variant']}.txt"
                                )
                            if args.profile:
                                args.out.mkdir(parents=True, exist_ok=True)
                                spec["profile"] = "cprofile"
                                spec["profile_out"] = str(
                                    args.out / f"profile-n{n}-c{c}-{spec['variant']}.prof"
                                )
                        if kind == "raw-same-work":
                            spec["host_commands"] = sent
                        host0 = settled_host_cpu(lab)
                        tree = args.baseline_tree if kind.endswith("@baseline") else ROOT
                        if kind == "raw-same-work" and sent is None:
                            result: dict[str, Any] = {
                                "error": "no PatchPilot run in this row to replay"
                            }
                        else:
                            result = run_contender(kind, spec, workdir, args.timeout, tree)
                        result["host_cpu"] = settled_host_cpu(lab) - host0
                        problems = [] if result.get("error") else lab.verify_patched()
                        result["problems"] = problems
                        result["ok"] = not problems and not result.get("error")
                        result["commands_per_host"] = len(lab.command_log(lab.hosts[0].name))
                        row["results"][kind] = result
                        if kind == "patchpilot" and result["ok"]:
                            sent = {h.name: lab.command_log(h.name) for h in lab.hosts}
                        status = "ok" if result["ok"] else f"FAILED ({len(problems)} problems)"
                        print(
                            f"  N={n:<4} C={c:<3} {kind:<22} wall {fmt(result.get('wall')):>7}s"
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
