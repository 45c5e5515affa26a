"""The hosts a rollout selected, as its Slack approval request shows them: per cluster in inventory
order, with the `limit=` pattern that selected them.

What is selected is what the approval shows. A long selection is folded, never silently cut: the
message names the first hosts of each cluster and counts the rest, and a "Show all N hosts" button
(next to Approve / Reject) opens a modal with every host
(https://api.slack.com/surfaces/modals: 100 blocks of 3,000 characters, about 200,000 host
names of 12 characters). Beyond that the modal says how many it could not hold and where they are
listed (`patchpilot status`, the approval e-mail).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slack_sdk.models.blocks import ButtonElement

from bot.slack.text import mrkdwn
from workflows.models import RolloutProgress

# The button that opens the modal with every host (`bot.slack.listeners.on_show_hosts`).
SHOW_HOSTS_ACTION = "patchpilot_show_hosts"
# Host names shown per cluster in the approval message, and characters of the message's host
# lines (its section holds 3,000 with the request's own sentence).
HOSTS_SHOWN = 20
MESSAGE_CHARS = 2200
# Block Kit: a modal's blocks and a section's characters.
VIEW_BLOCKS = 100
SECTION_CHARS = 3000
# Characters of a modal's sections in all: views.open refuses a view over 250 KB of JSON
# (`view_too_large`), which 100 full sections would be.
VIEW_TEXT = 200_000
NAME_CHARS = 80  # a host name longer than this is cut in the listing (Ansible allows any length)


@dataclass(frozen=True)
class Selection:
    """Cluster -> host names in inventory order, each cluster's note (e.g. one machine listed
    under two names), and the Ansible `--limit` pattern, or None for whole clusters."""

    hosts: dict[str, list[str]]
    limit: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    # True when the rollout had not resolved its hosts when the approval request was posted.
    pending: bool = False

    @classmethod
    def of(cls, progress: RolloutProgress, limit: str | None) -> Selection:
        """What the rollout resolved, from its `progress` query."""
        return cls(
            hosts={c.name: [host.name for host in c.hosts] for c in progress.clusters},
            limit=limit,
            notes={cluster.name: cluster.note for cluster in progress.clusters if cluster.note},
        )

    @property
    def total(self) -> int:
        return sum(len(names) for names in self.hosts.values())


def _name(host: str) -> str:
    return mrkdwn(host if len(host) <= NAME_CHARS else host[: NAME_CHARS - 1] + "…")


def limit_line(limit: str) -> str:
    """`limit: `web0*`` and what it means, in mrkdwn (a backtick cannot end the code span)."""
    shown = mrkdwn(limit).replace("`", "'")
    return (
        f"limit: `{shown}` (Ansible host pattern: only the hosts it selects are listed and patched)"
    )


def summary_text(selection: Selection) -> tuple[str, bool]:
    """The approval message's host lines (mrkdwn, at most about MESSAGE_CHARS characters) and
    whether anything was folded (then the message carries the show-all button)."""
    lines: list[str] = []
    used = 0
    folded = False
    if selection.pending:
        lines.append(
            "_The hosts are not resolved yet: the card counts them and `patchpilot status` lists "
            "them once the worker has read the inventory._"
        )
    clusters = list(selection.hosts.items())
    for index, (cluster, names) in enumerate(clusters):
        shown = names[:HOSTS_SHOWN]
        line = f"*{mrkdwn(cluster)}* — {len(names)} host{'' if len(names) == 1 else 's'}: " + (
            ", ".join(_name(name) for name in shown) or "none"
        )
        if len(names) > len(shown):
            line += f" … and {len(names) - len(shown)} more"
            folded = True
        if selection.notes.get(cluster):
            line += f"\n_{mrkdwn(selection.notes[cluster])}_"
        if lines and used + len(line) > MESSAGE_CHARS:
            rest = clusters[index:]
            count = sum(len(names) for _, names in rest)
            lines.append(f"… and {len(rest)} more clusters ({count} hosts)")
            folded = True
            break
        lines.append(line)
        used += len(line) + 1
    if selection.limit is not None:
        lines.append(limit_line(selection.limit))
    return "\n".join(lines), folded


def show_all_button(rollout_id: str, selection: Selection) -> ButtonElement:
    """The button that opens `hosts_view` for `rollout_id`."""
    return ButtonElement(
        text=f"Show all {selection.total} hosts", action_id=SHOW_HOSTS_ACTION, value=rollout_id
    )


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _chunks(names: list[str], limit: int) -> list[tuple[str, int]]:
    """`names` escaped and joined with ", " into texts of at most `limit` characters, each with
    the number of names it holds."""
    chunks: list[tuple[str, int]] = []
    current, count = "", 0
    for name in names:
        piece = _name(name)
        if current and len(current) + 2 + len(piece) > limit:
            chunks.append((current, count))
            current, count = piece, 1
        else:
            current, count = (f"{current}, {piece}" if current else piece), count + 1
    if current:
        chunks.append((current, count))
    return chunks


def hosts_view(rollout_id: str, selection: Selection) -> dict[str, Any]:
    """A modal (views.open) with every selected host, per cluster in inventory order, and the
    limit. Within Slack's 100 blocks; when the hosts need more, the last block counts those left
    out and says where every host is listed."""
    blocks: list[dict[str, Any]] = []
    head = f"Rollout `{mrkdwn(rollout_id)}`: {selection.total} hosts selected"
    if selection.limit is not None:
        head += "\n" + limit_line(selection.limit)
    blocks.append(_section(head))
    budget = VIEW_BLOCKS - 1  # one block kept for the "not shown" line
    left_out = written = 0
    for cluster, names in selection.hosts.items():
        title = f"*{mrkdwn(cluster)}* — {len(names)} host{'' if len(names) == 1 else 's'}"
        if selection.notes.get(cluster):
            title += f"\n_{mrkdwn(selection.notes[cluster])}_"
        chunks = _chunks(names, SECTION_CHARS)
        if len(blocks) + 1 > budget:
            left_out += len(names)
            continue
        blocks.append(_section(title))
        for chunk, count in chunks:
            if len(blocks) + 1 > budget or written + len(chunk) > VIEW_TEXT:
                left_out += count
                continue
            blocks.append(_section(chunk))
            written += len(chunk)
    if left_out:
        blocks.append(
            _section(
                f"… and {left_out} more hosts that do not fit here: every host is listed by "
                f"`patchpilot status {mrkdwn(rollout_id)}` and in the approval e-mail"
            )
        )
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Selected hosts"},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": blocks,
    }
