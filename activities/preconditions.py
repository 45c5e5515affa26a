"""What must hold before a host is touched: sudo works (with become), healthy, not already in
maintenance, every service of the rollout healthy, the package manager ready (the pre-flight
doctor, activities/doctor.py). Read-only: nothing here changes a host."""

from __future__ import annotations

import shlex

from activities.doctor import preflight_problem
from activities.host_values import yes_no
from activities.ssh import HostSession
from workflows.models import HostStepInput


def render(template: str, *, service: str | None = None, rollout_id: str | None = None) -> str:
    """Fill a host command template; values are shell-quoted, the template itself is trusted."""
    command = template
    if service is not None:
        command = command.replace("{service}", shlex.quote(service))
    if rollout_id is not None:
        command = command.replace("{rollout_id}", shlex.quote(rollout_id))
    return command


async def sudo_problem(session: HostSession, timeout: float) -> str | None:
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
    return (
        f"sudo -n -u {session.become_user} does not work on {session.host.name} for the login "
        f"user (exit {probe.exit_status}: {probe.tail()}); PatchPilot never types a password: "
        "allow the commands without one (NOPASSWD in sudoers) or turn become off"
    )


async def precondition_problem(
    session: HostSession, step: HostStepInput, notes: list[str] | None = None
) -> str | None:
    """Why this host must not be patched now, or None when it may; the pre-flight doctor's
    notes (held packages, a reboot already pending) are appended to `notes`. Raises
    HostValueError when the maintenance check or the doctor gives an answer that is not one."""
    commands = step.host.commands
    timeout = step.timeout_seconds
    problem = await sudo_problem(session, timeout)
    if problem:
        return problem
    health = await session.run(commands.health_check, timeout, what="the health check")
    if not health.ok:
        return (
            f"host {step.host.name} is not healthy before patching: health check exited "
            f"{health.exit_status}: {health.tail()}"
        )
    flag = await session.run(
        render(commands.maintenance_check, rollout_id=step.job.rollout_id),
        timeout,
        what="the maintenance check",
    )
    if yes_no(flag, step.host.name, "the maintenance check"):
        return (
            f"host {step.host.name} is already in maintenance mode; another change may be in "
            "progress, so it was not touched"
        )
    for service in step.job.service_list:
        state = await session.run(
            render(commands.service_health, service=service), timeout, what=f"checking {service}"
        )
        if not state.ok:
            return (
                f"service {service} on {step.host.name} is not healthy before patching "
                f"({state.stdout.strip() or state.tail()}); patching would hide the cause"
            )
    # The package manager's own state: interrupted dpkg, held locks, free space (doctor.py).
    problem, found = await preflight_problem(session, step)
    if notes is not None:
        notes.extend(found)
    return problem
