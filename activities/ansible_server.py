"""A fork server for `ansible-inventory`, run as its own process (`python
activities/ansible_server.py`, by `activities.ansible_runner`); PatchPilot's own processes never
import Ansible.

Starting Python and importing Ansible costs about 0.4 s of the 0.5 s an `ansible-inventory --list`
of a small inventory takes. This process imports Ansible once, then forks a fresh child per
request, which runs `ansible-inventory` exactly as the command line does (`InventoryCLI`, its
errors, warnings and exit code) and exits. Every reading starts from the state right after the
import: nothing Ansible caches while reading an inventory (found group_vars files, plugin
options, warnings already shown) outlives the child, so a changed source is read afresh.

Protocol, one JSON object per line: the client writes {"argv": [...], "stdout": PATH, "stderr":
PATH}; the child writes the command's output to the two files; the server answers {"rc": CODE}
once the child has exited. The server exits at the end of its input (its client is gone).
Environment, working directory and ansible.cfg are the server's own, fixed at its start: the
client starts a new server when one of them changes (`activities.ansible_runner`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys

# What `ansible-inventory --list` imports beyond `ansible.cli.inventory` (ansible-core 2.19,
# `python -X importtime`): about 0.2 s a reading when left to each child. Code only: importing
# a module reads no inventory, configuration or plugin path.
WARM_MODULES = (
    "ansible.plugins.inventory",
    "ansible.plugins.vars",
    "ansible.plugins.cache",
    "ansible.plugins.connection",
    "ansible.plugins.shell",
    "ansible.plugins.doc_fragments",
    "ansible.playbook.play_context",
    "ansible.utils.shlex",
    "tomllib",
)


def _child(request: dict[str, object]) -> None:
    """In the forked child: run `ansible-inventory` with the request's arguments and exit."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, key in ((1, "stdout"), (2, "stderr")):
            out = os.open(str(request[key]), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(out, fd)
            os.close(out)
        from ansible.cli.inventory import main

        argv = [str(part) for part in request["argv"]]  # type: ignore[attr-defined]
        main(["ansible-inventory", *argv])
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException as error:  # reported like Ansible's own unexpected errors
        print(f"[ERROR]: ansible-inventory failed: {error!r}", file=sys.stderr)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve() -> None:
    """Answer requests from standard input until it ends."""
    # The imports that make each reading cheap; a missing Ansible shows here, on stderr.
    import ansible.cli.inventory  # noqa: F401

    for name in WARM_MODULES:
        with contextlib.suppress(ImportError):  # another Ansible version: imported when needed
            importlib.import_module(name)

    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    # Run as a file: its directory (PatchPilot's activities/) must not shadow a module that
    # Ansible or an inventory plugin imports.
    if sys.path and os.path.realpath(sys.path[0]) == os.path.dirname(os.path.realpath(__file__)):
        sys.path.pop(0)
    serve()
