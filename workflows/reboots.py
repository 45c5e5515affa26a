"""The reboot decision (spec step 10): the rollout's reboot policy and the host's answer to its
reboot-required check, after the update.

One rule for both places that decide: `RebootHostActivity` (activities/host_steps.py), which reads
the host itself, and the host workflow, when the update's own SSH command already brought the
answer back (`RebootLook`, activities/detached.py) and no reboot is due, so the host needs no
session of its own for it.
"""

from __future__ import annotations

from workflows.fields import ContractModel, RebootPolicy
from workflows.targets import HostCommands

__all__ = ["RebootLook", "RebootResult", "look_commands", "reboot_decision"]


class RebootLook(ContractModel):
    """What the host answered right after its update finished, in the update's own SSH command:
    its boot id (HostCommands.boot_id) and whether its reboot-required check said yes (exit 0;
    1 is no, HostCommands.reboot_required_check)."""

    boot_id: str
    reboot_required: bool


class RebootResult(ContractModel):
    """RebootHostActivity's answer: whether it rebooted, the boot id it read before, and why."""

    rebooted: bool
    boot_id_before: str = ""
    reason: str = ""


def look_commands(policy: RebootPolicy, commands: HostCommands) -> list[str] | None:
    """What the update's command reads after the run for the decision (the boot id, then the
    reboot-required check), or None with policy `always`: that reboot is decided by
    RebootHostActivity whatever the host says, and it reads the host itself."""
    if policy == "always":
        return None
    return [commands.boot_id, commands.reboot_required_check]


def reboot_decision(policy: RebootPolicy, reboot_required: bool) -> tuple[bool, str]:
    """(whether to reboot, the reason the host's result gives) for `policy` and the host's
    reboot-required answer."""
    if policy == "always":
        return True, "reboot required" if reboot_required else "policy always"
    if policy == "if-required" and reboot_required:
        return True, "reboot required"
    if reboot_required:
        return False, "a reboot is pending but the policy is never"
    return False, "no reboot required" if policy == "if-required" else "policy never"
