"""What each command costs the host: the hosts' CPU of every command PatchPilot and raw send.

    uv run --group bench python bench/host_cost.py [--repeat 20]

Runs one real PatchPilot rollout and one raw run on a one-host `MassLab`, takes the commands
each sent from the host's command log, then sends each command again on a connection of its
own, `--repeat` times, the host reset before each of PatchPilot's sequences (its commands
depend on the ones before: maintenance on before off, a fresh run directory for the update).
A command's cost is the hosts' CPU (`MassLab.host_cpu_seconds`: the listener, its sessions and
what they left running) over its connection, less that of a connection running `true`: the
lab's own start-up (sshd's session, mass-lab-shell, nsenter, lab-shell) is in both, so what is
left is what the command itself makes the host do. Prints the table, ms per command, and the
totals per host against raw's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncssh

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from activities.ssh import unwrap_commands  # noqa: E402
from bench.run import Servers, fleet_spec, run_contender, settled_host_cpu  # noqa: E402
from lab.mass import MassLab  # noqa: E402


async def _cost(lab: MassLab, host: str, command: str) -> float:
    """Hosts' CPU seconds of one connection running `command`."""
    before = settled_host_cpu(lab)
    async with asyncssh.connect(**lab.ssh_options(host)) as conn:
        await conn.run(command, check=False)
    return settled_host_cpu(lab) - before


def _label(command: str) -> str:
    inner = unwrap_commands(command)
    text = " ; ".join(inner) if inner else command
    text = " ".join(text.split())
    return text if len(text) <= 70 else text[:67] + "..."


async def measure(lab: MassLab, commands: list[str], repeat: int) -> list[list[float]]:
    """Per command, `repeat` costs in seconds, each less a `true` connection's (the mean of
    `repeat` of them). The kernel counts CPU in 10 ms ticks: means over many runs, not medians."""
    host = lab.hosts[0].name
    floor = statistics.mean([await _cost(lab, host, "true") for _ in range(repeat)])
    costs: list[list[float]] = [[] for _ in commands]
    for _ in range(repeat):
        lab.reset()
        await _cost(lab, host, "rm -rf /var/lib/patchpilot/runs")
        for at, command in enumerate(commands):
            costs[at].append(await _cost(lab, host, command) - floor)
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="times each command is sent")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pphc-", dir="/tmp"))
    totals: dict[str, float] = {}
    with Servers(workdir, need_patchpilot=True) as servers, MassLab(workdir / "lab", 1) as lab:
        assert servers.bao is not None and servers.temporal is not None
        lab.seed_vault(servers.bao.address, servers.bao.root_token)
        host = lab.hosts[0].name
        for kind in ("patchpilot", "raw"):
            lab.reset()
            spec: dict[str, Any] = {
                **fleet_spec(lab),
                "concurrency": 1,
                "rollout_id": f"hc-{kind}-{uuid.uuid4().hex[:6]}",
                "vault_addr": servers.bao.address,
                "vault_token": servers.bao.root_token,
                "temporal_address": servers.temporal.address,
            }
            result = run_contender(kind, spec, workdir, timeout=120)
            if "error" in result:
                print(f"{kind}: {result['error']}")
                return 1
            commands = lab.command_log(host)
            costs = asyncio.run(measure(lab, commands, args.repeat))
            means = [statistics.mean(c) * 1000 for c in costs]
            totals[kind] = sum(means)
            print(f"\n{kind}: {len(commands)} commands, host CPU ms (mean of {args.repeat})")
            for command, ms in zip(commands, means, strict=True):
                print(f"  {ms:7.1f}  {_label(command)}")
            print(f"  {totals[kind]:7.1f}  in all, besides {len(commands)} x the lab's start-up")
    print(
        f"\nPatchPilot / raw, the commands' own host CPU: "
        f"{totals['patchpilot']:.1f} / {totals['raw']:.1f} ms = "
        f"{totals['patchpilot'] / totals['raw']:.2f}"
    )
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"host_cost: {time.monotonic() - started:.0f}s")
    sys.exit(code)
