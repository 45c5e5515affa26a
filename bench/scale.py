"""Scale test (issue 6 items 3 and 4): one PatchPilot rollout over a many-host MassLab.

    uv run --group bench python bench/scale.py                        # 10,000 hosts, C=100
    uv run --group bench python bench/scale.py --hosts 1000           # per-host event cost
    uv run --group bench python bench/scale.py --hosts 500 --concurrency 500   # memory (item 4)

Reports wall time (approval to result), events per workflow run (every run of the rollout,
following continue-as-new, vs the 10,240 warning threshold; a sample of host workflows), the worker
process's peak RSS (VmHWM; target < 1 GiB at 500 concurrent hosts), Vault reads and SSH handshakes
per host, and checks the fleet afterwards (each host updated exactly once). The rollout runs in a
process of its own (`bench.contenders patchpilot`), as in bench/run.py.

Hosts are grouped into clusters of --cluster-size (default 1000): one GetClusterHosts result for
10,000 hosts would be ~5 MB, over Temporal's 2 MB payload limit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from bench.history import LIMIT_EVENTS, WARN_EVENTS  # noqa: E402
from bench.run import fleet_spec, run_contender  # noqa: E402
from bot.embedded import DEV_SERVER_DYNAMIC_CONFIG, start_temporal_dev_server  # noqa: E402
from lab.mass import MassLab  # noqa: E402
from lab.processes import start_openbao  # noqa: E402

RSS_TARGET_MIB = 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--cluster-size", type=int, default=1000)
    parser.add_argument("--listeners", type=int, default=8, help="sshd processes in the lab")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds for the rollout")
    parser.add_argument(
        "--known-hosts-per-host",
        action="store_true",
        help="one known_hosts line per host instead of a wildcard per port",
    )
    parser.add_argument(
        "--eager-activities",
        action="store_true",
        help="Temporal dev server with system.enableActivityEagerExecution=true, as PatchPilot's"
        " own embedded server runs (bot/embedded.py DEV_SERVER_DYNAMIC_CONFIG); off by default,"
        " as on a Temporal server nobody configured",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="ppscale-", dir="/tmp"))
    print(f"scale: {args.hosts} hosts, maxConcurrency {args.concurrency}, work dir {workdir}")
    t0 = time.perf_counter()
    lab = MassLab(
        workdir / "lab",
        args.hosts,
        cluster_size=args.cluster_size,
        listeners=args.listeners,
        known_hosts_per_host=args.known_hosts_per_host,
    )
    bao = start_openbao(log_file=workdir / "openbao.log")
    temporal = start_temporal_dev_server(
        log_file=workdir / "temporal.log",
        dynamic_config=DEV_SERVER_DYNAMIC_CONFIG if args.eager_activities else None,
    )
    try:
        lab.start()
        lab.seed_vault(bao.address, bao.root_token)
        print(f"scale: lab up in {time.perf_counter() - t0:.1f}s ({len(lab.clusters)} clusters)")
        spec = {
            **fleet_spec(lab),
            "concurrency": args.concurrency,
            "rollout_id": f"scale-{args.hosts}-{uuid.uuid4().hex[:6]}",
            "temporal_address": temporal.address,
            "temporal_pid": temporal.pid,
            "vault_addr": bao.address,
            "vault_token": bao.root_token,
            "vault_pid": bao.pid,
            "history": True,
            # The default of 1000 concurrent activities would do; say it for the record.
            "worker_options": {},
        }
        host0 = lab.host_cpu_seconds()
        result = run_contender("patchpilot", spec, workdir, args.timeout)
        result["host_cpu"] = lab.host_cpu_seconds() - host0
        problems = [] if result.get("error") else lab.verify_patched()
        patched_twice = sum(1 for h in lab.hosts if lab.update_count(h.name) > 1)
        result["problems"] = len(problems)
        result["problem_sample"] = problems[:10]
        result["patched_twice"] = patched_twice
        result["eager_activities"] = args.eager_activities
    finally:
        temporal.stop()
        bao.stop()
        lab.stop()

    print()
    if result.get("error"):
        print(f"scale: the rollout did not finish: {str(result['error'])[:1500]}")
    else:
        events = result.get("events") or {}
        rss = result.get("rss_peak_mib", 0)
        print(f"engine                     {result.get('engine')}")
        print(f"hosts                      {args.hosts} in {len(lab.clusters)} clusters")
        print(f"maxConcurrency             {args.concurrency}")
        print(f"eager activities           {'on' if args.eager_activities else 'off'}")
        print(f"outcome                    {result.get('phase')}, patched {result.get('patched')}")
        print(
            f"wall (approval -> result)  {result['wall']:.1f} s"
            f"  ({result['wall'] / args.hosts * 1000:.1f} ms per host)"
        )
        print(
            f"CPU                        worker {result['cpu_worker']:.1f} s, Temporal "
            f"{result['cpu_temporal']:.1f} s, OpenBao {result['cpu_vault']:.1f} s, "
            f"hosts {result['host_cpu']:.1f} s"
        )
        print(
            f"worker peak RSS            {rss:.0f} MiB"
            f"  (target < {RSS_TARGET_MIB} MiB: {'ok' if rss < RSS_TARGET_MIB else 'MISS'})"
        )
        print(
            f"progress query             {result.get('progress_queries')} answered during the run,"
            f" slowest {result.get('progress_query_max_s') or 0:.2f} s,"
            f" {len(result.get('progress_query_errors') or [])} failed"
        )
        print(f"vault reads per host       {result['vault_reads_per_host']:.2f}  (target <= 1)")
        print(f"SSH handshakes per host    {result['handshakes_per_host']:.2f}  (target <= 2)")
        if events:
            worst = events["max_events_per_run"]
            print(
                f"rollout workflow runs      {events['runs']}  events per run "
                f"{events['events_per_run'][:10]}{' ...' if events['runs'] > 10 else ''}"
            )
            print(
                f"max events in one run      {worst}  (warning threshold {WARN_EVENTS}: "
                f"{'MISS' if worst > WARN_EVENTS else 'ok'}; hard limit {LIMIT_EVENTS})"
            )
            print(f"rollout events per host    {events['parent_total_events'] / args.hosts:.1f}")
            print(
                f"host workflow events       mean {events['child_events_mean']:.1f}, max "
                f"{events['child_events_max']} (sample of {min(20, events['children'])})"
            )
            flow = events.get("parent_flow") or {}
            if flow:
                print(
                    f"hosts in flight            mean {flow['in_flight_mean']:.1f} of "
                    f"{args.concurrency}; a freed slot refilled in {flow['refill_mean']:.2f} s "
                    f"(p90 {flow['refill_p90']:.2f}); rollout's tasks "
                    f"{flow['workflow_tasks']:.0f}, queued "
                    f"{flow['workflow_task_queue_mean']:.3f} s, run "
                    f"{flow['workflow_task_run_mean']:.3f} s (means)"
                )
                child = events.get("child_seconds_mean") or {}
                print(
                    "one host's time (mean s)   "
                    + ", ".join(f"{k} {v:.2f}" for k, v in sorted(child.items()))
                )
            top = sorted(events["parent_by_type"].items(), key=lambda kv: -kv[1])[:6]
            print("rollout event types        " + ", ".join(f"{k.lower()} {v}" for k, v in top))
        print(
            f"fleet check                {result['problems']} problems, "
            f"{result['patched_twice']} hosts patched twice"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out / f"scale-{args.hosts}-c{args.concurrency}-{stamp}.json"
    out.write_text(
        json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "result": result}, indent=1)
    )
    print(f"scale: results in {out}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if not result.get("error") else 1


if __name__ == "__main__":
    sys.exit(main())
