"""The pre-flight doctor (activities/doctor.py) on real-apt lab hosts, through the preconditions
PatchPilot runs before touching a host: an interrupted dpkg, a held dpkg lock (waited for, then its
holder named), too little free space, and what is only reported (holds, a reboot already pending).
Each refusal is its own sentence, with what was found on the host."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from activities.preconditions import precondition_problem
from activities.ssh import SshRunner
from bot.embedded import free_port
from lab.apt_lab import REPO_MOUNT, AptLab
from lab.apt_repo import build_repo
from tests.integration.test_host_output import credentials, target
from tests.integration.test_rollout import rollout as make_rollout
from workflows.models import HostJob, HostStepInput

HOSTS = ["f1", "f2"]
# Holds the dpkg frontend lock the way apt does (fcntl), for `seconds`, detached from the session.
HOLDER = (
    'setsid python3 -c \'import fcntl, time; f = open("/var/lib/dpkg/lock-frontend", "w"); '
    "fcntl.lockf(f, fcntl.LOCK_EX); time.sleep({seconds})' < /dev/null > /dev/null 2>&1 & "
    "sleep 0.5"
)


@pytest.fixture(scope="module")
def doctor_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AptLab]:
    root = tmp_path_factory.mktemp("doctor-lab")
    repo = build_repo(root / "repo")
    lab = AptLab(
        root / "lab", {"doc": HOSTS}, repo=repo, port=free_port(), address_prefix="127.0.11."
    )
    with lab:
        yield lab


@pytest.fixture
def lab(doctor_lab: AptLab) -> AptLab:
    for host in HOSTS:
        doctor_lab.reset_packages(host)
        doctor_lab.reset_host(host)
    doctor_lab.write_known_hosts()
    return doctor_lab


@pytest_asyncio.fixture
async def runner(lab: AptLab) -> AsyncIterator[SshRunner]:
    ssh = SshRunner(lab.known_hosts_path)
    yield ssh
    ssh.close_all()


def step(lab: AptLab, host: str, **commands: object) -> HostStepInput:
    rollout = make_rollout(["doc"], serviceList=[])
    job = HostJob.from_rollout("rollout-doctor", rollout)
    return HostStepInput(job=job, host=target(lab, host, commands=commands), timeout_seconds=60)


async def preconditions(
    lab: AptLab, runner: SshRunner, host: str, **commands: object
) -> tuple[str | None, list[str]]:
    notes: list[str] = []
    async with runner.session(target(lab, host), credentials(lab)) as session:
        problem = await precondition_problem(session, step(lab, host, **commands), notes)
    return problem, notes


async def test_a_healthy_host_passes_and_its_hold_is_listed(lab: AptLab, runner: SshRunner) -> None:
    problem, notes = await preconditions(lab, runner, "f1")
    assert problem is None
    assert notes == ["held packages (left as they are): pp-held"]


async def test_an_interrupted_dpkg_is_refused_with_what_to_run(
    lab: AptLab, runner: SshRunner
) -> None:
    # 1.1's postinst fails: dpkg leaves pp-broken half-configured, as an interrupted run does.
    broken = await lab.run("f1", f"dpkg -i {REPO_MOUNT}/pp-broken_1.1_all.deb")
    assert broken.exit_status == 1
    problem, _ = await preconditions(lab, runner, "f1")
    assert problem is not None
    assert problem.startswith("dpkg on f1 was interrupted and left packages unfinished")
    assert "pp-broken" in problem and "run dpkg --configure -a on the host" in problem


async def test_a_held_dpkg_lock_is_waited_for_then_refused_with_its_holder(
    lab: AptLab, runner: SshRunner
) -> None:
    held = await lab.run("f2", HOLDER.format(seconds=30))
    assert held.exit_status == 0, held.stderr
    began = time.monotonic()
    problem, _ = await preconditions(lab, runner, "f2", preflight_lock_wait=3)
    waited = time.monotonic() - began
    assert problem is not None and 3 <= waited < 20, (problem, waited)
    assert problem.startswith("the package manager on f2 is busy: /var/lib/dpkg/lock-frontend")
    assert "(python3), still held after 3s" in problem
    holder = await lab.run("f2", "pgrep -f 'fcntl.lockf' | head -n 1")
    assert f"by process {str(holder.stdout).strip()} (python3)" in problem


async def test_a_lock_let_go_within_the_wait_lets_the_host_through(
    lab: AptLab, runner: SshRunner
) -> None:
    held = await lab.run("f2", HOLDER.format(seconds=3))
    assert held.exit_status == 0, held.stderr
    began = time.monotonic()
    problem, _ = await preconditions(lab, runner, "f2", preflight_lock_wait=30)
    assert problem is None
    assert time.monotonic() - began >= 1.5, "the lock was not waited for"


async def test_too_little_free_space_is_refused_with_the_numbers(
    lab: AptLab, runner: SshRunner
) -> None:
    problem, _ = await preconditions(
        lab, runner, "f1", preflight_free_mb="/=1,/var=100000000,/boot=1"
    )
    assert problem is not None
    assert problem.startswith("not enough free space on f1 to patch it safely: /var (")
    assert "MiB free, below 100000000 MiB" in problem and "/boot" not in problem


async def test_a_reboot_already_pending_is_reported(lab: AptLab, runner: SshRunner) -> None:
    run = lab.host("f2").run_dir
    (run / "reboot-required").write_text("*** System restart required ***\n")
    (run / "reboot-required.pkgs").write_text("linux-image-6.1.0-28-amd64\n")
    problem, notes = await preconditions(lab, runner, "f2")
    assert problem is None
    assert "a reboot was already pending before this change (for linux-image-6.1.0-28-amd64)" in (
        notes
    )
