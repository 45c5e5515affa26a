"""The three contenders, each run in a process of its own by `bench/run.py`:

    python -m bench.contenders raw|ansible|patchpilot SPEC.json

SPEC.json describes the fleet (inventory, known_hosts, client key, hosts) and the run (concurrency,
rollout id, servers); the contender prints one JSON line with what it measured. A process of its
own per run keeps CPU and memory figures clean (``RUSAGE_SELF`` / ``RUSAGE_CHILDREN`` of just
that run) and keeps one contender's leftovers (threads, connections) away from the next.

- raw: asyncssh, one persistent connection per host, the same commands, the same concurrency.
  ``mode`` "waves" runs hosts in batches of C (the semantics of Ansible's ``serial`` and of
  PatchPilot's waves); "window" keeps C hosts in flight (a sliding window, the best possible).
- ansible: ``ansible-playbook`` with a tuned config (pipelining, ControlPersist, forks=serial=C).
  This process becomes a child subreaper so that the ControlPersist masters, which daemonise, stay
  its descendants: they are ended after the play and their CPU is counted.
- patchpilot: a real rollout on the Temporal dev server with an in-process worker (as
  `patchpilot worker` runs it); the clock runs from the approval to the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from bench.steps import SERVICES, UPDATE, host_commands, write_ansible_project  # noqa: E402
from lab.procfs import proc_cpu_seconds  # noqa: E402

PR_SET_CHILD_SUBREAPER = 36


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    return _cpu(resource.getrusage(resource.RUSAGE_SELF))


def children_cpu() -> float:
    return _cpu(resource.getrusage(resource.RUSAGE_CHILDREN))


def peak_rss_mib() -> float:
    """VmHWM of this process (peak resident set), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# ---------------------------------------------------------------------- raw asyncssh


async def _raw(spec: dict[str, Any]) -> dict[str, Any]:
    import asyncssh

    key = asyncssh.import_private_key(await asyncio.to_thread(Path(spec["client_key"]).read_text))
    commands = host_commands(spec["rollout_id"], reboot_check=spec.get("reboot_check", True))
    # raw-same-work: each host gets the very commands PatchPilot sent it (bench/run.py), whose
    # outcome lab.verify_patched() judges afterwards, as for every contender.
    by_host: dict[str, list[str]] | None = spec.get("host_commands")
    concurrency = spec["concurrency"]
    hosts = spec["hosts"]
    handshakes = 0

    async def one(host: dict[str, Any]) -> None:
        nonlocal handshakes
        handshakes += 1
        async with asyncssh.connect(
            host["address"],
            port=host["port"],
            username=spec["user"],
            client_keys=[key],
            known_hosts=spec["known_hosts"],
            agent_path=None,
            config=None,
            preferred_auth="publickey",
        ) as conn:
            sent = commands if by_host is None else [(c, None) for c in by_host[host["name"]]]
            for command, expect_ok in sent:
                result = await conn.run(command, check=False)
                if expect_ok is not None and (result.exit_status == 0) != expect_ok:
                    raise RuntimeError(
                        f"{host['name']}: {command!r} exited {result.exit_status}"
                        f" signal {result.exit_signal} stderr {result.stderr!r:.300}"
                    )

    cpu0, t0 = self_cpu(), time.perf_counter()
    if spec.get("mode", "waves") == "waves":
        for start in range(0, len(hosts), concurrency):
            await asyncio.gather(*(one(h) for h in hosts[start : start + concurrency]))
    else:
        semaphore = asyncio.Semaphore(concurrency)

        async def bounded(host: dict[str, Any]) -> None:
            async with semaphore:
                await one(host)

        await asyncio.gather(*(bounded(h) for h in hosts))
    wall = time.perf_counter() - t0
    return {
        "wall": wall,
        "cpu": self_cpu() - cpu0,
        "handshakes": handshakes,
        "rss_peak_mib": peak_rss_mib(),
    }


# ---------------------------------------------------------------------- ansible


def _ansible(spec: dict[str, Any]) -> dict[str, Any]:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    work = Path(tempfile.mkdtemp(prefix="ppb-ans-", dir="/tmp"))
    cfg, play = write_ansible_project(
        work,
        rollout_id=spec["rollout_id"],
        concurrency=spec["concurrency"],
        private_key=Path(spec["client_key"]),
        known_hosts=Path(spec["known_hosts"]),
        reboot_check=spec.get("reboot_check", True),
    )
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(cfg),
        "ANSIBLE_HOME": str(work / "home"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_DEPRECATION_WARNINGS": "0",
    }
    playbook_bin = Path(sys.executable).parent / "ansible-playbook"
    argv = [str(playbook_bin), "-i", spec["inventory"], str(play)]
    log = work / "ansible.log"
    cpu0, t0 = children_cpu(), time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=spec["timeout"],
            check=False,
        )
    wall = time.perf_counter() - t0
    # The ControlPersist masters were re-parented to this process: end them (by pid, they are
    # our own descendants) and reap them, so their CPU is in RUSAGE_CHILDREN.
    masters = _own_children()
    for pid in masters:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.02)
    result: dict[str, Any] = {
        "wall": wall,
        "cpu": children_cpu() - cpu0,
        "returncode": proc.returncode,
        "control_masters": len(masters),
    }
    if proc.returncode != 0:
        result["error"] = log.read_text()[-3000:]
    return result


def _own_children() -> list[int]:
    pid = os.getpid()
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


# ---------------------------------------------------------------------- patchpilot


async def _patchpilot(spec: dict[str, Any]) -> dict[str, Any]:
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter

    from bot.settings import Settings
    from bot.worker import WorkerParts, build_worker
    from workflows.models import (
        WORKFLOW_NAME,
        ApprovalDecision,
        Phase,
        RolloutInput,
        RolloutProgress,
        RolloutSummary,
    )

    client = await Client.connect(spec["temporal_address"], data_converter=pydantic_data_converter)
    settings = Settings(
        temporal_address=spec["temporal_address"],
        task_queue=f"bench-{uuid.uuid4().hex[:8]}",
        inventory=Path(spec["inventory"]),
        known_hosts=Path(spec["known_hosts"]),
        vault_addr=spec["vault_addr"],
        vault_token=spec["vault_token"],
    )
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": spec["clusters"],
            "pilotHostCount": 0,
            "approverEmails": ["alice@example.com"],
            "requesterEmail": "bob@example.com",
            "updateCommand": UPDATE,
            "serviceList": list(SERVICES),
            "maxConcurrency": spec["concurrency"],
        }
    )
    from bench.fingerprint import engine_fingerprint

    engine = engine_fingerprint()
    parts = WorkerParts(settings)
    timing = _instrument_worker(parts)
    worker_options = dict(spec.get("worker_options") or {})
    worker_options.update(variant_options(spec.get("variant")))
    worker = build_worker(client, settings, parts, **worker_options)
    profiler = None
    async with worker:
        handle = await client.start_workflow(
            WORKFLOW_NAME,
            rollout,
            id=spec["rollout_id"],
            task_queue=settings.task_queue,
            result_type=RolloutSummary,
        )
        # Resolving clusters happens before approval; wait for it so the clock covers patching.
        deadline = time.monotonic() + 120
        while True:
            progress = await handle.query("progress", result_type=RolloutProgress)
            if progress.phase == Phase.AWAITING_APPROVAL:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"rollout still {progress.phase} after 120 s")
            await asyncio.sleep(0.05)
        if spec.get("profile") == "cprofile":
            import cProfile

            # CPU time, not wall time: on a busy 2-core machine a send() that wakes sshd would
            # otherwise be charged with the time this process waited for a core.
            profiler = cProfile.Profile(time.process_time)
        temporal_pid, vault_pid = spec.get("temporal_pid"), spec.get("vault_pid")
        temporal0 = proc_cpu_seconds(temporal_pid) if temporal_pid else 0.0
        vault0 = proc_cpu_seconds(vault_pid) if vault_pid else 0.0
        reads0, shakes0 = parts.vault.reads, parts.ssh.handshakes
        cpu0, t0 = self_cpu(), time.perf_counter()
        if profiler:
            profiler.enable()
        await handle.execute_update(
            "approve", ApprovalDecision(approver="alice@example.com"), result_type=str
        )
        failure = None
        summary = None
        queries: list[float] = []
        query_errors: list[str] = []

        async def watch_progress() -> None:
            # Issue 6: the progress query must keep answering during a big rollout.
            while True:
                await asyncio.sleep(spec.get("query_every", 2.0))
                start = time.perf_counter()
                try:
                    await handle.query("progress", result_type=RolloutProgress)
                    queries.append(time.perf_counter() - start)
                except Exception as error:
                    query_errors.append(f"{type(error).__name__}: {str(error)[:200]}")

        watcher = asyncio.ensure_future(watch_progress())
        try:
            summary = await asyncio.wait_for(handle.result(), timeout=spec["timeout"])
        except Exception as error:  # a failed or stuck rollout is a result too: report it
            failure = f"{type(error).__name__}: {error}; cause: {getattr(error, 'cause', None)}"
            with contextlib.suppress(Exception):
                await handle.terminate("benchmark: timed out or failed")
        wall = time.perf_counter() - t0
        watcher.cancel()
        if profiler:
            profiler.disable()
        cpu = self_cpu() - cpu0
        temporal_cpu = (proc_cpu_seconds(temporal_pid) - temporal0) if temporal_pid else 0.0
        vault_cpu = (proc_cpu_seconds(vault_pid) - vault0) if vault_pid else 0.0
    n = len(spec["hosts"])
    result: dict[str, Any] = {
        "wall": wall,
        "cpu": cpu + temporal_cpu + vault_cpu,
        "cpu_worker": cpu,
        "cpu_temporal": temporal_cpu,
        "cpu_vault": vault_cpu,
        "phase": str(summary.phase) if summary else "failed",
        "patched": summary.patched if summary else None,
        "vault_reads": parts.vault.reads - reads0,
        "handshakes": parts.ssh.handshakes - shakes0,
        "vault_reads_per_host": (parts.vault.reads - reads0) / n,
        "handshakes_per_host": (parts.ssh.handshakes - shakes0) / n,
        "rss_peak_mib": peak_rss_mib(),
        "workflow_id": handle.id,
        "engine": engine,
        "progress_queries": len(queries),
        "progress_query_max_s": max(queries) if queries else None,
        "progress_query_errors": query_errors[:5],
        # Summed over all activities (busy time, not wall time), per host.
        "busy_per_host": {k: v / n for k, v in timing.items()},
    }
    if failure:
        result["error"] = failure[:3000]
    if profiler and spec.get("profile_out"):
        profiler.dump_stats(spec["profile_out"])
    if spec.get("history"):
        from bench.history import rollout_events

        result["events"] = await rollout_events(client, handle.id, handle.result_run_id)
    return result


# PatchPilot variants for A/B runs in one invocation (`bench/run.py --variants`): worker options
# over what `bot.worker.build_worker` ships. "shipped" is the worker as `patchpilot worker` runs it.
VARIANTS = ("shipped", "noeager", "sandboxed", "passthrough", "unsandboxed")


def variant_options(variant: str | None) -> dict[str, Any]:
    """Worker options of a variant: `noeager` refuses eager activities (which the dev server
    hands out only with `--eager-activities`); `sandboxed` (PatchPilot's passthrough list),
    `passthrough` (every module passed through, the sandbox's checks kept) and `unsandboxed`
    force the workflow runner whatever the worker ships."""
    if variant in (None, "shipped"):
        return {}
    if variant == "noeager":
        return {"disable_eager_activity_execution": True}
    if variant == "sandboxed":
        from temporalio.worker.workflow_sandbox import (
            SandboxedWorkflowRunner,
            SandboxRestrictions,
        )

        from workflows.sandbox import PASSTHROUGH

        restrictions = SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
        return {"workflow_runner": SandboxedWorkflowRunner(restrictions=restrictions)}
    if variant == "passthrough":
        from temporalio.worker.workflow_sandbox import (
            SandboxedWorkflowRunner,
            SandboxRestrictions,
        )

        restrictions = SandboxRestrictions.default.with_passthrough_all_modules()
        return {"workflow_runner": SandboxedWorkflowRunner(restrictions=restrictions)}
    if variant == "unsandboxed":
        from temporalio.worker import UnsandboxedWorkflowRunner

        return {"workflow_runner": UnsandboxedWorkflowRunner()}
    raise ValueError(f"unknown PatchPilot variant {variant!r} (known: {', '.join(VARIANTS)})")


def _instrument_worker(parts: Any) -> dict[str, float]:
    """Time SSH handshakes, SSH commands and Vault lookups inside this worker (bench only)."""
    import activities.ssh as ssh_module

    totals = {"ssh_connect_s": 0.0, "ssh_command_s": 0.0, "vault_s": 0.0}
    real_connect = ssh_module.asyncssh.connect

    class _TimedConnect:
        """Awaitable and async context manager, like what asyncssh.connect returns."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._inner = real_connect(*args, **kwargs)

        async def _timed(self) -> Any:
            start = time.perf_counter()
            try:
                return await self._inner
            finally:
                totals["ssh_connect_s"] += time.perf_counter() - start

        def __await__(self):  # type: ignore[no-untyped-def]
            return self._timed().__await__()

        async def __aenter__(self) -> Any:
            self._conn = await self._timed()
            return self._conn

        async def __aexit__(self, *exc: object) -> None:
            self._conn.close()
            await self._conn.wait_closed()

    real_module = ssh_module.asyncssh
    shim = type("asyncssh_timed", (), {})()
    for name in dir(real_module):
        if not name.startswith("__"):
            setattr(shim, name, getattr(real_module, name))
    shim.connect = _TimedConnect
    ssh_module.asyncssh = shim  # only this module's view; asyncssh itself is untouched

    if not hasattr(ssh_module, "HostSession"):
        return totals
    real_run = ssh_module.HostSession.run

    async def timed_run(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await real_run(self, *args, **kwargs)
        finally:
            totals["ssh_command_s"] += time.perf_counter() - start

    ssh_module.HostSession.run = timed_run  # type: ignore[method-assign]

    real_credentials = parts.vault.credentials

    async def timed_credentials(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return await real_credentials(*args, **kwargs)
        finally:
            totals["vault_s"] += time.perf_counter() - start

    parts.vault.credentials = timed_credentials
    return totals


def main(argv: list[str] | None = None) -> None:
    argv = argv if argv is not None else sys.argv[1:]
    kind, spec_path = argv[0], argv[1]
    spec = json.loads(Path(spec_path).read_text())
    spec.setdefault("timeout", 600)
    spec.setdefault("user", "root")
    if kind == "raw":
        out = asyncio.run(_raw(spec))
    elif kind == "ansible":
        out = _ansible(spec)
    elif kind == "patchpilot":
        out = asyncio.run(_patchpilot(spec))
    else:
        raise SystemExit(f"unknown contender {kind!r}")
    print("BENCH-RESULT " + json.dumps(out), flush=True)
    sys.stdout.flush()
    # temporalio can abort the interpreter at exit (sdk-python#300): the result is out, leave now.
    os._exit(0)


if __name__ == "__main__":
    main()
