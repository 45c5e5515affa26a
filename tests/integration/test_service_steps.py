"""Stopping and starting a host's services is one SSH command per step, with the order, the stop
at the first failing service and the messages of one command per service (real Temporal, OpenBao
and sshd lab hosts; activities/checks.py run_in_order)."""

from __future__ import annotations

import uuid

import pytest
from temporalio.client import Client, WorkflowFailureError

from activities.ssh import unwrap_commands
from bot.settings import Settings
from bot.worker import WorkerParts
from lab import Lab
from tests.integration.test_rollout import approve, rollout, start


def lines_with(lab: Lab, host: str, word: str) -> list[list[str]]:
    """The SSH commands `host` received that hold an operator's command starting with `word`,
    each as the operator's commands in it."""
    sent = [unwrap_commands(line) for line in lab.command_log(host)]
    return [line for line in sent if any(c.startswith(word) for c in line)]


@pytest.mark.parametrize("become", [False, True])
async def test_each_service_step_is_one_ssh_command_in_the_order_of_one_command_each(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    become: bool,
) -> None:
    # Each service command also notes itself on the host: the order the host ran them in.
    order = f"order-{uuid.uuid4().hex[:6]}"
    note = f"echo VERB {{service}} >> /var/lib/patchpilot/{order} && systemctl VERB {{service}}"
    noted = {f"patchpilot_service_{v}": note.replace("VERB", v) for v in ("stop", "start")}
    if become:
        noted["ansible_become"] = "yes"
    fleet.write_inventory(group_vars={"cluster-a": noted})
    handle = await start(temporal_client, worker_settings, rollout(["cluster-a"]))
    await approve(handle)
    summary = await handle.result()
    assert summary.patched == 3
    for host in fleet.clusters["cluster-a"]:
        ran = (fleet.host(host).state_dir / order).read_text().splitlines()
        assert ran == ["stop nginx", "stop postgresql", "start postgresql", "start nginx"], host
        stops = lines_with(fleet, host, "echo stop ")
        starts = lines_with(fleet, host, "echo start ")
        assert [len(stops), len(starts)] == [1, 1], f"{host}: not one SSH command per step"
        assert [c.split(" >> ")[0] for c in stops[0]] == ["echo stop nginx", "echo stop postgresql"]
        assert [c.split(" >> ")[0] for c in starts[0]] == [
            "echo start postgresql",
            "echo start nginx",
        ]
        assert fleet.service_state(host, "nginx") == fleet.service_state(host, "postgresql")
        assert fleet.service_state(host, "nginx") == "active"
        if become:  # the batch as a whole runs through sudo -n, so each service command does
            stopped_as = [u for u, c in fleet.sudo_calls(host) if "echo stop nginx" in c]
            assert stopped_as == ["root"]
            assert len(fleet.sudo_calls(host)) == len(fleet.command_log(host))


@pytest.mark.parametrize("failing", ["first service stop", "second service start"])
async def test_a_failing_service_ends_its_step_with_its_message_and_the_rest_untouched(
    fleet: Lab,
    worker: WorkerParts,
    temporal_client: Client,
    worker_settings: Settings,
    failing: str,
) -> None:
    if failing == "first service stop":
        refuses = "if [ {service} = nginx ]; then echo 'nginx: clients still connected' >&2; "
        stop = refuses + "exit 4; fi; systemctl stop {service}"
        fleet.write_inventory(host_vars={"a1": {"patchpilot_service_stop": stop}})
    else:
        fleet.set_fault("a1", "start-fail:nginx")  # started second: postgresql comes first
    handle = await start(temporal_client, worker_settings, rollout(["cluster-a"]))
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    reason = str(failed.value.cause)
    if failing == "first service stop":
        assert "host a1 failed at step stop-services" in reason
        assert "stopping nginx on a1 exited 4: nginx: clients still connected" in reason
        # postgresql was never stopped, and nothing ran again after the failure.
        assert fleet.service_state("a1", "postgresql") == "active"
        assert len(lines_with(fleet, "a1", "if [ nginx = nginx ]")) == 1
        assert fleet.update_count("a1") == 0
    else:
        assert "host a1 failed at step start-services" in reason
        assert (
            "starting nginx on a1 exited 1: Job for nginx.service failed because the control "
            "process exited with error code." in reason
        )
        assert fleet.service_state("a1", "postgresql") == "active"
        assert fleet.service_state("a1", "nginx") == "failed"
        assert len(lines_with(fleet, "a1", "systemctl start")) == 1
        assert fleet.update_count("a1") == 1
    assert all(fleet.command_log(h) == [] for h in ("a2", "a3")), "touched after the pilot failed"
