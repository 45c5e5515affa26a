"""OS families on real hosts (issue 15, items 4 and 7): a Rocky Linux 9 host of the lab (its
os-release says so; its dnf and rpm are the real ones, lab/rpm_lab.py) is upgraded by dnf from a
local rpm repository, through the same `full` update profile a Debian host runs with apt; a host
whose os-release names no known family is refused before anything changes, saying what it said;
and each pre-flight refusal reaches the failure alert and the host's history as itself."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError

from bot.embedded import free_port
from bot.settings import Settings
from bot.worker import WorkerParts
from lab.apt_repo import build_repo
from lab.lab import Lab
from lab.processes import OpenBaoProcess
from lab.rpm_lab import RpmLab
from tests.fixtures import worker_prefix
from tests.integration.test_apt_lab import approve, patchpilot
from tests.integration.test_rollout import rollout, start
from tests.support import SECRET_PREFIX, Mailbox, running_worker
from workflows.models import Phase
from workflows.policies import host_workflow_id
from workflows.targets import OS_UPDATE_PROFILES

ROCKY, DEBIAN = "r1", "d1"
FULL = OS_UPDATE_PROFILES["full"]
RPM_QUERY = "rpm -q --qf '%{NAME} %{VERSION}-%{RELEASE}\\n' pp-hello"
DPKG_QUERY = "dpkg-query -W -f='${Package} ${Version}\\n' pp-hello"


@pytest.fixture(scope="module")
def rpm_lab(tmp_path_factory: pytest.TempPathFactory, openbao: OpenBaoProcess) -> Iterator[RpmLab]:
    root = tmp_path_factory.mktemp("rpm-lab")
    lab = RpmLab(
        root / "lab",
        {"rocky": [ROCKY], "deb": [DEBIAN]},
        rpm_hosts={ROCKY},
        repo=build_repo(root / "repo"),
        port=free_port(),
        address_prefix=worker_prefix("127.0.12."),  # apart per pytest-xdist worker
    )
    with lab:
        lab.seed_vault(openbao.address, openbao.root_token, prefix=SECRET_PREFIX, per_host=True)
        yield lab


def settings_for(
    lab: Lab, openbao: OpenBaoProcess, smtp: tuple[Mailbox, int], temporal: object, **host_vars
) -> Settings:
    return Settings(
        temporal_address=temporal.address,  # type: ignore[attr-defined]
        task_queue=f"os-{uuid.uuid4().hex[:8]}",
        inventory=lab.write_inventory(host_vars=host_vars),
        known_hosts=lab.write_known_hosts(),
        vault_addr=openbao.address,
        vault_token=openbao.root_token,
        smtp_host="127.0.0.1",
        smtp_port=smtp[1],
        smtp_from="patchpilot@example.com",
    )


@pytest_asyncio.fixture
async def os_worker(
    rpm_lab: RpmLab,
    temporal_client: Client,
    openbao: OpenBaoProcess,
    smtp_server: tuple[Mailbox, int],
    temporal_dev_server,
) -> AsyncIterator[tuple[Settings, WorkerParts]]:
    for host in (ROCKY, DEBIAN):
        rpm_lab.reset_packages(host)
        rpm_lab.reset_host(host)
    settings = settings_for(rpm_lab, openbao, smtp_server, temporal_dev_server)
    async with running_worker(temporal_client, settings) as parts:
        yield settings, parts


async def host_error_types(client: Client, host: str) -> list[str]:
    """The ApplicationError types of the failed activities in `host`'s latest host workflow:
    an activity's failure event, or a local activity's marker (the preconditions are one where
    the host has the default maintenance commands), as the Web UI shows them."""
    history = await client.get_workflow_handle(host_workflow_id(host)).fetch_history()
    found = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            failure = event.activity_task_failed_event_attributes.failure
        elif event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            failure = event.marker_recorded_event_attributes.failure
        else:
            continue
        while failure.HasField("cause") and not failure.HasField("application_failure_info"):
            failure = failure.cause
        if failure.HasField("application_failure_info"):
            found.append(failure.application_failure_info.type)
    return found


async def test_a_rocky_host_is_upgraded_by_dnf_and_its_report_lists_it(
    rpm_lab: RpmLab, os_worker: tuple[Settings, WorkerParts], temporal_client: Client
) -> None:
    settings, _ = os_worker
    assert str((await rpm_lab.run(ROCKY, RPM_QUERY)).stdout).split() == ["pp-hello", "1.0-1"]
    # The dry run first: the family's default commands, real dnf check-update (exit 100) and
    # dnf needs-restarting -r, read and validated; nothing changes.
    dry = await start(
        temporal_client, settings, rollout(["rocky"], updateCommand=FULL, dryRun=True)
    )
    (seen,) = (await dry.result()).dry_run or []
    assert seen.preconditions_ok, seen.reason
    assert [line.split()[:2] for line in seen.pending_updates] == [["pp-hello.noarch", "1.1-1"]]
    assert seen.reboot_required is False and seen.would_change == []
    assert str((await rpm_lab.run(ROCKY, RPM_QUERY)).stdout).split() == ["pp-hello", "1.0-1"]
    handle = await start(
        temporal_client, settings, rollout(["rocky"], updateCommand=FULL, updateTimeout=120)
    )
    await approve(handle)
    summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 1
    # rpm's database says dnf upgraded it; dpkg's (the machine's packages underneath) that apt
    # never ran: the family picked the dnf branch of the one approved command.
    assert str((await rpm_lab.run(ROCKY, RPM_QUERY)).stdout).split() == ["pp-hello", "1.1-1"]
    assert str((await rpm_lab.run(ROCKY, DPKG_QUERY)).stdout).split() == ["pp-hello", "1.0"]
    (host,) = summary.hosts
    assert host.packages == "upgraded 1, installed 0, removed 0, kept back 0, held 0"
    assert not host.rebooted  # dnf needs-restarting -r: nothing that needs a reboot changed
    shown = patchpilot(settings, "report", summary.rollout_id)
    assert shown.returncode == 0, shown.stderr
    assert f"{ROCKY}: done\n" in shown.stdout
    assert "  upgraded pp-hello.noarch 1.0-1 → 1.1-1\n" in shown.stdout
    sent = rpm_lab.command_log(ROCKY)
    update = [line for line in sent if "dnf -y upgrade" in line]
    assert update and all("PATCHPILOT_OS_FAMILY=dnf" in line for line in update), update
    assert rpm_lab.dpkg_log(ROCKY) == []


async def test_an_os_of_no_known_family_is_refused_saying_what_its_os_release_said(
    rpm_lab: RpmLab,
    os_worker: tuple[Settings, WorkerParts],
    temporal_client: Client,
    mailbox: Mailbox,
) -> None:
    settings, _ = os_worker
    changed = await rpm_lab.run(
        DEBIAN, "rm -f /etc/os-release; printf 'ID=arch\\nBUILD_ID=rolling\\n' > /etc/os-release"
    )
    assert changed.exit_status == 0, changed.stderr
    handle = await start(temporal_client, settings, rollout(["deb"], updateCommand=FULL))
    await approve(handle)
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    reason = str(failed.value.cause)
    assert f"host {DEBIAN} failed at step preconditions: {DEBIAN} runs an OS PatchPilot" in reason
    assert "(os-release: ID='arch' ID_LIKE='' VERSION_ID='')" in reason
    # Only what the rollout runs is named (the dry run's read-only commands are not).
    assert (
        "set patchpilot_reboot_required_check for the host and give the rollout an update "
        "command for this OS (its own is a profile)"
    ) in reason
    (alert,) = mailbox.events("failure")
    assert "ID='arch'" in alert.get_content()
    assert await host_error_types(temporal_client, DEBIAN) == ["UnknownOsFamily"]
    assert str((await rpm_lab.run(DEBIAN, DPKG_QUERY)).stdout).split() == ["pp-hello", "1.0"]


async def test_low_free_space_is_its_own_reason_in_the_alert_and_the_history(
    rpm_lab: RpmLab,
    os_worker: tuple[Settings, WorkerParts],
    temporal_client: Client,
    openbao: OpenBaoProcess,
    smtp_server: tuple[Mailbox, int],
    temporal_dev_server,
    mailbox: Mailbox,
) -> None:
    settings = settings_for(
        rpm_lab,
        openbao,
        smtp_server,
        temporal_dev_server,
        **{DEBIAN: {"patchpilot_preflight_free_mb": "/var=100000000"}},
    )
    async with running_worker(temporal_client, settings):
        handle = await start(temporal_client, settings, rollout(["deb"], updateCommand=FULL))
        await approve(handle)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    reason = str(failed.value.cause)
    said = f"not enough free space on {DEBIAN} to patch it safely: /var ("
    assert said in reason and "MiB free, below 100000000 MiB" in reason
    (alert,) = mailbox.events("failure")
    assert f"{DEBIAN} at step preconditions" in alert["Subject"]
    assert said in alert.get_content() and "below 100000000 MiB" in alert.get_content()
    assert await host_error_types(temporal_client, DEBIAN) == ["LowDiskSpace"]
    assert str((await rpm_lab.run(DEBIAN, DPKG_QUERY)).stdout).split() == ["pp-hello", "1.0"]
