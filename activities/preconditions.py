"""What must hold before a host is touched: sudo works (with become), healthy, not already in
maintenance, every service of the rollout healthy, the package manager ready (the pre-flight
doctor, activities/doctor.py). Read-only: nothing here changes a host, except the repair of an
interrupted dpkg a rollout opts in to (`repairInterruptedDpkg`, workflows/repair.py)."""

from __future__ import annotations

import shlex

from activities.checks import Check, run_checks
from activities.doctor import PREFLIGHT, Refusal, preflight_problem
from activities.host_values import HostValueError, yes_no
from activities.ssh import CommandResult, HostSession
from workflows.models import HostStepInput
from workflows.targets import OWN_FLAG_CHECK, RESUMED_NOTE


def render(template: str, *, service: str | None = None, rollout_id: str | None = None) -> str:
    """Fill a host command template; values are shell-quoted, the template itself is trusted."""
    command = template
    if service is not None:
        command = command.replace("{service}", shlex.quote(service))
    if rollout_id is not None:
        command = command.replace("{rollout_id}", shlex.quote(rollout_id))
    return command


async def sudo_problem(session: HostSession, timeout: float) -> Refusal | None:
    """Why `sudo -n` does not work for this session's become user, or None (also without become).

    sudo(8) with -n never prompts: a password that would be needed ends it with status 1 and
    "sudo: a password is required"; every later command would fail the same way, for a reason
    that reads like something else (a failed health check, "not in maintenance").
    """
    if session.become_user is None:
        return None
    probe = await session.run("true", timeout, what="checking sudo")
    if probe.ok:
        return None
    return Refusal(
        f"sudo -n -u {session.become_user} does not work on {session.host.name} for the login "
        f"user (exit {probe.exit_status}: {probe.tail()}); PatchPilot never types a password: "
        "allow the commands without one (NOPASSWD in sudoers) or turn become off",
        "SudoNeedsPassword",
    )


async def precondition_problem(
    session: HostSession,
    step: HostStepInput,
    notes: list[str] | None = None,
    *,
    repair: bool = False,
    inspecting: bool = False,
) -> Refusal | None:
    """Why this host must not be patched now (a `Refusal`: the sentence and its kind, e.g.
    HostUnhealthy, PackageLockHeld), or None when it may; the pre-flight doctor's
    notes (held packages, a reboot already pending, a repair) are appended to `notes`. Raises
    HostValueError when the maintenance check or the doctor gives an answer that is not one.
    `repair`: repair an interrupted dpkg (the doctor's `preflight_problem`); off for a dry run.
    `inspecting`: a dry run's inspection (the doctor then also counts its read-only commands).

    The checks go to the host as ONE command (activities/checks.py), in the order below, and
    stop where the one-command-each order stopped: the maintenance check, the health check, one
    check per service, then the doctor's PREFLIGHT (its sections, activities/doctor.py). Output
    that cannot be read back section by section is not guessed at: the checks then run one
    command each. The maintenance check comes first: run again after a lost workflow task
    (`step.resumed`), the checks find the host in the maintenance this rollout set
    (`OWN_FLAG_CHECK`), perhaps with its services stopped, and go on without asking the rest (a
    note says so), which a health check that needs those services would otherwise refuse.
    """
    commands = step.host.commands
    timeout = step.timeout_seconds
    problem = await sudo_problem(session, timeout)
    if problem:
        return problem
    services = step.job.service_list
    own = step.resumed and commands.knows_own_flag()
    maintenance_check = OWN_FLAG_CHECK if own else commands.maintenance_check
    checks = [
        # 1 = not in maintenance; 0 refuses the host, (own flag) 2 ends the checks, anything
        # else is no answer.
        Check(render(maintenance_check, rollout_id=step.job.rollout_id), go_on="1"),
        Check(commands.health_check, go_on="0"),
        *(Check(render(commands.service_health, service=s), go_on="0") for s in services),
        Check(PREFLIGHT),
    ]
    ran = await run_checks(session, checks, timeout * len(checks), what="the preconditions")
    results = iter(ran or [])

    async def answer(check: Check, what: str) -> CommandResult:
        found = next(results, None)
        if ran is not None:
            if found is None:  # parse_checks: the batch stopped after the previous check
                raise HostValueError(f"the preconditions on {step.host.name} stopped early")
            return found
        return await session.run(check.command, timeout, what=what)

    flag = await answer(checks[0], "the maintenance check")
    if own and flag.exit_status == 2:
        # Run again after a lost workflow task: this rollout already passed the checks and put
        # the host into maintenance (its services may be stopped); checking again would refuse it.
        if notes is not None:
            notes.append(RESUMED_NOTE)
        return None
    if yes_no(flag, step.host.name, "the maintenance check"):
        return Refusal(
            f"host {step.host.name} is already in maintenance mode; another change may be in "
            "progress, so it was not touched",
            "AlreadyInMaintenance",
        )
    health = await answer(checks[1], "the health check")
    if not health.ok:
        return Refusal(
            f"host {step.host.name} is not healthy before patching: health check exited "
            f"{health.exit_status}: {health.tail()}",
            "HostUnhealthy",
        )
    for service, check in zip(services, checks[2:-1], strict=True):
        state = await answer(check, f"checking {service}")
        if not state.ok:
            return Refusal(
                f"service {service} on {step.host.name} is not healthy before patching "
                f"({state.stdout.strip() or state.tail()}); patching would hide the cause",
                "ServiceUnhealthy",
            )
    # The package manager's own state: interrupted dpkg, held locks, free space (doctor.py).
    doctor = await answer(checks[-1], "the pre-flight check") if ran is not None else None
    problem, found_notes = await preflight_problem(
        session, step, first=doctor, repair=repair, inspecting=inspecting
    )
    if notes is not None:
        notes.extend(found_notes)
    return problem
