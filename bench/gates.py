"""What a health gate check adds to each wave (issue 18), against the same rollout without gates,
in one invocation on the same parts: a Temporal dev server, OpenBao, an sshd lab cluster, and a
real Prometheus (Debian's package) scraping a lab exporter every second with one alerting rule.

Each rollout patches one cluster of `--hosts` hosts: 1 pilot, then waves of 1, so it has
`hosts - 1` stage ends followed by another stage, each gated. The gated rollout has soakTime 0,
one alert matcher and one canary query, so the difference is the checks themselves: the alert
gate (one CheckAlertGateActivity) and the query gate (one QueryGateActivity, 4 instant queries).
Runs alternate (plain, gated, plain, gated, …) so drift hits both alike.

    python -m bench.gates [--hosts 4] [--repeats 3]

Prints each run's wall time and the mean extra seconds per gated wave; `--json` for a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from bot.embedded import free_port, start_temporal_dev_server
from bot.settings import Settings
from bot.worker import WorkerParts, build_worker
from lab import Lab
from lab.processes import start_openbao
from lab.prometheus import HostMetrics, start_prometheus
from workflows.models import (
    WORKFLOW_NAME,
    ApprovalDecision,
    Phase,
    RolloutInput,
    RolloutProgress,
    RolloutSummary,
)
from workflows.names import GATE_ACTIVITIES

CLUSTER = "bench-gates"
PREFIX = "patch-deploy"
GATES = {
    "soakTime": 0,
    "alertMatchers": ['alertname="HighErrorRate", cluster="{cluster}"'],
    "gateQueries": ['avg(error_rate{host=~"{hosts}"}) <= baseline * 1.2 + 0.01 min 1'],
}


def rollout(gated: bool) -> RolloutInput:
    return RolloutInput.model_validate(
        {
            "targetClusters": [CLUSTER],
            "pilotHostCount": 1,
            "waves": [1],
            "approverEmails": ["alice@example.com"],
            "requesterEmail": "bob@example.com",
            "updateCommand": "apt-get update && apt-get -y upgrade",
            **(GATES if gated else {}),
        }
    )


async def gate_activity_seconds(client: Client, workflow_id: str) -> dict[str, float]:
    """Seconds each gate activity type took in the rollout's history, scheduled to completed."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled: dict[int, tuple[str, float]] = {}
    spent: dict[str, float] = {}
    for event in history.events:
        at = event.event_time.ToNanoseconds() / 1e9
        if event.HasField("activity_task_scheduled_event_attributes"):
            kind = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled[event.event_id] = (kind, at)
        elif event.HasField("activity_task_completed_event_attributes"):
            kind, since = scheduled[
                event.activity_task_completed_event_attributes.scheduled_event_id
            ]
            if kind in GATE_ACTIVITIES:
                spent[kind] = spent.get(kind, 0.0) + at - since
    return spent


async def run_one(
    client: Client, settings: Settings, gated: bool, spent: dict[str, list[float]] | None = None
) -> float:
    """Seconds from the approval to the rollout's end (its hosts and gates only); with `spent`,
    each gate activity type's seconds in it are appended there."""
    handle = await client.start_workflow(
        WORKFLOW_NAME,
        rollout(gated),
        id=f"bench-gates-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
        result_type=RolloutSummary,
    )
    for _ in range(600):  # it resolves its hosts first; at most a minute
        progress = await handle.query("progress", result_type=RolloutProgress)
        if progress.phase == Phase.AWAITING_APPROVAL:
            break
        await asyncio.sleep(0.1)
    started = time.monotonic()
    await handle.execute_update("approve", ApprovalDecision(approver="alice@example.com"))
    summary = await handle.result()
    elapsed = time.monotonic() - started
    if summary.phase != Phase.SUCCEEDED:
        raise SystemExit(f"bench rollout ended {summary.phase.value}: {summary.message}")
    if spent is not None:
        for kind, seconds in (await gate_activity_seconds(client, handle.id)).items():
            spent.setdefault(kind, []).append(seconds)
    return elapsed


async def bench(hosts: int, repeats: int, root: Path) -> dict[str, Any]:
    names = [f"g{index}" for index in range(1, hosts + 1)]
    metrics = HostMetrics()
    for name in names:
        metrics.set(name, "error_rate", 0.01)
    rules = [{"alert": "HighErrorRate", "expr": "error_rate > 0.3", "for": "0s"}]
    with (
        start_temporal_dev_server(log_file=root / "temporal.log") as temporal,
        start_openbao(log_file=root / "openbao.log") as openbao,
        Lab(root / "lab", {CLUSTER: names}, port=free_port(), address_prefix="127.0.6.") as lab,
        start_prometheus(root / "prometheus", metrics, dict.fromkeys(names, CLUSTER), rules) as p,
    ):
        lab.seed_vault(openbao.address, openbao.root_token, prefix=PREFIX, per_host=True)
        lab.write_inventory()
        settings = Settings(
            temporal_address=temporal.address,
            task_queue=f"bench-gates-{uuid.uuid4().hex[:6]}",
            inventory=lab.inventory_path,
            known_hosts=lab.known_hosts_path,
            vault_addr=openbao.address,
            vault_token=openbao.root_token,
            prometheus_url=p.address,
        )
        client = await Client.connect(temporal.address, data_converter=pydantic_data_converter)
        async with build_worker(client, settings, WorkerParts(settings)):
            await run_one(client, settings, gated=True)  # warm up: connections, caches, scrape
            plain: list[float] = []
            gated: list[float] = []
            spent: dict[str, list[float]] = {}
            for _ in range(repeats):
                plain.append(await run_one(client, settings, gated=False))
                gated.append(await run_one(client, settings, gated=True, spent=spent))
        metrics.stop()
    gated_waves = hosts - 1  # after the pilot and each wave but the last
    extra = statistics.mean(gated) - statistics.mean(plain)
    return {
        "hosts": hosts,
        "repeats": repeats,
        "gated_waves_per_rollout": gated_waves,
        "plain_seconds": [round(s, 3) for s in plain],
        "gated_seconds": [round(s, 3) for s in gated],
        "extra_seconds_per_gated_wave": round(extra / gated_waves, 3),
        # Mean seconds per rollout in each gate activity (the alert gate also runs once before
        # the first host), scheduled to completed.
        "gate_activity_seconds": {k: round(statistics.mean(v), 3) for k, v in spent.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=4, help="hosts in the cluster (>= 2)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gates-") as directory:
        result = asyncio.run(bench(max(args.hosts, 2), args.repeats, Path(directory)))
    print(f"plain rollout (no gates):   {result['plain_seconds']} s")
    print(f"gated rollout (soak 0, 1 alert matcher, 1 query): {result['gated_seconds']} s")
    print(
        f"extra wall time per gated wave: {result['extra_seconds_per_gated_wave']} s "
        f"({result['gated_waves_per_rollout']} gated waves per rollout of {result['hosts']} hosts)"
    )
    for kind, seconds in result["gate_activity_seconds"].items():
        print(f"  {kind}: {seconds} s per rollout")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
