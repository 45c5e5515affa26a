"""Block Kit payloads, built with slack_sdk's models so Slack's limits are checked on `to_dict`.

Text is cut to each field's limit here rather than rejected by Slack later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    ConfirmObject,
    ContextBlock,
    HeaderBlock,
    MarkdownTextObject,
    PlainTextObject,
    SectionBlock,
)

from activities.notify import counts_text, hosts_text
from bot.slack.selection import Selection, show_all_button
from bot.slack.selection import summary_text as selection_text
from bot.slack.skip import control_block_id, skip_element
from bot.slack.text import mrkdwn as mrkdwn_escape
from bot.slack.text import plain
from bot.slack.what_runs import WhatRuns, decision_block_id, runs_blocks, show_runs_button
from workflows.models import (
    ClusterProgress,
    HostState,
    Phase,
    RolloutProgress,
    RolloutSummary,
)
from workflows.progress import DRY_RUN_STATES

# The buttons' action_ids: build_app routes clicks on them to the decision handler.
APPROVE_ACTION = "patchpilot_approve"
REJECT_ACTION = "patchpilot_reject"
# The card's control buttons (bot.slack.control): action id -> the rollout update it sends.
CONTROL_ACTIONS = {
    "patchpilot_pause": "pause",
    "patchpilot_resume": "resume",
    "patchpilot_abort": "abort",
}
# Phases in which the card offers its control buttons.
LIVE_PHASES = (Phase.RESOLVING, Phase.AWAITING_APPROVAL, Phase.PREFLIGHT, Phase.PATCHING)
# Block Kit limits (https://api.slack.com/reference/block-kit/blocks): blocks in one message,
# characters of a section's text, of one of its fields, of a header.
MAX_BLOCKS = 50
SECTION_TEXT = 3000
FIELD_TEXT = 2000
HEADER_TEXT = 150
# Clusters shown one section each; the rest are counted, leaving room under MAX_BLOCKS.
MAX_CLUSTER_BLOCKS = 40
# Characters of a message's top-level `text` kept by the card (the fallback in notifications) and
# by the summary (Slack advises under 4,000: https://api.slack.com/methods/chat.postMessage).
CARD_TEXT = 3000
SUMMARY_TEXT = 3900

PHASE_ICON = {
    Phase.RESOLVING: ":mag:",
    Phase.AWAITING_APPROVAL: ":hourglass_flowing_sand:",
    Phase.PREFLIGHT: ":key:",
    Phase.PATCHING: ":gear:",
    Phase.SUCCEEDED: ":white_check_mark:",
    Phase.FAILED: ":x:",
    Phase.REJECTED: ":no_entry_sign:",
    Phase.APPROVAL_TIMED_OUT: ":alarm_clock:",
    Phase.CANCELLED: ":octagonal_sign:",
}


def cut(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else its start and "…" in `limit`."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def code(text: str, limit: int = 500) -> str:
    """`text` as inline code, escaped and cut to `limit` characters; a backtick becomes ' so that
    it cannot end the code span."""
    return "`" + cut(mrkdwn_escape(text).replace("`", "'"), limit) + "`"


class _RolloutRequest(Protocol):
    """What RolloutInput (before the start) and RolloutNotice (after it) both say of a rollout."""

    @property
    def target_clusters(self) -> Sequence[str]: ...
    @property
    def pilot_host_count(self) -> int: ...
    @property
    def service_list(self) -> Sequence[str]: ...
    @property
    def update_command(self) -> str: ...
    @property
    def requester_email(self) -> str: ...
    @property
    def approver_emails(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class CardInfo:
    """What the status card shows; built by the bot (before the start, and for `/patch status`)
    and by the worker's SlackNotifier (after the start). A field that is None is not shown."""

    rollout_id: str
    clusters: list[str]
    pilot: int | None
    services: list[str] | None  # None: not known here (e.g. /patch status), not shown
    update_command: str | None
    requester: str
    approvers: list[str]
    ui_link: str | None = None
    hosts_by_cluster: dict[str, list[str]] = field(default_factory=dict)
    progress: RolloutProgress | None = None
    note: str | None = None
    host_pattern: str | None = None  # the `limit=` pattern that selected the hosts

    @classmethod
    def from_input(
        cls, rollout_id: str, rollout: _RolloutRequest, ui_link: str | None = None, **extra: Any
    ) -> CardInfo:
        """The card from what was asked of the rollout (its RolloutInput, or a notice that
        carries all of it); `extra` sets further fields (`progress`, `note`, …)."""
        return cls._of_request(rollout_id, rollout, ui_link, **extra)

    @classmethod
    def from_progress(
        cls, rollout_id: str, progress: RolloutProgress, ui_link: str | None = None
    ) -> CardInfo:
        """The card from the `progress` query alone (`/patch status`): the input's pilot count,
        services and update command are not part of it and are not shown."""
        return cls(
            rollout_id=rollout_id,
            clusters=[cluster.name for cluster in progress.clusters],
            pilot=None,
            services=None,
            update_command=None,
            requester=progress.requester_email,
            approvers=progress.approver_emails,
            ui_link=ui_link,
            progress=progress,
        )

    @classmethod
    def _of_request(
        cls, rollout_id: str, request: _RolloutRequest, ui_link: str | None, **extra: Any
    ) -> CardInfo:
        return cls(
            rollout_id=rollout_id,
            clusters=list(request.target_clusters),
            pilot=request.pilot_host_count,
            services=list(request.service_list),
            update_command=request.update_command,
            requester=request.requester_email,
            approvers=list(request.approver_emails),
            ui_link=ui_link,
            host_pattern=getattr(request, "host_pattern", None),
            **extra,
        )


def cluster_line(cluster: ClusterProgress, *, dry_run: bool = False) -> str:
    """One cluster's line: done/total, failed, skipped, the first 10 running hosts and their step,
    and the cluster's note in italics; a `dry_run`'s hosts are ready or refused."""
    total = len(cluster.hosts)
    done = cluster.count(HostState.DONE)
    words = DRY_RUN_STATES if dry_run else {"done": "done", "failed": "failed"}
    parts = [f"*{mrkdwn_escape(cluster.name)}*: {done}/{total} {words['done']}"]
    failed = cluster.count(HostState.FAILED)
    skipped = cluster.count(HostState.SKIPPED)
    if failed:
        parts.append(f"{failed} {words['failed']}")
    if skipped:
        parts.append(f"{skipped} skipped")
    running = [host for host in cluster.hosts if host.state == HostState.RUNNING]
    if running:
        now = ", ".join(
            f"{mrkdwn_escape(host.name)}{' (pilot)' if host.pilot else ''} at "
            f"{host.step or 'start'}"
            for host in running[:10]
        )
        parts.append(f"now: {now}")
    line = " · ".join(parts)
    if cluster.note:
        line += f"\n_{mrkdwn_escape(cluster.note)}_"
    return line


def phase_label(progress: RolloutProgress | None) -> str:
    """The phase with its emoji, e.g. ":gear: patching"; "starting" before any progress."""
    if progress is None:
        return ":hourglass_flowing_sand: starting"
    return f"{PHASE_ICON.get(progress.phase, '')} {progress.phase.value}".strip()


def _section(text: str) -> SectionBlock:
    """A mrkdwn section, cut to Slack's 3,000 characters of section text."""
    return SectionBlock(text=MarkdownTextObject(text=cut(text, SECTION_TEXT)))


def _card_fields(info: CardInfo) -> list[str]:
    progress = info.progress
    fields = [
        f"*Phase*\n{phase_label(progress)}",
        f"*Requester*\n{mrkdwn_escape(info.requester)}",
        f"*Approvers*\n{mrkdwn_escape(', '.join(info.approvers))}",
    ]
    if info.pilot is not None:
        fields.append(f"*Pilot hosts per cluster*\n{info.pilot}")
    if info.services is not None:
        fields.append(f"*Services*\n{mrkdwn_escape(', '.join(info.services) or 'none')}")
    if info.update_command is not None:
        fields.append(f"*Update command*\n{_whole_or_said(info.update_command)}")
    if info.host_pattern is not None:
        fields.append(f"*Limit (Ansible host pattern)*\n{code(info.host_pattern, 500)}")
    if progress is not None and progress.paused_by:
        since = progress.paused_since or datetime.now(UTC)
        minutes = int((datetime.now(UTC) - since).total_seconds() // 60)
        fields.append(
            f"*Paused by*\n{mrkdwn_escape(progress.paused_by)} since {since:%H:%M} UTC "
            f"({minutes} min): no new host starts"
        )
    if progress is not None and not progress.decided_by and progress.approved_by:
        fields.append(approvals_field(progress))
    if progress is not None and progress.decided_by:
        verdict = "Rejected" if progress.phase == Phase.REJECTED else "Approved"
        fields.append(f"*{verdict} by*\n{mrkdwn_escape(progress.decided_by)}")
    return fields


def _whole_or_said(command: str) -> str:
    """The command as inline code when it fits a field, else its start and how much of it the
    card leaves out (the approval request shows all of it), never cut silently."""
    escaped = mrkdwn_escape(command).replace("`", "'")
    if len(escaped) <= 1500:
        return f"`{escaped}`"
    return (
        f"`{escaped[:1200]}…` _(the first 1,200 of {len(command)} characters; the approval "
        "request's “Show everything that runs” shows all of it)_"
    )


def approvals_field(progress: RolloutProgress) -> str:
    """The card's field while approvals come in: "*Approvals*\napproved by alice@…; still
    needed: cluster-a: 1 more of carol@…" (mrkdwn)."""
    line = f"*Approvals*\napproved by {mrkdwn_escape(', '.join(progress.approved_by))}"
    if progress.approvals_missing:
        line += f"; still needed: {mrkdwn_escape('; '.join(progress.approvals_missing))}"
    return line


def _progress_sections(progress: RolloutProgress) -> list[Block]:
    """One section per cluster (at most MAX_CLUSTER_BLOCKS), then the failed hosts."""
    shown = progress.clusters[:MAX_CLUSTER_BLOCKS]
    sections: list[Block] = [
        _section(cluster_line(cluster, dry_run=progress.dry_run)) for cluster in shown
    ]
    if len(progress.clusters) > len(shown):
        sections.append(_section(f"… and {len(progress.clusters) - len(shown)} more clusters"))
    failures = [
        f":x: *{mrkdwn_escape(host.name)}* ({mrkdwn_escape(host.cluster)}) at "
        f"{host.step or '?'}: {mrkdwn_escape(host.failure_reason or 'failed')}"
        + (" *[in maintenance]*" if host.in_maintenance else "")
        for host in progress.hosts()
        if host.state == HostState.FAILED
    ]
    if failures:
        sections.append(_section("\n".join(failures)))
    return sections


def status_card(info: CardInfo) -> list[Block]:
    """The rollout's top message: header, fields, clusters, failures, notes and a context line.

    At most MAX_BLOCKS blocks and every text cut to its Block Kit limit
    (https://api.slack.com/reference/block-kit/blocks), however large the rollout.
    """
    progress = info.progress
    blocks: list[Block] = [
        HeaderBlock(
            text=PlainTextObject(
                text=cut(plain(f"Patch rollout: {', '.join(info.clusters)}"), HEADER_TEXT)
            )
        ),
        SectionBlock(
            fields=[MarkdownTextObject(text=cut(text, FIELD_TEXT)) for text in _card_fields(info)]
        ),
    ]
    if progress is not None and progress.clusters:
        blocks.extend(_progress_sections(progress))
    elif info.hosts_by_cluster:
        lines = [
            f"*{mrkdwn_escape(name)}*: 0/{len(hosts)} done"
            for name, hosts in info.hosts_by_cluster.items()
        ]
        blocks.append(_section("\n".join(lines)))
    if progress is not None and progress.waiting_for_window:
        blocks.append(
            _section(f":hourglass_flowing_sand: {mrkdwn_escape(progress.waiting_for_window)}")
        )
    if progress is not None and progress.gate:  # soaking, or held by firing alerts
        blocks.append(_section(f":hourglass_flowing_sand: {mrkdwn_escape(progress.gate)}"))
    message = info.note or (progress.message if progress else None)
    if message:
        blocks.append(_section(mrkdwn_escape(message)))
    if progress is not None and progress.phase in LIVE_PHASES:
        blocks.append(_controls(info.rollout_id, progress))
    context = f"Rollout {code(info.rollout_id, 250)}"
    if info.ui_link:
        context += f" · <{info.ui_link}|Temporal Web UI>"
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=cut(context, FIELD_TEXT))]))
    return blocks[:MAX_BLOCKS]


def _controls(rollout_id: str, progress: RolloutProgress) -> ActionsBlock:
    """Pause (or Resume), Abort, and skipping a pending host (`bot.slack.skip`); the block's id
    names the rollout."""
    first = "patchpilot_resume" if progress.paused_by else "patchpilot_pause"
    elements: list[Any] = [
        ButtonElement(
            text="Resume" if progress.paused_by else "Pause", action_id=first, value=rollout_id
        ),
        _danger_button(
            "Abort",
            "patchpilot_abort",
            rollout_id,
            "Hosts in progress finish their steps; every other host is skipped.",
        ),
    ]
    skip = skip_element(rollout_id, progress)
    if skip is not None:
        elements.append(skip)
    return ActionsBlock(block_id=control_block_id(rollout_id), elements=elements)


def _danger_button(verb: str, action_id: str, rollout_id: str, consequence: str) -> ButtonElement:
    """A red button that asks "<verb> this rollout?" with `consequence` before it acts."""
    return ButtonElement(
        text=verb,
        action_id=action_id,
        value=rollout_id,
        style="danger",
        confirm=ConfirmObject(
            title=f"{verb} this rollout?", text=consequence, confirm=verb, deny="Keep it"
        ),
    )


def card_text(info: CardInfo) -> str:
    """The notification / fallback text of the card (a message's top-level `text`, read as
    mrkdwn, so escaped once), at most CARD_TEXT characters."""
    head = f"Patch rollout {info.rollout_id} ({', '.join(info.clusters)})"
    progress = info.progress
    if progress is None:
        return cut(mrkdwn_escape(f"{head}: starting"), CARD_TEXT)
    hosts = progress.hosts()
    done = sum(1 for host in hosts if host.state == HostState.DONE)
    text = f"{head}: {progress.phase.value}, {done}/{len(hosts)} hosts done"
    return cut(mrkdwn_escape(text), CARD_TEXT)


def approval_request(
    rollout_id: str,
    requester: str,
    approvers: Sequence[str],
    clusters: Sequence[str],
    selection: Selection | None = None,
    runs: WhatRuns | None = None,
) -> list[Block]:
    """The thread message with Approve / Reject; `approvers` are mentions or e-mail addresses.
    With `selection`: the hosts selected per cluster and the limit (`bot.slack.selection`), a
    long list folded behind a "Show all N hosts" button. With `runs`: below the buttons, what
    runs, whole or folded behind "Show everything that runs" (`bot.slack.what_runs`)."""
    text = (
        f"{' '.join(approvers)}: {requester} asks to patch *{mrkdwn_escape(', '.join(clusters))}* "
        f"(rollout {code(rollout_id, 250)}). Nothing is touched until an approver other than "
        "the requester approves."
    )
    folded = False
    if selection is not None:
        hosts, folded = selection_text(selection)
        text += "\n" + hosts
    shown, runs_folded = runs_blocks(runs) if runs is not None else ([], False)
    return [
        _section(text),
        ActionsBlock(
            block_id=decision_block_id(runs),
            elements=[
                ButtonElement(
                    text="Approve", action_id=APPROVE_ACTION, value=rollout_id, style="primary"
                ),
                _danger_button(
                    "Reject",
                    REJECT_ACTION,
                    rollout_id,
                    "No host will be touched and the rollout ends.",
                ),
            ]
            + ([show_all_button(rollout_id, selection)] if selection and folded else [])
            + ([show_runs_button(rollout_id)] if runs_folded else []),
        ),
        *shown,
    ]


def decided(verdict: str, by: str, rollout_id: str) -> list[Block]:
    """The approval message once decided: no more buttons."""
    icon = ":white_check_mark:" if verdict == "Approved" else ":no_entry_sign:"
    follow = "the rollout starts now." if verdict == "Approved" else "nothing will be touched."
    return [_section(f"{icon} {verdict} by {by} — rollout {code(rollout_id, 250)}: {follow}")]


def summary_message(summary: RolloutSummary) -> str:
    """The thread's last message: `summary_head` and the per-host table of
    `activities.notify.hosts_text` in a code block."""
    head = summary_head(summary)
    body = hosts_text(summary).strip()
    return cut(f"{head}\n```{mrkdwn_escape(body)}```" if body else head, SUMMARY_TEXT)


def summary_head(summary: RolloutSummary) -> str:
    """Counts, duration (whole seconds), the rollout's message, the controls used (who paused,
    resumed, skipped which host and why, aborted; when) and the gates' decisions (mrkdwn)."""
    icon = PHASE_ICON.get(summary.phase, "")
    head = (
        f"{icon} *Rollout {summary.phase.value}* — {counts_text(summary)}, "
        f"duration {summary.duration_seconds:.0f}s\n"
        f"{mrkdwn_escape(summary.message)}"
    )
    if summary.controls:  # pause, resume, skip, abort: who and when
        head += "\n*Controls*\n" + "\n".join(f"• {mrkdwn_escape(c)}" for c in summary.controls)
    if summary.gates:  # each health gate's decision and its numbers
        head += "\n*Gates*\n" + "\n".join(f"• {mrkdwn_escape(g)}" for g in summary.gates)
    return head


def as_dicts(blocks: Sequence[Block]) -> list[dict[str, Any]]:
    """Validated JSON for the Web API (raises SlackObjectFormationError past a limit)."""
    return [block.to_dict() for block in blocks]
