"""SystemPatchWorkflow end to end: real Temporal dev server, OpenBao, sshd lab hosts and SMTP."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError

from activities.doctor import PREFLIGHT
from activities.ssh import unwrap_commands
from bot.settings import Settings
from bot.worker import WorkerParts
from lab import Lab
from tests.support import SERVICES, Mailbox, record_history, wait_for, worker_env
from workflows.models import (
    WORKFLOW_NAME,
    ApprovalDecision,
    HostState,
    Phase,
    RolloutInput,
    RolloutProgress,
    RolloutSummary,
)
from workflows.targets import DEFAULT_COMMANDS

ALICE = "alice@example.com"
BOB = "bob@example.com"
UPDATE = "apt-get update && apt-get -y upgrade"
PATCHPILOT = str(Path(sys.executable).parent / "patchpilot")


def rollout(clusters: list[str], **extra: object) -> RolloutInput:
    return RolloutInput.model_validate(
        {
            "targetClusters": clusters,
            "pilotHostCount": 1,
            "approverEmails": [ALICE],
            "requesterEmail": BOB,
            "updateCommand": UPDATE,
            "serviceList": SERVICES,
            **extra,
        }
    )


def commands(lab: Lab, host: str) -> list[str]:
    """The operator's commands each host was sent, a batch of checks as its commands."""
    return [command for line in lab.command_log(host) for command in unwrap_commands(line)]


SSH_COMMANDS_PER_HOST = 7


def expected_host_commands() -> list[str]:
    return [
        # the preconditions, one SSH command (activities/checks.py), unwrapped here
        "test -e /var/lib/patchpilot/maintenance",
        "true",
        "systemctl is-active nginx",
        "systemctl is-active postgresql",
        PREFLIGHT,  # the pre-flight doctor: dpkg --audit, locks, free space, holds, reboot
        # maintenance on carries the rollout id; compared by prefix below
        "mkdir -p /var/lib/patchpilot && echo ",
        "systemctl stop nginx",
        "systemctl stop postgresql",
        # no drain check: the default, `true`, is answered without a session
        UPDATE,  # detached on the host, its package report in its output (detached.py)
        # the reboot decision's look, in the update's own SSH command, after it succeeded
        "cat /proc/sys/kernel/random/boot_id",
        DEFAULT_COMMANDS.reboot_required_check,  # a `case` over the OS family (apt here)
        "systemctl start postgresql",
        "systemctl start nginx",
        "systemctl is-active nginx",
        "systemctl is-active postgresql",
        "rm -f /var/lib/patchpilot/maintenance",
    ]


def cli(settings: Settings, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **worker_env(settings), "COLUMNS": "200"}
    return subprocess.run(
        [PATCHPILOT, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


async def acli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(cli, settings, *args)


async def test_operator_flow_patches_every_host_pilots_first(
    fleet: Lab, worker_settings: Settings, mailbox: Mailbox, tmp_path: Path
) -> None:
    """`patchpilot worker` + `start` + `approve` + `status` + `result`, as the README tells it."""
    env = {**os.environ, **worker_env(worker_settings)}
    worker_log = (tmp_path / "worker.log").open("w")
    worker_process = subprocess.Popen(
        [PATCHPILOT, "worker", "--no-policy"],
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        rollout_id = f"it-happy-{uuid.uuid4().hex[:6]}"
        started = await acli(
            worker_settings,
            "start",
            "--clusters",
            "cluster-a",
            "cluster-b",
            "--pilot",
            "1",
            "--approver",
            ALICE,
            "--requester",
            BOB,
            "--services",
            "nginx,postgresql",
            "--update",
            UPDATE,
            "--max-concurrency",
            "2",
            "--id",
            rollout_id,
        )
        assert started.returncode == 0, started.stderr
        assert f"Started rollout {rollout_id}" in started.stdout
        await wait_for(lambda: mailbox.events("approval-request"), timeout=30)
        request = mailbox.events("approval-request")[0]
        assert request["X-Envelope-To"] == ALICE
        assert f"patchpilot approve {rollout_id}" in request.get_content()
        assert all(commands(fleet, h.name) == [] for h in fleet.hosts), "touched before approval"

        self_approval = await acli(worker_settings, "approve", rollout_id, "--as", BOB)
        assert self_approval.returncode == 2
        assert "requested this rollout and cannot approve it" in self_approval.stderr
        stranger = await acli(worker_settings, "approve", rollout_id, "--as", "eve@example.com")
        assert stranger.returncode == 2 and "is not an approver" in stranger.stderr

        approved = await acli(worker_settings, "approve", rollout_id, "--as", ALICE)
        assert approved.returncode == 0, approved.stderr
        assert f"approved by {ALICE}" in approved.stdout

        finished = await acli(worker_settings, "result", rollout_id)
        assert finished.returncode == 0, finished.stdout + finished.stderr
        assert "succeeded" in finished.stdout and "patched 6, failed 0" in finished.stdout
        status = await acli(worker_settings, "status", rollout_id)
        assert status.returncode == 0 and "succeeded" in status.stdout
    finally:
        os.killpg(worker_process.pid, signal.SIGTERM)
        worker_process.wait(timeout=20)
        worker_log.close()

    expected = expected_host_commands()
    for host in fleet.hosts:
        seen = commands(fleet, host.name)
        assert len(seen) == len(expected), (host.name, seen)
        # One SSH command each: preconditions, maintenance on, stop, update (and the reboot
        # decision's look), start, health, maintenance off.
        assert len(fleet.command_log(host.name)) == SSH_COMMANDS_PER_HOST, host.name
        for got, want in zip(seen, expected, strict=True):
            assert got.startswith(want), (host.name, got, want)
        assert not fleet.in_maintenance(host.name)
        assert all(fleet.service_state(host.name, s) == "active" for s in SERVICES)
        assert fleet.update_count(host.name) == 1

    for cluster, hosts in fleet.clusters.items():
        pilot, *others = hosts
        pilot_last = fleet.command_log_timed(pilot)[-1][0]
        others_first = min(fleet.command_log_timed(h)[0][0] for h in others)
        assert pilot_last < others_first, f"{cluster}: a non-pilot started before the pilot ended"
    a_last = max(fleet.command_log_timed(h)[-1][0] for h in fleet.clusters["cluster-a"])
    b_first = min(fleet.command_log_timed(h)[0][0] for h in fleet.clusters["cluster-b"])
    assert a_last < b_first, "cluster-b started before cluster-a finished"

    assert len(mailbox.events("host-start")) == 6 and len(mailbox.events("host-success")) == 6
    assert all(m["X-Envelope-To"] == BOB for m in mailbox.events("host-success"))
    summary = mailbox.events("summary")
    assert len(summary) == 1 and "patched 6, failed 0, skipped 0" in summary[0].get_content()


async def start(client: Client, settings: Settings, rollout_input: RolloutInput):
    return await client.start_workflow(
        WORKFLOW_NAME,
        rollout_input,
        id=f"it-{uuid.uuid4().hex[:8]}",
        task_queue=settings.task_queue,
        result_type=RolloutSummary,
    )


async def approve(handle, who: str = ALICE) -> None:
    await handle.execute_update("approve", ApprovalDecision(approver=who), result_type=str)


async def test_failing_pilot_stops_everything_and_the_alert_names_host_and_step(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
) -> None:
    fleet.set_fault("a1", "update-fail")
    handle = await start(temporal_client, worker_settings, rollout(["cluster-a", "cluster-b"]))
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    await record_history(temporal_client, handle.id, "failed-pilot")
    assert "pilot host a1 failed at step update" in str(failed.value.cause)
    assert "simulated upgrade failure" in str(failed.value.cause)
    assert fleet.update_count("a1") == 0
    for host in ["a2", "a3", "b1", "b2", "b3"]:
        assert commands(fleet, host) == [], f"{host} was touched after the pilot failed"
    assert UPDATE in commands(fleet, "a1")
    assert fleet.in_maintenance("a1"), "a failed host stays in maintenance for the operator"
    alerts = mailbox.events("failure")
    assert len(alerts) == 1
    assert "a1 at step update" in alerts[0]["Subject"]
    body = alerts[0].get_content()
    assert "host a1 (cluster cluster-a) failed at step update" in body
    assert "Maintenance mode: in maintenance" in body
    assert set(alerts[0]["X-Envelope-To"].split(", ")) == {BOB, ALICE}
    progress = await handle.query("progress", result_type=RolloutProgress)
    states = {h.name: h.state for h in progress.hosts()}
    assert states == {
        "a1": HostState.FAILED,
        **{h: HostState.SKIPPED for h in ["a2", "a3", "b1", "b2", "b3"]},
    }


async def test_reject_and_approval_timeout_touch_no_host(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
) -> None:
    rejected = await start(temporal_client, worker_settings, rollout(["cluster-a"]))
    await rejected.execute_update(
        "reject", ApprovalDecision(approver=ALICE, comment="not today"), result_type=str
    )
    timed_out = await start(
        temporal_client, worker_settings, rollout(["cluster-b"], approvalTimeout=2)
    )
    assert (await rejected.result()).phase == Phase.REJECTED
    assert (await timed_out.result()).phase == Phase.APPROVAL_TIMED_OUT
    assert all(commands(fleet, h.name) == [] for h in fleet.hosts)
    with pytest.raises(RPCError, match="already completed"):
        await approve(rejected)


async def test_second_rollout_on_a_busy_host_is_refused(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
) -> None:
    slow = rollout(["cluster-a"], pilotHostCount=0, updateCommand=f"sleep 4 && {UPDATE}")
    first = await start(temporal_client, worker_settings, slow)
    await approve(first)
    await wait_for(lambda: any(UPDATE in c for c in commands(fleet, "a1")), timeout=30)
    second = await start(temporal_client, worker_settings, rollout(["cluster-a"]))
    await approve(second)
    with pytest.raises(WorkflowFailureError) as refused:
        await second.result()
    assert "host a1 is already being patched by another rollout" in str(refused.value.cause)
    summary = await first.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    assert fleet.update_count("a1") == 1


async def test_no_secret_in_any_workflow_history(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    openbao,
) -> None:
    handle = await start(temporal_client, worker_settings, rollout(["cluster-b"]))
    await approve(handle)
    assert (await handle.result()).phase == Phase.SUCCEEDED
    await record_history(temporal_client, handle.id, "succeeded")
    key_lines = [
        line for line in fleet.client_private_key.splitlines() if line and "PRIVATE KEY" not in line
    ]
    secrets = [openbao.root_token, *key_lines]
    scanned = 0
    async for execution in temporal_client.list_workflows():
        history = await temporal_client.get_workflow_handle(
            execution.id, run_id=execution.run_id
        ).fetch_history()
        text = history.to_json()
        scanned += 1
        for secret in secrets:
            assert secret not in text, f"a secret leaked into the history of {execution.id}"
    assert scanned >= 4  # this rollout and its three host workflows at least


async def test_hung_update_times_out_is_killed_on_the_host_and_alerted(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    mailbox: Mailbox,
) -> None:
    fleet.set_fault("b1", "update-hang")
    handle = await start(temporal_client, worker_settings, rollout(["cluster-b"], updateTimeout=3))
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    assert "did not finish within 3s and was killed on the host" in str(failed.value.cause)
    assert fleet.hung_processes("b1") == [], "the hung update is still running on the host"
    assert fleet.update_count("b1") == 0
    assert commands(fleet, "b2") == [] and commands(fleet, "b3") == []
    alert = mailbox.events("failure")
    assert len(alert) == 1 and "b1 at step update" in alert[0]["Subject"]


async def test_cli_start_from_a_json_file_with_the_spec_field_names(
    fleet: Lab, worker: WorkerParts, worker_settings: Settings, tmp_path: Path
) -> None:
    spec_input = tmp_path / "rollout.json"
    spec_input.write_text(
        json.dumps(
            {
                "targetClusters": ["cluster-a"],
                "pilotHostCount": 1,
                "approverEmails": [ALICE],
                "requesterEmail": BOB,
                "secretPathPrefix": "patch-deploy",
                "updateCommand": UPDATE,
                "serviceList": ["nginx"],
                "maxConcurrency": 2,
            }
        )
    )
    rollout_id = f"it-json-{uuid.uuid4().hex[:6]}"
    started = await acli(worker_settings, "start", "--input", str(spec_input), "--id", rollout_id)
    assert started.returncode == 0, started.stderr
    assert (await acli(worker_settings, "approve", rollout_id, "--as", ALICE)).returncode == 0
    finished = await acli(worker_settings, "result", rollout_id)
    assert finished.returncode == 0, finished.stdout
    assert [fleet.update_count(h) for h in ["a1", "a2", "a3"]] == [1, 1, 1]
    status = await acli(worker_settings, "status", rollout_id, "--json")
    progress = json.loads(status.stdout)["progress"]
    assert progress["phase"] == "succeeded"
    assert [h["state"] for h in progress["clusters"][0]["hosts"]] == ["done"] * 3
    # Every field is there for scripts, defaults too (the wire form leaves defaults out).
    assert all(h["failureReason"] is None for h in progress["clusters"][0]["hosts"])
    assert [h["pilot"] for h in progress["clusters"][0]["hosts"]] == [True, False, False]


async def test_cli_refuses_bad_input_before_anything_starts(
    fleet: Lab, worker_settings: Settings, temporal_client: Client
) -> None:
    before = [execution.id async for execution in temporal_client.list_workflows()]
    bad = await acli(
        worker_settings,
        "start",
        "--clusters",
        "cluster-z",
        "--pilot",
        "1",
        "--approver",
        ALICE,
        "--requester",
        BOB,
        "--update",
        UPDATE,
    )
    assert bad.returncode == 2
    assert "targetClusters: cluster-z not in the inventory" in bad.stderr
    assert "known: cluster-a, cluster-b" in bad.stderr
    hostile = await acli(
        worker_settings,
        "start",
        "--clusters",
        "cluster-a",
        "--pilot",
        "1",
        "--approver",
        ALICE,
        "--requester",
        BOB,
        "--update",
        UPDATE,
        "--services",
        "nginx;reboot",
    )
    assert hostile.returncode == 2 and "serviceList[0]" in hostile.stderr
    fixed = await acli(
        worker_settings,
        "start",
        "--clusters",
        "cluster-a",
        "--pilot",
        "1",
        "--approver",
        ALICE,
        "--requester",
        BOB,
        "--update",
        UPDATE,
        "--id",
        f"it-fixed-{uuid.uuid4().hex[:6]}",
    )
    assert fixed.returncode == 0, fixed.stderr  # the same command, corrected, goes through
    after = [execution.id async for execution in temporal_client.list_workflows()]
    assert len(after) == len(before) + 1
    missing = await acli(worker_settings, "approve", "no-such-rollout", "--as", ALICE)
    assert missing.returncode == 2 and "no rollout with id no-such-rollout" in missing.stderr
    rollout_id = fixed.stdout.split("Started rollout ", 1)[1].split()[0]
    cancelled = await acli(worker_settings, "cancel", rollout_id)
    assert cancelled.returncode == 0 and "cancellation requested" in cancelled.stdout


async def test_each_host_costs_at_most_one_vault_read_and_two_handshakes(
    fleet: Lab, worker: WorkerParts, temporal_client: Client, worker_settings: Settings
) -> None:
    worker.vault.forget()
    handle = await start(
        temporal_client, worker_settings, rollout(["cluster-a", "cluster-b"], maxConcurrency=3)
    )
    await approve(handle)
    assert (await handle.result()).patched == 6
    # One read of <prefix>/<host> per host; a path read once is cached (the preflight's too).
    assert worker.vault.reads <= 6 + 1
    assert worker.ssh.handshakes <= 2 * 6, f"{worker.ssh.handshakes} SSH handshakes for 6 hosts"
