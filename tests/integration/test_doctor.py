"""The pre-flight doctor (activities/doctor.py) on real-apt lab hosts, through the preconditions
PatchPilot runs before touching a host: an interrupted dpkg, a held dpkg lock (waited for, then its
holder named), too little free space, and what is only reported (holds, a reboot already pending).
Each refusal is its own sentence, with what was found on the host."""

from __future__ import annotations

import time

from activities.doctor import Refusal
from activities.preconditions import precondition_problem
from activities.ssh import SshRunner
from lab.apt_lab import REPO_MOUNT, AptLab
from tests.integration.apt_fixtures import apt_runner, module_apt_lab, reset_lab
from tests.integration.test_host_output import credentials, target
from tests.integration.test_rollout import rollout as make_rollout
from tests.support import wait_for
from workflows.models import HostJob, HostStepInput
from workflows.targets import RESUMED_NOTE

HOSTS = ["f1", "f2"]
# Holds the dpkg frontend lock the way apt does (fcntl), for `seconds`, detached from the session;
# prints the holder's pid.
HOLDER = (
    'setsid python3 -c \'import fcntl, time; f = open("/var/lib/dpkg/lock-frontend", "w"); '
    "fcntl.lockf(f, fcntl.LOCK_EX); time.sleep({seconds})' < /dev/null > /dev/null 2>&1 & "
    "echo $!; sleep 0.5"
)


doctor_lab = module_apt_lab("doc", HOSTS, "127.0.11.")
lab = reset_lab("doctor_lab", HOSTS)
runner = apt_runner


def step(
    lab: AptLab, host: str, repair: bool = False, resumed: bool = False, **commands: object
) -> HostStepInput:
    rollout = make_rollout(["doc"], serviceList=[], repairInterruptedDpkg=repair)
    job = HostJob.from_rollout("rollout-doctor", rollout)
    host_target = target(lab, host, commands=commands)
    return HostStepInput(job=job, host=host_target, timeout_seconds=60, resumed=resumed)


async def preconditions(
    lab: AptLab,
    runner: SshRunner,
    host: str,
    repair: bool = False,
    resumed: bool = False,
    **commands: object,
) -> tuple[Refusal | None, list[str]]:
    notes: list[str] = []
    async with runner.session(target(lab, host), credentials(lab)) as session:
        problem = await precondition_problem(
            session, step(lab, host, repair, resumed, **commands), notes, repair=repair
        )
    return problem, notes


async def interrupt_dpkg(lab: AptLab, host: str) -> None:
    """Leave `host`'s dpkg interrupted the way a killed upgrade does: pp-slow 1.1 unpacked and
    its postinst killed half-way (dpkg --audit: half-configured); its postinst, run again, then
    finishes at once."""
    lab.install(host, "pp-slow")
    seconds = lab.host(host).root / "aptfs" / "upper" / "etc" / "pp-slow.seconds"
    seconds.write_text("300\n")
    started = await lab.run(
        host,
        f"setsid dpkg -i {REPO_MOUNT}/pp-slow_1.1_all.deb < /dev/null > /dev/null 2>&1 & echo $!",
    )
    dpkg = str(started.stdout).strip()
    await wait_for((lab.host(host).run_dir / "pp-slow.configuring").exists, timeout=60)
    await lab.run(
        host, f"pkill -KILL -s {dpkg}; while kill -0 {dpkg} 2>/dev/null; do sleep 0.1; done"
    )
    seconds.write_text("0\n")
    audit = await lab.run(host, "dpkg --audit")
    assert "pp-slow" in str(audit.stdout), (audit.stdout, audit.stderr)


async def pp_slow(lab: AptLab, host: str) -> str:
    shown = await lab.run(host, "dpkg-query -W -f='${Version} ${Status}' pp-slow")
    return str(shown.stdout).strip()


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


async def test_an_interrupted_dpkg_is_repaired_when_the_rollout_opts_in(
    lab: AptLab, runner: SshRunner
) -> None:
    await interrupt_dpkg(lab, "f2")
    assert await pp_slow(lab, "f2") == "1.1 install ok half-configured"
    problem, notes = await preconditions(lab, runner, "f2", repair=True)
    assert problem is None, problem
    assert notes == [
        "an interrupted dpkg was repaired (repairInterruptedDpkg: dpkg --configure -a): pp-slow",
        "held packages (left as they are): pp-held",
    ]
    assert await pp_slow(lab, "f2") == "1.1 install ok installed"
    assert str((await lab.run("f2", "dpkg --audit")).stdout).strip() == ""


async def test_a_repair_that_cannot_finish_is_refused_with_dpkgs_message(
    lab: AptLab, runner: SshRunner
) -> None:
    broken = await lab.run("f1", f"dpkg -i {REPO_MOUNT}/pp-broken_1.1_all.deb")
    assert broken.exit_status == 1
    problem, notes = await preconditions(lab, runner, "f1", repair=True)
    assert problem is not None and problem.kind == "DpkgInterrupted"  # type: ignore[attr-defined]
    assert problem.startswith("dpkg on f1 was interrupted and left packages unfinished; ")
    assert "--configure -a did not finish them (exit 1: " in problem
    assert "pp-broken: simulated configuration failure" in problem  # dpkg's own words
    assert "dpkg --audit still says: " in problem and "repair the host by hand" in problem
    assert notes == ["held packages (left as they are): pp-held"]


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
    # The holder's own pid, not any lock holder on the machine (tests run in parallel).
    assert f"by process {str(held.stdout).strip()} (python3)" in problem


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


async def test_a_dpkg_at_work_is_busy_not_interrupted_and_only_on_its_own_host(
    lab: AptLab, runner: SshRunner
) -> None:
    # A real dpkg on f1, in pp-slow 1.1's postinst: dpkg --audit lists pp-slow half-configured
    # while it works, and /proc/locks (the kernel's, shared by every lab host) shows its lock.
    lab.install("f1", "pp-slow")
    (lab.host("f1").root / "aptfs" / "upper" / "etc" / "pp-slow.seconds").write_text("300\n")
    started = await lab.run(
        "f1",
        f"setsid dpkg -i {REPO_MOUNT}/pp-slow_1.1_all.deb < /dev/null > /dev/null 2>&1 & echo $!",
    )
    dpkg = str(started.stdout).strip()
    try:
        await wait_for((lab.host("f1").run_dir / "pp-slow.configuring").exists, timeout=60)
        problem, _ = await preconditions(lab, runner, "f1", preflight_lock_wait=2)
        assert problem is not None and "interrupted" not in problem, problem
        assert problem.startswith(
            f"the package manager on f1 is busy: /var/lib/dpkg/lock-frontend by process {dpkg} "
            "(dpkg)"
        )
        # f2 has its own dpkg database: f1's lock, same inode number in the kernel's list, is
        # not f2's.
        problem, notes = await preconditions(lab, runner, "f2", preflight_lock_wait=2)
        assert problem is None and notes == ["held packages (left as they are): pp-held"]
    finally:
        await lab.run("f1", f"pkill -KILL -s {dpkg} || true")


async def test_this_rollouts_flag_is_its_own_only_for_checks_run_again(
    lab: AptLab, runner: SshRunner
) -> None:
    # A first look refuses it like anyone's (another inventory name of the same machine, a
    # rollout id used again); checks run again after a lost workflow task go on with it, and
    # never where the host's maintenance commands are its own.
    host = HOSTS[0]
    flag = "/var/lib/patchpilot/maintenance"
    await lab.run(host, f"mkdir -p /var/lib/patchpilot && echo rollout-doctor > {flag}")
    problem, _ = await preconditions(lab, runner, host)
    assert problem is not None and problem.kind == "AlreadyInMaintenance"
    problem, notes = await preconditions(lab, runner, host, resumed=True)
    assert problem is None and notes[0] == RESUMED_NOTE
    problem, _ = await preconditions(
        lab, runner, host, resumed=True, maintenanceCheck=f"test -f {flag}"
    )
    assert problem is not None and problem.kind == "AlreadyInMaintenance"
    await lab.run(host, f"echo rollout-other > {flag}")
    problem, _ = await preconditions(lab, runner, host, resumed=True)
    assert problem is not None and problem.kind == "AlreadyInMaintenance"
    await lab.run(host, f"rm -f {flag}")
    problem, notes = await preconditions(lab, runner, host, resumed=True)
    assert problem is None and RESUMED_NOTE not in notes
