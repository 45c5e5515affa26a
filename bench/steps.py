"""The per-host steps every contender runs, as shell commands, and the equivalent Ansible playbook.

They are exactly the commands PatchPilot sends to a host with its default host commands (see
`workflows.models.HostCommands` and `activities.host_steps`), in the same order:
preconditions (not in maintenance, health, services healthy), maintenance on, stop services,
update, [reboot check], start services (reverse order), health check, maintenance off. The default
drain check, `true`, is not sent: PatchPilot knows its answer without a session
(`workflows.targets.is_no_op`), and no contender runs what PatchPilot does not.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml

from workflows.targets import DEFAULT_COMMANDS, is_no_op

SERVICES = ("nginx", "postgresql")
UPDATE = "apt-get update && apt-get -y upgrade"
FLAG = "/var/lib/patchpilot/maintenance"


BOOT_ID = "cat /proc/sys/kernel/random/boot_id"
# PatchPilot's default: a `case` over the OS family PatchPilot exports (workflows/families.py);
# a contender that does not export it runs the `*)` branch (exit 3), and this step may go
# either way (host_commands), so every contender still runs the same text.
REBOOT_REQUIRED = DEFAULT_COMMANDS.reboot_required_check


def host_commands(
    rollout_id: str,
    services: tuple[str, ...] = SERVICES,
    update: str = UPDATE,
    *,
    reboot_check: bool = True,
) -> list[tuple[str, bool | None]]:
    """(command, expected success) in PatchPilot's order: the maintenance check must fail, the
    reboot-required check may go either way (None).

    ``reboot_check``: after the update, read the boot id and check whether a reboot is required,
    as PatchPilot does with its default reboot policy (a real patch run needs to know); without it
    the steps are exactly issue 6's list.
    """
    steps: list[tuple[str, bool | None]] = [(f"test -e {FLAG}", False), ("true", True)]
    steps += [(f"systemctl is-active {shlex.quote(s)}", True) for s in services]
    steps.append((f"mkdir -p /var/lib/patchpilot && echo {shlex.quote(rollout_id)} > {FLAG}", True))
    steps += [(f"systemctl stop {shlex.quote(s)}", True) for s in services]
    if not is_no_op(DEFAULT_COMMANDS.drain_check):
        steps.append((DEFAULT_COMMANDS.drain_check, True))
    steps.append((update, True))
    if reboot_check:
        steps += [(BOOT_ID, True), (REBOOT_REQUIRED, None)]
    steps += [(f"systemctl start {shlex.quote(s)}", True) for s in reversed(services)]
    steps += [(f"systemctl is-active {shlex.quote(s)}", True) for s in services]
    steps.append((f"rm -f {FLAG}", True))
    return steps


def playbook(
    rollout_id: str,
    concurrency: int,
    services: tuple[str, ...] = SERVICES,
    *,
    reboot_check: bool = True,
) -> list:
    """A rolling Ansible play with the same commands: one `shell` task per command."""
    tasks = []
    steps = host_commands(rollout_id, services, reboot_check=reboot_check)
    for index, (command, ok) in enumerate(steps, start=1):
        task: dict = {"name": f"step {index}: {command[:60]}", "ansible.builtin.shell": command}
        if ok is False:
            task["register"] = "check"
            task["failed_when"] = "check.rc == 0"
        elif ok is None:
            task["failed_when"] = False
        task["changed_when"] = False
        tasks.append(task)
    return [
        {
            "name": "patch",
            "hosts": "all",
            "gather_facts": False,
            "serial": concurrency,
            "max_fail_percentage": 0,
            "tasks": tasks,
        }
    ]


def write_ansible_project(
    directory: Path,
    *,
    rollout_id: str,
    concurrency: int,
    private_key: Path,
    known_hosts: Path,
    services: tuple[str, ...] = SERVICES,
    reboot_check: bool = True,
) -> tuple[Path, Path]:
    """ansible.cfg (tuned: pipelining, ControlPersist, no fact gathering) and the playbook."""
    directory.mkdir(parents=True, exist_ok=True)
    play = directory / "patch.yml"
    plays = playbook(rollout_id, concurrency, services, reboot_check=reboot_check)
    play.write_text(yaml.safe_dump(plays, sort_keys=False))
    ssh_args = " ".join(
        [
            "-o ControlMaster=auto",
            "-o ControlPersist=30s",
            f"-o UserKnownHostsFile={known_hosts}",
            "-o StrictHostKeyChecking=yes",
            "-o IdentitiesOnly=yes",
            "-o PreferredAuthentications=publickey",
        ]
    )
    cfg = directory / "ansible.cfg"
    cfg.write_text(
        "\n".join(
            [
                "[defaults]",
                f"forks = {concurrency}",
                "host_key_checking = True",
                "interpreter_python = /usr/bin/python3",
                "gathering = explicit",
                "retry_files_enabled = False",
                f"private_key_file = {private_key}",
                f"local_tmp = {directory / 'tmp'}",
                "",
                "[ssh_connection]",
                "pipelining = True",
                f"ssh_args = {ssh_args}",
                f"control_path_dir = {directory / 'cp'}",
                "",
            ]
        )
    )
    return cfg, play
