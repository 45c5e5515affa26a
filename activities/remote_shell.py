"""The shell line a host receives for a command, and back: pid marker, non-interactive
environment, and `sudo -n` for become (Ansible's `ansible_become`)."""

from __future__ import annotations

import contextlib
import re
import shlex

# The remote shell is a session leader (sshd calls setsid), so its pid is also its process
# group: printing it first lets a timed-out or cancelled command be killed with its children.
PID_MARKER = "patchpilot-pid="
PID_LINE = re.compile(rb"^" + PID_MARKER.encode() + rb"(\d+)\n")
# Never a question: debconf takes its defaults, needrestart restarts services itself instead of
# asking (NEEDRESTART_MODE, needrestart(1)), dpkg keeps a changed conffile and takes the default
# for the rest (DPKG_FORCE, dpkg(1) since 1.19.5: the --force-confdef --force-confold answers).
NONINTERACTIVE_ENV = "DEBIAN_FRONTEND=noninteractive NEEDRESTART_MODE=a DPKG_FORCE=confdef,confold"
_ENV_PREFIX = f"export {NONINTERACTIVE_ENV}; "


def sudo_prefix(user: str) -> str:
    """`sudo -n -u USER -- sh -c ` (the quoted script follows)."""
    # -n: never prompt, fail with "a password is required" (sudo(8)); sudo resets the
    # environment, so the non-interactive variables are set inside the shell it starts.
    return f"sudo -n -u {shlex.quote(user)} -- sh -c "


def wrap_command(command: str, become_user: str | None = None) -> str:
    """What the host is sent for `command`: the pid marker, the non-interactive environment,
    and with `become_user` the command itself run by `sudo -n` as that user."""
    inner = _ENV_PREFIX + command
    if become_user is not None:
        inner = sudo_prefix(become_user) + shlex.quote(inner)
    return f"echo {PID_MARKER}$$ >&2; {inner}"


def unwrap_command(logged: str) -> str:
    """What the operator's command was, given what the host received (for a detached update,
    the command inside activities/detached.py's attach line)."""
    rest = logged.removeprefix(f"echo {PID_MARKER}$$ >&2; ")
    if rest.startswith("sudo -n -u "):
        with contextlib.suppress(ValueError, IndexError):
            rest = shlex.split(rest)[-1]
    rest = rest.removeprefix(_ENV_PREFIX)
    from activities.detached import unwrap_attach  # imports this module

    return unwrap_attach(rest) or rest


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
