"""Repairing an interrupted dpkg before a host is patched: the rollout's opt-in
`repairInterruptedDpkg` (issue 15, item 4). Pure, so that what runs (activities/doctor.py), what
approvers are shown (the approval e-mail, Teams card, link page, Slack message, `patchpilot
sign`) and what the approvals sign (workflows/proof.py `rollout_digest`) are the same words.

Without it, a host whose `dpkg --audit` lists unfinished packages is refused ("run dpkg
--configure -a"). With it, the pre-flight doctor runs REPAIR_DPKG there (through sudo with
become, like every command), only when no dpkg/apt lock is held, audits again and refuses only if
packages are still unfinished. Keep-old conffiles and no questions: the same choices as the
default update profiles (workflows/targets.py).
"""

from __future__ import annotations

__all__ = ["REPAIR_DPKG", "REPAIR_FIELD", "REPAIR_SHOWN"]

REPAIR_DPKG = "DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold --configure -a"
REPAIR_FIELD = "repairInterruptedDpkg"
# What approvers read, next to the update command, when the rollout opts in (plain text).
REPAIR_SHOWN = (
    f"{REPAIR_FIELD}: yes. Where dpkg --audit lists unfinished packages (and no package lock is "
    f"held), this runs on the host before anything else: {REPAIR_DPKG}"
)
