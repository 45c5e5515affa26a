"""What approvers see is what runs (README "Trust model"): the whole update command and every
script, the clusters with their host counts, the requester, the digest the approvals sign, and
who has approved so far and what is still missing.

The approval request shows it below its buttons; commands and scripts are plain_text sections,
so every character reads as it runs (no mrkdwn formatting, no escaping, emoji codes left as
typed). Text longer than the message has room for is folded, never cut silently: the message
says how many characters are folded and a "Show everything that runs" button opens a modal with
all of it, split over as many sections as it takes (views.open,
https://api.slack.com/surfaces/modals).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import (
    Block,
    ButtonElement,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from bot.slack.text import mrkdwn
from workflows.models import RolloutInput, RolloutProgress
from workflows.repair import REPAIR_DPKG, REPAIR_FIELD

SHOW_RUNS_ACTION = "patchpilot_show_runs"
# Characters of commands and scripts the approval message shows before it folds the rest, and
# how many of them (each a section; Block Kit allows 50 blocks in a message).
MESSAGE_CHARS = 1500
MESSAGE_PIECES = 6
# Characters of one plain_text section in the modal (Block Kit: 3,000), and its blocks (100).
CHUNK = 2900
VIEW_BLOCKS = 100
SUMMARY_CHARS = 3000
SCRIPT_KINDS = ("preDowntimeScripts", "preUpdateScripts", "postUpdateScripts")
# The approval request's Approve / Reject block; with the digest the message shows after a colon
# (decision_block_id). Block Kit: a block_id is at most 255 characters.
DECISION_BLOCK = "patchpilot_decision"
BLOCK_ID_CHARS = 255


def decision_block_id(runs: WhatRuns | None) -> str:
    """The block_id of an approval request's Approve / Reject buttons: DECISION_BLOCK, with the
    digest the message shows and the rollout's run it was posted for (`digest@run`), so that
    a click signs only what was on screen, for that run (Slack echoes a button's block_id in
    the block_actions payload, https://api.slack.com/reference/interaction-payloads/
    block-actions). The buttons' value stays the rollout id."""
    if runs is None or not (runs.digest or runs.run_id):
        return DECISION_BLOCK
    block_id = f"{DECISION_BLOCK}:{runs.digest or ''}" + (f"@{runs.run_id}" if runs.run_id else "")
    return block_id if len(block_id) <= BLOCK_ID_CHARS else DECISION_BLOCK


def shown_binding(block_id: str) -> tuple[str | None, str | None]:
    """(digest, run id) a clicked approval request was posted with, from its block_id; None
    for what it names not (an older message, or another block)."""
    prefix = f"{DECISION_BLOCK}:"
    if not block_id.startswith(prefix):
        return None, None
    digest, _, run = block_id.removeprefix(prefix).partition("@")
    return digest or None, run or None


@dataclass(frozen=True)
class WhatRuns:
    """What one rollout runs and who has said yes to it, for people to read."""

    update_command: str
    update_profile: str | None = None
    scripts: dict[str, list[str]] = field(default_factory=dict)  # kind -> scripts, in order
    repair_dpkg: bool = False  # repairInterruptedDpkg: a command that runs first
    services: list[str] = field(default_factory=list)
    hosts: dict[str, int | None] = field(default_factory=dict)  # cluster -> hosts (None: unknown)
    requester: str = ""
    digest: str | None = None
    run_id: str | None = None  # the rollout's first run (Temporal's), which the message binds
    approved_by: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, request: RolloutInput, progress: RolloutProgress | None) -> WhatRuns:
        """From the rollout's input and (once its hosts are resolved) its progress."""
        counts = {c.name: len(c.hosts) for c in progress.clusters} if progress else {}
        return cls(
            update_command=request.update_command,
            update_profile=request.update_profile,
            repair_dpkg=request.repair_interrupted_dpkg,
            scripts={
                "preDowntimeScripts": list(request.pre_downtime_scripts),
                "preUpdateScripts": list(request.pre_update_scripts),
                "postUpdateScripts": list(request.post_update_scripts),
            },
            services=list(request.service_list),
            hosts={name: counts.get(name) for name in request.target_clusters},
            requester=request.requester_email,
            digest=progress.digest if progress else None,
            approved_by=list(progress.approved_by) if progress else [],
            missing=list(progress.approvals_missing) if progress else [],
        )

    def pieces(self) -> list[tuple[str, str]]:
        """(label, exact text) of the update command and of every script, in the order they
        run on a host."""
        profile = f" (update profile {self.update_profile})" if self.update_profile else ""
        found = [(f"Update command{profile}", self.update_command)]
        if self.repair_dpkg:  # at the preconditions, before the update command
            first = f"First, only where dpkg was interrupted ({REPAIR_FIELD})"
            found.insert(0, (first, REPAIR_DPKG))
        for kind in SCRIPT_KINDS:
            scripts = self.scripts.get(kind) or []
            found += [(f"{kind} {i}/{len(scripts)}", s) for i, s in enumerate(scripts, 1)]
        return found

    def approvals_line(self) -> str:
        """ "approved by alice@…; still needed: cluster-a: 1 more of carol@…" (mrkdwn)."""
        done = f"approved by {', '.join(self.approved_by)}" if self.approved_by else "none yet"
        line = f"*Approvals*: {mrkdwn(done)}"
        if self.missing:
            line += f"; still needed: {mrkdwn('; '.join(self.missing))}"
        return line

    def summary(self) -> str:
        """The clusters with their host counts, services, requester, approvals and digest."""
        known = [n for n in self.hosts.values() if n is not None]
        clusters = ", ".join(
            f"{name} ({'?' if n is None else n} host{'' if n == 1 else 's'})"
            for name, n in self.hosts.items()
        )
        total = f"{sum(known)} hosts" if len(known) == len(self.hosts) else "hosts not resolved"
        lines = [
            f"*What runs* — {mrkdwn(clusters)} · {total}",
            f"*Requester*: {mrkdwn(self.requester)}",
            f"*Services*: {mrkdwn(', '.join(self.services) or 'none')}",
            self.approvals_line(),
        ]
        if self.digest:
            lines.append(f"*Digest the approvals sign*: `{mrkdwn(self.digest)}`")
        text = "\n".join(lines)
        if len(text) > SUMMARY_CHARS:  # thousands of clusters: said, not cut silently
            text = text[: SUMMARY_CHARS - 60] + "\n[… cut at Slack's 3,000 characters a section]"
        return text


def _plain(text: str) -> SectionBlock:
    return SectionBlock(text=PlainTextObject(text=text, emoji=False))


def runs_blocks(info: WhatRuns) -> tuple[list[Block], bool]:
    """The sections the approval message shows, and whether anything was folded (then the
    message needs `show_runs_button`). Each fold says how much is folded."""
    blocks: list[Block] = [SectionBlock(text=MarkdownTextObject(text=info.summary()))]
    budget = MESSAGE_CHARS
    pieces = info.pieces()
    folded = False
    for label, text in pieces[:MESSAGE_PIECES]:
        shown = text[: max(budget, 200)]
        budget -= len(shown)
        note = ""
        if len(shown) < len(text):
            folded = True
            note = (
                f"\n[… {len(text) - len(shown)} more of {len(text)} characters folded: "
                "“Show everything that runs” shows all of it]"
            )
        blocks.append(_plain(f"{label}:\n{shown}{note}"))
    if len(pieces) > MESSAGE_PIECES:
        folded = True
        blocks.append(
            _plain(
                f"[… {len(pieces) - MESSAGE_PIECES} more scripts folded: “Show everything that "
                "runs” shows all of them]"
            )
        )
    return blocks, folded


def show_runs_button(rollout_id: str) -> ButtonElement:
    """The approval message's button that opens `runs_view`."""
    return ButtonElement(
        text="Show everything that runs", action_id=SHOW_RUNS_ACTION, value=rollout_id
    )


def _chunks(text: str) -> Sequence[str]:
    return [text[i : i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]


def runs_view(rollout_id: str, info: WhatRuns) -> dict[str, Any]:
    """The modal with everything that runs, each command and script whole (split over
    sections of CHUNK characters, each labelled with its part), as views.open takes it."""
    blocks: list[Block] = [
        SectionBlock(text=MarkdownTextObject(text=f"Rollout `{mrkdwn(rollout_id)}`")),
        SectionBlock(text=MarkdownTextObject(text=info.summary())),
    ]
    for label, text in info.pieces():
        parts = _chunks(text)
        for index, part in enumerate(parts, 1):
            head = (
                f"{label} ({len(text)} characters)"
                if len(parts) == 1
                else (f"{label}, part {index}/{len(parts)}")
            )
            blocks.append(_plain(f"{head}:\n{part}"))
    if len(blocks) > VIEW_BLOCKS:
        shown = blocks[: VIEW_BLOCKS - 1]
        shown.append(
            _plain(
                f"[{len(blocks) - VIEW_BLOCKS + 1} more sections do not fit one Slack view: "
                "the rollout's input in the Temporal Web UI has all of them]"
            )
        )
        blocks = shown
    view = View(type="modal", title="What runs", close="Close", blocks=blocks)
    return view.to_dict()
