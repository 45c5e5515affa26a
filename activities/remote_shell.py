"""The shell line a host receives for a command, and back: pid marker, non-interactive
environment, and `sudo -n` for become (Ansible's `ansible_become`)."""

from __future__ import annotations

import contextlib
import re
import shlex

from workflows.families import FAMILY_VAR

# The remote shell is a session leader (sshd calls setsid), so its pid is also its process
# group: printing it first lets a timed-out or cancelled command be killed with its children.
PID_MARKER = "patchpilot-pid="
PID_LINE = re.compile(rb"^" + PID_MARKER.encode() + rb"(\d+)\n")
# Never a question: debconf takes its defaults, needrestart restarts services itself instead of
# asking (NEEDRESTART_MODE, needrestart(1)), dpkg keeps a changed conffile and takes the default
# for the rest (DPKG_FORCE, dpkg(1) since 1.19.5: the --force-confdef --force-confold answers).
NONINTERACTIVE_ENV = "DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a DPKG_FORCE=confdef,confold"
_ENV_PREFIX = f"export {NONINTERACTIVE_ENV}; "
_FAMILY_PREFIX = re.compile(rf"^export {re.escape(NONINTERACTIVE_ENV)} {FAMILY_VAR}=[a-z]+; ")


def sudo_prefix(user: str) -> str:
    """`sudo -n -u USER -- sh -c ` (the quoted script follows)."""
    # -n: never prompt, fail with "a password is required" (sudo(8)); sudo resets the
    # environment, so the non-interactive variables are set inside the shell it starts.
    return f"sudo -n -u {shlex.quote(user)} -- sh -c "


def env_prefix(family: str | None = None) -> str:
    """`export …; ` before every command: the non-interactive environment and, once known, the
    host's OS family (workflows/families.py; a validated word, never text from the host)."""
    if family is None:
        return _ENV_PREFIX
    if not family.isalpha():
        raise ValueError(f"an OS family is a word, not {family!r}")
    return f"export {NONINTERACTIVE_ENV} {FAMILY_VAR}={family}; "


def wrap_command(command: str, become_user: str | None = None, family: str | None = None) -> str:
    """What the host is sent for `command`: the pid marker, the non-interactive environment
    (with `family` as PATCHPILOT_OS_FAMILY), and with `become_user` the command itself run by
    `sudo -n` as that user."""
    inner = env_prefix(family) + command
    if become_user is not None:
        inner = sudo_prefix(become_user) + shlex.quote(inner)
    return f"echo {PID_MARKER}$$ >&2; {inner}"


def _unwrapped(logged: str) -> str:
    rest = logged.removeprefix(f"echo {PID_MARKER}$$ >&2; ")
    if rest.startswith("sudo -n -u "):
        with contextlib.suppress(ValueError, IndexError):
            rest = shlex.split(rest)[-1]
    return _FAMILY_PREFIX.sub("", rest.removeprefix(_ENV_PREFIX), count=1)


def unwrap_command(logged: str) -> str:
    """What the operator's command was, given what the host received (for a detached update,
    the command inside activities/detached.py's attach line)."""
    from activities.detached import unwrap_attach  # imports this module

    rest = _unwrapped(logged)
    return unwrap_attach(rest) or rest


def unwrap_commands(logged: str) -> list[str]:
    """The operator's commands in what the host received: one for a plain line, the update and
    the look commands after it for a detached update, each command of a batch of checks
    (activities/checks.py) for one."""
    from activities.checks import unwrap_checks  # imports this module's users
    from activities.detached import unwrap_attach_all

    rest = _unwrapped(logged)
    return unwrap_attach_all(rest) or unwrap_checks(rest) or [rest]


def kill_command(pid: int, *, become: bool) -> str:
    """The line that kills the command whose shell printed `pid`, with its whole process group
    (its children too): TERM, a second, then KILL. With `become` it runs through `sudo -n` as
    root, since what sudo started belongs to the target user, not to the login user."""
    # `kill -SIG -PGID` without `--`: dash (Debian's sh) rejects `--` in its builtin.
    kill = (
        f"g=$(ps -o pgid= -p {pid} 2>/dev/null | tr -d ' '); g=${{g:-{pid}}}; "
        f"kill -TERM -$g 2>/dev/null; kill -TERM {pid} 2>/dev/null; sleep 1; "
        f"kill -KILL -$g 2>/dev/null; kill -KILL {pid} 2>/dev/null; true"
    )
    return sudo_prefix("root") + shlex.quote(kill) if become else kill
