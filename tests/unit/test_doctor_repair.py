"""Repairing an interrupted dpkg when the rollout opts in (`repairInterruptedDpkg`,
activities/doctor.py, workflows/repair.py): when the doctor repairs, what it runs, and what the host
is told afterwards. The host is a stand-in that answers the doctor's commands in order, as dpkg
answered them on the real-apt lab (tests/integration/test_doctor.py runs the real thing)."""

from __future__ import annotations

import html
import json
from typing import cast

import pytest

from activities.doctor import (
    PREFLIGHT,
    parse_preflight,
    preflight_problem,
    should_repair,
    unfinished_packages,
)
from activities.notify.messages import what_runs
from activities.notify.teams import _what_runs
from activities.ssh import CommandResult, HostSession
from bot.cli.rollout_commands import what_is_signed
from bot.slack.commands import (
    CommandError,
    PatchCommand,
    apply_defaults,
    parse_command,
    rollout_input,
)
from bot.slack.config import SlackDefaults
from bot.slack.what_runs import WhatRuns
from bot.web.approvals import what_runs as web_what_runs
from workflows.models import HostJob, HostStepInput, HostTarget, RolloutInput, RolloutNotice
from workflows.repair import REPAIR_DPKG, REPAIR_SHOWN

# dpkg --audit's answer for a package whose postinst was killed (dpkg 1.21, Debian 12).
AUDIT = (
    "The following packages are only half configured, probably due to problems\n"
    "configuring them the first time.  The configuration should be retried using\n"
    "dpkg --configure <package> or the configure menu option in dselect:\n"
    " pp-slow              PatchPilot test package pp-slow\n"
)
LOCK = "/var/lib/dpkg/lock-frontend 4242 dpkg\n"
OS_RELEASE = "ID=debian\nVERSION_ID=12\n"


def doctor(audit: str = "", locks: str = "", held: str = "pp-held\n") -> CommandResult:
    text = (
        f"== audit\n{audit}== locks\n{locks}== df\n== held\n{held}== reboot\n"
        f"== os-release\n{OS_RELEASE}"
    )
    return CommandResult(command="preflight", exit_status=0, stdout=text, stderr="")


class StandIn:
    """A session whose commands answer, in order, with `answers`; `ran` is what was run."""

    family: str | None = None

    def __init__(self, *answers: CommandResult) -> None:
        self.answers = list(answers)
        self.ran: list[str] = []

    async def run(self, command: str, timeout: float, **_: object) -> CommandResult:
        self.ran.append(command)
        return self.answers.pop(0)


def as_session(stand_in: StandIn) -> HostSession:
    return cast(HostSession, stand_in)  # the doctor uses `run` and `family` only


def step(*, opted_in: bool, lock_wait: float = 0) -> HostStepInput:
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": ["c"],
            "pilotHostCount": 1,
            "approverEmails": ["alice@example.com"],
            "requesterEmail": "bob@example.com",
            "updateCommand": "apt-get -y upgrade",
            "repairInterruptedDpkg": opted_in,
        }
    )
    host = HostTarget.model_validate(
        {
            "name": "h1",
            "cluster": "c",
            "address": "10.0.0.1",
            "commands": {"preflightLockWait": lock_wait},
        }
    )
    job = HostJob.from_rollout("r-repair", rollout)
    assert job.repair_interrupted_dpkg is opted_in  # the rollout's flag reaches every host step
    return HostStepInput(job=job, host=host, timeout_seconds=10)


def test_the_repair_runs_only_when_asked_unfinished_unlocked_and_not_yet_tried() -> None:
    interrupted = parse_preflight(doctor(AUDIT), "h1")
    busy = parse_preflight(doctor(AUDIT, LOCK), "h1")
    clean = parse_preflight(doctor(), "h1")
    assert should_repair(interrupted, repair=True, tried=False)
    assert not should_repair(interrupted, repair=False, tried=False)
    assert not should_repair(interrupted, repair=True, tried=True)  # once per pass, no loop
    assert not should_repair(busy, repair=True, tried=False)  # a dpkg at work is not raced
    assert not should_repair(clean, repair=True, tried=False)
    assert unfinished_packages(interrupted.audit) == ["pp-slow"]


async def test_a_repaired_host_passes_and_its_notes_say_what_was_repaired() -> None:
    session = StandIn(CommandResult(REPAIR_DPKG, 0, "Setting up pp-slow (1.1) ...\n", ""), doctor())
    problem, notes = await preflight_problem(
        as_session(session), step(opted_in=True), first=doctor(AUDIT), repair=True
    )
    assert problem is None
    assert session.ran == [REPAIR_DPKG, PREFLIGHT]
    assert notes == [
        "an interrupted dpkg was repaired (repairInterruptedDpkg: dpkg --configure -a): pp-slow",
        "held packages (left as they are): pp-held",
    ]


async def test_a_repair_that_leaves_packages_unfinished_is_refused_with_dpkgs_message() -> None:
    failed = CommandResult(
        REPAIR_DPKG,
        1,
        "Setting up pp-slow (1.1) ...\n",
        "pp-slow: simulated configuration failure\ndpkg: error processing package pp-slow\n",
    )
    session = StandIn(failed, doctor(AUDIT))
    problem, notes = await preflight_problem(
        as_session(session), step(opted_in=True), first=doctor(AUDIT), repair=True
    )
    assert problem is not None and problem.kind == "DpkgInterrupted"
    assert session.ran == [REPAIR_DPKG, PREFLIGHT]  # tried once, not again and again
    assert f"{REPAIR_DPKG} did not finish them (exit 1: pp-slow: simulated configuration" in problem
    assert "dpkg --audit still says: The following packages" in problem and "pp-slow" in problem
    assert notes == ["held packages (left as they are): pp-held"]


async def test_without_the_opt_in_nothing_runs_and_the_host_is_refused() -> None:
    session = StandIn()
    problem, _ = await preflight_problem(
        as_session(session), step(opted_in=False), first=doctor(AUDIT)
    )
    assert session.ran == []
    assert problem is not None and problem.kind == "DpkgInterrupted"
    assert problem.endswith("run dpkg --configure -a on the host, then patch it again")


async def test_a_dry_run_never_repairs_and_says_the_rollout_would() -> None:
    session = StandIn()
    problem, _ = await preflight_problem(
        as_session(session), step(opted_in=True), first=doctor(AUDIT)
    )
    assert session.ran == []
    assert problem is not None
    assert problem.endswith(
        "the rollout repairs it first (repairInterruptedDpkg), a dry run changes nothing"
    )


async def test_a_held_lock_is_not_repaired_over() -> None:
    session = StandIn()
    problem, _ = await preflight_problem(
        as_session(session), step(opted_in=True), first=doctor(AUDIT, LOCK), repair=True
    )
    assert session.ran == []  # lock_wait 0: refused at once, nothing run
    assert problem is not None and problem.kind == "PackageLockHeld"


def test_approvers_see_the_repair_where_they_see_the_update_command() -> None:
    rollout = step(opted_in=True).job
    notice = RolloutNotice(
        rollout_id="r-repair",
        requester_email="bob@example.com",
        update_command="apt-get -y upgrade",
        repair_interrupted_dpkg=True,
    )
    email = what_runs(notice)
    assert f"upgrade\n\n{REPAIR_SHOWN}\n" in email and REPAIR_DPKG in REPAIR_SHOWN
    assert REPAIR_SHOWN not in what_runs(
        notice.model_copy(update={"repair_interrupted_dpkg": False})
    )
    teams = json.dumps(_what_runs(notice, whole=True)) + json.dumps(_what_runs(notice, whole=False))
    assert teams.count(json.dumps(REPAIR_SHOWN)) == 2  # also when the command does not fit
    request = RolloutInput.model_validate(
        {
            "targetClusters": ["c"],
            "pilotHostCount": 1,
            "approverEmails": ["alice@example.com"],
            "requesterEmail": rollout.requester_email,
            "updateCommand": rollout.update_command,
            "repairInterruptedDpkg": True,
        }
    )
    pieces = WhatRuns.of(request, None).pieces()
    assert pieces[0] == (
        "First, only where dpkg was interrupted (repairInterruptedDpkg)",
        REPAIR_DPKG,
    )
    assert html.escape(REPAIR_SHOWN) in web_what_runs(request, None)
    assert REPAIR_SHOWN in what_is_signed(request, "sha256:" + "0" * 64)


def test_slack_takes_the_opt_in_as_repair_dpkg_and_refuses_other_values() -> None:
    defaults = SlackDefaults()
    command = parse_command('cluster-a repair-dpkg=yes approvers=alice@example.com update="x"')
    assert isinstance(command, PatchCommand)
    plan = apply_defaults(command, defaults, None)
    assert rollout_input(plan, "bob@example.com", ["alice@example.com"]).repair_interrupted_dpkg
    command = parse_command('cluster-a repair-dpkg=no approvers=alice@example.com update="x"')
    assert isinstance(command, PatchCommand)
    plan = apply_defaults(command, defaults, None)
    assert not rollout_input(plan, "bob@example.com", ["alice@example.com"]).repair_interrupted_dpkg
    with pytest.raises(CommandError) as refused:
        parse_command("cluster-a repair-dpkg=maybe")
    assert str(refused.value) == "repair-dpkg: 'maybe' is not yes or no (e.g. repair-dpkg=yes)"
