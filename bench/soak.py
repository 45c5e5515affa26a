"""Chaos soak (issue 16 item 5): one rollout over a many-host lab while faults are injected.

    uv run --group bench python bench/soak.py                    # 200 hosts, concurrency 20
    uv run --group bench python bench/soak.py --hosts 60 --concurrency 10 --quick

The fault loop, while the rollout runs: SIGKILL one of the worker processes every 20-40 s and start
another; restart the Temporal dev server once (same SQLite database, same port); restart Vault
once (OpenBao dev server: in memory, so it comes back empty with the same root token, and the
lab's key is written again); cut three hosts' sshd for a minute each (`MassLab.cut`: their
connections die as they open). Then it checks and prints:

- the rollout ends (any final phase, within --timeout);
- every host is patched exactly once (updated once, out of maintenance, services up), or reported
  failed or skipped with its state;
- no host is in maintenance without the summary saying so (in maintenance or unknown);
- no update ran twice on a host (the lab's update counter);
- no Vault token the rollout created is still alive (OpenBao's accessor list, by the `rollout`
  metadata PatchPilot puts on its child tokens).

Workers are processes of their own (`python -m bench.soak worker SPEC`), built as `patchpilot
worker` builds one (`bot.worker.build_worker`). Exit status 0 when every invariant holds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import fleet_spec  # noqa: E402
from bench.steps import SERVICES, UPDATE  # noqa: E402
from bot.embedded import ManagedProcess, free_port, start_temporal_dev_server  # noqa: E402
from lab.mass import MassLab  # noqa: E402
from lab.processes import OpenBaoProcess, start_openbao  # noqa: E402


class Faults:
    """The servers, the worker processes and the fault loop; `counts` says what was done."""

    def __init__(self, args: argparse.Namespace, workdir: Path, lab: MassLab) -> None:
        self.args, self.workdir, self.lab = args, workdir, lab
        self.counts: Counter[str] = Counter()
        self.log: list[str] = []
        self.temporal_port, self.bao_port = free_port(), free_port()
        self.db = workdir / "temporal.db"
        self.temporal: ManagedProcess | None = None
        self.bao: OpenBaoProcess | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.t0 = time.monotonic()
        self.running: list[str] = []  # hosts being patched at the last look (`drive`)
        self.cut: list[str] = []
        self.uncut: list[str] = []

    def note(self, what: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {what}"
        self.log.append(line)
        print(line, flush=True)

    def start_temporal(self) -> None:
        self.temporal = start_temporal_dev_server(
            port=self.temporal_port, db_file=self.db, log_file=self.workdir / "temporal.log"
        )

    def start_vault(self) -> None:
        self.bao = start_openbao(port=self.bao_port, log_file=self.workdir / "openbao.log")
        self.lab.seed_vault(self.bao.address, self.bao.root_token)

    def worker_spec(self) -> dict[str, Any]:
        assert self.temporal is not None and self.bao is not None
        return {
            **fleet_spec(self.lab),
            "temporal_address": self.temporal.address,
            "vault_addr": self.bao.address,
            "vault_token": self.bao.root_token,
            "task_queue": self.args.task_queue,
        }

    def start_worker(self) -> None:
        spec = self.workdir / "worker.json"
        spec.write_text(json.dumps(self.worker_spec()))
        log = (self.workdir / f"worker-{self.counts['workers started']}.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.soak", "worker", str(spec)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.workers.append(proc)
        self.counts["workers started"] += 1

    def kill_worker(self) -> None:
        alive = [w for w in self.workers if w.poll() is None]
        if not alive:
            return
        victim = random.choice(alive)
        os.killpg(victim.pid, signal.SIGKILL)  # its own session: the worker and nothing else
        victim.wait()
        self.workers.remove(victim)
        self.counts["workers SIGKILLed"] += 1
        self.note(f"SIGKILLed worker pid {victim.pid}")
        self.start_worker()

    async def loop(self, hosts: list[str]) -> None:
        """The fault schedule, relative to the approval; runs until cancelled."""
        args = self.args
        plan: list[tuple[float, str, str]] = [
            (args.temporal_restart_at, "temporal", ""),
            (args.vault_restart_at, "vault", ""),
        ]
        for index in range(3):
            # Hosts are picked when the cut starts, among those being patched then (below).
            start = args.first_cut_at + index * args.cut_every
            plan += [(start, "cut", ""), (start + args.cut_seconds, "uncut", "")]
        plan.sort()
        next_kill = random.uniform(*args.kill_every)
        start = time.monotonic()
        while True:
            now = time.monotonic() - start
            while plan and plan[0][0] <= now:
                _, kind, host = plan.pop(0)
                if kind == "cut":
                    busy = [h for h in self.running if h not in self.cut] or hosts
                    host = random.choice(busy)
                    self.cut.append(host)
                elif kind == "uncut":
                    host = self.cut[len(self.uncut)]
                    self.uncut.append(host)
                await asyncio.to_thread(self.fault, kind, host)
            if now >= next_kill:
                await asyncio.to_thread(self.kill_worker)
                next_kill = now + random.uniform(*args.kill_every)
            await asyncio.sleep(0.25)

    def fault(self, kind: str, host: str) -> None:
        if kind == "temporal" and self.temporal is not None:
            self.temporal.stop()
            self.note("Temporal dev server stopped")
            self.start_temporal()
            self.counts["Temporal restarts"] += 1
            self.note("Temporal dev server back (same database)")
        elif kind == "vault" and self.bao is not None:
            self.bao.stop()
            self.note("OpenBao stopped")
            self.start_vault()
            self.counts["Vault restarts"] += 1
            self.note("OpenBao back (empty dev server, key seeded again)")
        elif kind == "cut":
            killed = self.lab.cut(host)
            self.counts["hosts cut"] += 1
            self.note(f"cut {host} ({killed} connections killed)")
        elif kind == "uncut":
            self.lab.cut(host, False)
            self.note(f"{host} reachable again")

    def stop(self) -> None:
        for proc in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for server in (self.temporal, self.bao):
            if server is not None:
                server.stop()


async def drive(faults: Faults, args: argparse.Namespace) -> dict[str, Any]:
    """Start the rollout, approve it, run the fault loop until it ends; its summary as a dict."""
    from temporalio.client import Client, WorkflowExecutionStatus
    from temporalio.contrib.pydantic import pydantic_data_converter

    from workflows.models import WORKFLOW_NAME, ApprovalDecision, RolloutInput
    from workflows.progress import Phase, RolloutProgress, RolloutSummary

    assert faults.temporal is not None
    client = await Client.connect(faults.temporal.address, data_converter=pydantic_data_converter)
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": list(faults.lab.clusters),
            "pilotHostCount": 0,
            "approverEmails": ["alice@example.com"],
            "requesterEmail": "bob@example.com",
            "updateCommand": UPDATE,
            "serviceList": list(SERVICES),
            "maxConcurrency": args.concurrency,
            # Failures are expected under chaos; the soak is about how they are reported.
            "maxFailures": len(faults.lab.hosts),
        }
    )
    rollout_id = f"soak-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(
        WORKFLOW_NAME, rollout, id=rollout_id, task_queue=args.task_queue
    )
    while True:
        progress = await handle.query("progress", result_type=RolloutProgress)
        if progress.phase == Phase.AWAITING_APPROVAL:
            break
        await asyncio.sleep(0.2)
    await handle.execute_update(
        "approve", ApprovalDecision(approver="alice@example.com"), result_type=str
    )
    faults.note(f"rollout {rollout_id} approved: {len(faults.lab.hosts)} hosts")
    chaos = asyncio.ensure_future(faults.loop([h.name for h in faults.lab.hosts]))
    deadline = time.monotonic() + args.timeout
    status = None
    try:
        while time.monotonic() < deadline:
            try:
                # A fresh client each time: the server may just have been restarted.
                client = await Client.connect(
                    faults.temporal.address, data_converter=pydantic_data_converter
                )
                described = await client.get_workflow_handle(rollout_id).describe()
                status = described.status
                if status not in (None, WorkflowExecutionStatus.RUNNING):
                    break
                progress = await client.get_workflow_handle(rollout_id).query(
                    "progress", result_type=RolloutProgress
                )
                faults.running = [h.name for h in progress.hosts() if str(h.state) == "running"]
            except Exception as error:  # the server restarting: try again
                faults.counts["client errors while Temporal restarted"] += 1
                faults.note(f"client: {type(error).__name__}: {str(error)[:120]}")
            await asyncio.sleep(1)
    finally:
        chaos.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await chaos
    for host in faults.lab.hosts:
        faults.lab.cut(host.name, False)
    summary = None
    if status is not None and status != WorkflowExecutionStatus.RUNNING:
        handle = client.get_workflow_handle(rollout_id, result_type=RolloutSummary)
        with contextlib.suppress(Exception):
            summary = await handle.result()
        if summary is None:  # a failed rollout carries its summary in the failure's details
            with contextlib.suppress(Exception):
                summary = await handle.query("progress", result_type=RolloutProgress)
    return {
        "rollout_id": rollout_id,
        "status": status.name if status else "unknown",
        "summary": summary,
    }


def check(faults: Faults, outcome: dict[str, Any]) -> list[tuple[str, bool, str]]:
    """The invariants: (name, held, detail)."""
    lab = faults.lab
    summary = outcome["summary"]
    results: list[tuple[str, bool, str]] = []
    ended = outcome["status"] in ("COMPLETED", "FAILED", "CANCELED")
    results.append(("the rollout ends", ended, f"workflow status {outcome['status']}"))
    reported = {h.name: h for h in (_hosts(summary) if summary is not None else [])}
    states: Counter[str] = Counter()
    wrong, hidden, twice = [], [], []
    for host in lab.hosts:
        name = host.name
        updates = lab.update_count(name)
        maintenance = lab.in_maintenance(name)
        if updates > 1:
            twice.append(f"{name} ({updates} updates)")
        report = reported.get(name)
        state = str(report.state) if report else "unreported"
        states[state] += 1
        if maintenance and not (report and report.in_maintenance in (True, None)):
            hidden.append(name)
        if state == "done":
            up = all(lab.service_state(name, s) == "active" for s in SERVICES)
            if updates != 1 or maintenance or not up:
                wrong.append(f"{name}: done but updates {updates}, maintenance {maintenance}")
        elif state in ("failed", "skipped"):
            if state == "skipped" and updates:
                wrong.append(f"{name}: skipped but updated {updates}x")
        else:
            wrong.append(f"{name}: {state}")
    detail = ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
    results.append(
        (
            "every host patched once, or reported failed/skipped with its state",
            not wrong,
            detail + (f"; wrong: {wrong[:5]}" if wrong else ""),
        )
    )
    results.append(
        (
            "no host in maintenance without being reported so",
            not hidden,
            f"{sum(lab.in_maintenance(h.name) for h in lab.hosts)} in maintenance"
            + (f"; unreported: {hidden[:5]}" if hidden else ", all reported"),
        )
    )
    results.append(("no update ran twice on a host", not twice, ", ".join(twice[:5]) or "none"))
    results.append(tokens_check(faults, outcome["rollout_id"], "at the rollout's end"))
    return results


def tokens_check(faults: Faults, rollout_id: str, when: str) -> tuple[str, bool, str]:
    live = live_rollout_tokens(faults, rollout_id)
    return (
        f"every Vault token the rollout created is revoked ({when})",
        not live,
        f"{len(live)} live" + (f": {'; '.join(live[:4])}" if live else ""),
    )


def live_rollout_tokens(faults: Faults, rollout_id: str) -> list[str]:
    """Accessors of live tokens whose `rollout` metadata is this rollout (OpenBao's own list)."""
    assert faults.bao is not None
    base, token = faults.bao.address, faults.bao.root_token

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{base}/v1/{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"X-Vault-Token": token},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read() or b"{}")

    live = []
    for accessor in call("LIST", "auth/token/accessors")["data"]["keys"]:
        with contextlib.suppress(Exception):
            data = call("POST", "auth/token/lookup-accessor", {"accessor": accessor})["data"]
            if (data.get("meta") or {}).get("rollout") == rollout_id[:200]:
                made = time.strftime("%H:%M:%S", time.gmtime(int(data.get("creation_time", 0))))
                live.append(f"{accessor[:8]}… made {made} UTC, ttl {data.get('ttl')} s")
    return live


async def run_worker(spec_path: str) -> None:
    """A worker process of the soak: `patchpilot worker` as bot.worker builds it."""
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from bot.settings import Settings
    from bot.worker import build_worker

    spec = json.loads(await asyncio.to_thread(Path(spec_path).read_text))
    settings = Settings(
        temporal_address=spec["temporal_address"],
        task_queue=spec["task_queue"],
        inventory=Path(spec["inventory"]),
        known_hosts=Path(spec["known_hosts"]),
        vault_addr=spec["vault_addr"],
        vault_token=spec["vault_token"],
    )
    client = await Client.connect(spec["temporal_address"], data_converter=pydantic_data_converter)
    worker = build_worker(client, settings)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(worker.shutdown()))
    await worker.run()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        asyncio.run(run_worker(argv[1]))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="worker processes alive at once")
    parser.add_argument("--kill-every", type=float, nargs=2, default=(20.0, 40.0))
    parser.add_argument("--temporal-restart-at", type=float, default=30.0, help="s after approval")
    parser.add_argument("--vault-restart-at", type=float, default=50.0, help="s after approval")
    parser.add_argument("--first-cut-at", type=float, default=5.0, help="s after approval")
    parser.add_argument("--cut-seconds", type=float, default=60.0)
    parser.add_argument("--cut-every", type=float, default=20.0, help="s between cut starts")
    parser.add_argument("--listeners", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=1800.0, help="s for the rollout")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    args.task_queue = f"soak-{uuid.uuid4().hex[:8]}"
    random.seed(args.seed)

    workdir = Path(tempfile.mkdtemp(prefix="ppsoak-", dir="/tmp"))
    print(f"soak: {args.hosts} hosts, concurrency {args.concurrency}, work dir {workdir}")
    lab = MassLab(workdir / "lab", args.hosts, listeners=args.listeners)
    lab.start()
    faults = Faults(args, workdir, lab)
    started = time.monotonic()
    try:
        faults.start_vault()
        faults.start_temporal()
        for _ in range(args.workers):
            faults.start_worker()
        outcome = asyncio.run(drive(faults, args))
        results = check(faults, outcome)
        # The workers revoke what they hold when they stop (SIGTERM): look again after that.
        for proc in faults.workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in faults.workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=30)
        results.append(
            tokens_check(faults, outcome["rollout_id"], "after the workers' graceful shutdown")
        )
    finally:
        faults.stop()
        lab.stop()
    summary = outcome["summary"]
    print(f"\nsoak: {time.monotonic() - started:.0f} s in all; rollout {outcome['rollout_id']}")
    if summary is not None:
        print(f"outcome: {summary.phase}: {summary.message}")
    print("\nfaults injected:")
    for name in ("workers SIGKILLed", "workers started", "Temporal restarts", "Vault restarts"):
        print(f"  {name:<40} {faults.counts[name]}")
    print(f"  {'hosts cut (sshd gone for a minute each)':<40} {faults.counts['hosts cut']}")
    errors = faults.counts["client errors while Temporal restarted"]
    print(f"  {'client errors while Temporal restarted':<40} {errors}")
    print("\ninvariants:")
    for name, held, detail in results:
        print(f"  {'HELD  ' if held else 'BROKEN'} {name}: {detail}")
    if summary is not None:
        reasons = Counter(
            f"{h.name} at {h.step} (maint. {h.in_maintenance}): {(h.failure_reason or '')[:80]}"
            for h in _hosts(summary)
            if str(h.state) == "failed"
        )
        if reasons:
            print("\nfailed hosts (count):")
            for reason, count in reasons.most_common(10):
                print(f"  {count:4d}  {reason}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(held for _, held, _ in results) else 1


def _hosts(summary: Any) -> list[Any]:
    hosts = summary.hosts
    return hosts() if callable(hosts) else list(hosts)


if __name__ == "__main__":
    sys.exit(main())
