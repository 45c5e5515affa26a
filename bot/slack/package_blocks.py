"""The per-host package report in the rollout's Slack thread, collapsed per host.

A host's success (and each host of a batch of successes, and every host in the summary) shows one
short line (activities/notify/packages.py: "4 upgraded, 1 kept back, 1 held; reboot required
(pp-reboot)"); the whole report is behind a "Packages" button that opens a modal (views.open,
https://api.slack.com/surfaces/modals): per host, what was upgraded (old → new), installed,
removed, kept back with apt's reason, held, the reboot and because of which packages, the
conffiles left as .dpkg-dist/.dpkg-old. A dry run's summary shows what `apt-get -s` says the
update would change, the same way.

Everything a host printed (package names, versions, apt's reasons, paths) is escaped for mrkdwn
(`&`, `<`, `>`: https://api.slack.com/reference/surfaces/formatting#escaping), so `<!channel>` or
`<http://x|y>` in a reason reads as those characters and never becomes a mention or a link.

Within Block Kit's limits (https://api.slack.com/reference/block-kit/blocks,
https://api.slack.com/reference/surfaces/views): a section's text 3,000 characters, a button's
value 2,000, 50 blocks a message, 100 a modal, a view under 250 KB (views.open's
`view_too_large`). What does not fit is counted, never cut silently: "… and N more; `patchpilot
report <id>` has all".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import (
    ActionsBlock,
    Block,
    ButtonElement,
    DividerBlock,
    MarkdownTextObject,
    SectionBlock,
)
from slack_sdk.models.views import View

from activities.notify.messages import host_outcome
from activities.notify.packages import report_sections, short_line, would_line, would_text
from bot.slack.text import mrkdwn
from workflows import names
from workflows.models import HostInspection, HostPatchResult, RolloutSummary
from workflows.packages import PackageReport

PACKAGES_ACTION = "patchpilot_show_packages"
BUTTON_VALUE = 2000  # characters of a button's value
CHUNK = 2900  # characters of one section's text we fill (Block Kit: 3,000)
LINE = 1000  # characters of one fact at most (a reason is what a host says: anything)
VIEW_BLOCKS = 100
# Characters of text in one modal. A view must stay under 250 KB of JSON (views.open
# `view_too_large`); 60,000 characters are at most ~180 KB even if every one takes 3 UTF-8 bytes.
VIEW_CHARS = 60_000
MESSAGE_LINES = 2900  # characters of a message's per-host lines (one section)


def button_value(rollout_id: str, hosts: Sequence[str], *, dry_run: bool = False) -> str:
    """The button's value: the rollout and the hosts its modal shows (all of the rollout's when
    they do not fit a value's 2,000 characters, or none are named)."""
    value = json.dumps({"rollout": rollout_id, "hosts": list(hosts), "dryRun": dry_run})
    if len(value) > BUTTON_VALUE:
        value = json.dumps({"rollout": rollout_id, "hosts": [], "dryRun": dry_run})
    return value


def read_value(value: str) -> tuple[str, list[str], bool]:
    """(rollout id, hosts, dry run) of a button's value; a value that is not ours reads as a
    rollout id alone."""
    try:
        data = json.loads(value)
        return str(data["rollout"]), [str(h) for h in data.get("hosts") or []], bool(data["dryRun"])
    except (ValueError, KeyError, TypeError):
        return value, [], False


def packages_button(
    rollout_id: str, hosts: Sequence[str], *, dry_run: bool = False
) -> ButtonElement:
    """The "Packages" button that opens `packages_view`."""
    return ButtonElement(
        text="Packages",
        action_id=PACKAGES_ACTION,
        value=button_value(rollout_id, hosts, dry_run=dry_run),
    )


def _section(text: str) -> SectionBlock:
    return SectionBlock(text=MarkdownTextObject(text=text))


def _fit_lines(lines: list[str], limit: int, more: str) -> str:
    """As many `lines` as fit `limit` characters, then "… and N more <more>"."""
    shown: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        tail = f"\n… and {len(lines) - index} more {more}"
        if used + len(line) + 1 + len(tail) > limit:
            return "\n".join([*shown, tail.strip()])
        shown.append(line)
        used += len(line) + 1
    return "\n".join(shown)


def host_blocks(text: str, host: str, report: PackageReport, rollout_id: str) -> list[Block]:
    """A host's success in the thread: `text` (mrkdwn, as the thread says it), the host's short
    line, and the Packages button beside them."""
    line = f"{text}\n:package: {mrkdwn(short_line(report))}"
    return [
        SectionBlock(
            text=MarkdownTextObject(text=line[:CHUNK]),
            accessory=packages_button(rollout_id, [host]),
        )
    ]


def batch_blocks(text: str, lines: Mapping[str, str], rollout_id: str) -> list[Block]:
    """Several hosts' successes in one message: `text` (mrkdwn), each host's short line (`lines`:
    host -> short line, plain), and one Packages button for those hosts."""
    listed = [f"• *{mrkdwn(host)}*: {mrkdwn(line)}" for host, line in lines.items()]
    return [
        _section(text[:CHUNK]),
        _section(_fit_lines(listed, MESSAGE_LINES, "hosts: the Packages button shows them")),
        ActionsBlock(elements=[packages_button(rollout_id, list(lines))]),
    ]


def summary_lines(summary: RolloutSummary, reports: Mapping[str, PackageReport]) -> list[str]:
    """The summary's per-host lines, each host's package report collapsed to its short line
    (plain text): "cluster-a/a1: done (rebooted)" then "    packages: …"; a dry run's host with
    its verdict and what `apt-get -s` says the update would do."""
    lines: list[str] = []
    if summary.dry_run is not None:
        for found in summary.dry_run:
            verdict = "ok" if found.preconditions_ok else f"REFUSED: {found.reason}"
            reboot = {True: "reboot needed", False: "no reboot", None: "reboot unknown"}[
                found.reboot_required
            ]
            would = would_line(found)
            lines.append(
                f"{found.cluster}/{found.hostname}: {verdict}; {len(found.pending_updates)} "
                f"pending updates; {reboot}{'; ' + would if would else ''}"
            )
        return lines
    for host in summary.hosts:
        lines.append(host_outcome(host, reason_limit=300))
        report = reports.get(host.name)
        packages = short_line(report) if report is not None else host.packages
        if packages:
            lines.append(f"    packages: {packages}")
        if host.notes:  # the preconditions' (held packages, …): host text, escaped by callers
            lines.append(f"    notes: {'; '.join(host.notes)[:LINE]}")
    return lines


def has_packages(summary: RolloutSummary, reports: Mapping[str, PackageReport]) -> bool:
    """Whether the summary has a package report (or a dry run's "would change") to show."""
    if summary.dry_run is not None:
        return any(found.would_change for found in summary.dry_run)
    return bool(reports) or any(host.packages for host in summary.hosts)


def summary_blocks(
    head: str, summary: RolloutSummary, reports: Mapping[str, PackageReport]
) -> list[Block]:
    """The thread's summary with the package reports collapsed: `head` (mrkdwn), the per-host
    lines in a code block, and the Packages button for every host."""
    listed = [mrkdwn(line) for line in summary_lines(summary, reports)]
    body = _fit_lines(listed, CHUNK - 6, "lines: `patchpilot status` has every host")
    return [
        _section(head[:CHUNK]),
        _section(f"```{body}```"),
        ActionsBlock(
            elements=[packages_button(summary.rollout_id, [], dry_run=summary.dry_run is not None)]
        ),
    ]


@dataclass
class HostPackages:
    """One host in the modal: its name, how it ended, and its report (or a dry run's changes)."""

    name: str
    outcome: str
    report: PackageReport | None = None
    would_change: list[str] | None = None
    missing: str = "the update did not run, or the host has no dpkg"  # why no report

    @classmethod
    def of_result(cls, result: HostPatchResult) -> HostPackages:
        how = "done" if result.ok else f"failed at {result.step}"
        host = cls(name=result.hostname, outcome=how, report=result.packages)
        if (
            result.step == names.STEP_UPDATE
        ):  # a failed update's reason names what dpkg left unfinished
            host.missing = f"the update failed: {(result.failure_reason or '')[:LINE]}"
        return host

    @classmethod
    def of_inspection(cls, found: HostInspection) -> HostPackages:
        how = "ok" if found.preconditions_ok else f"REFUSED: {found.reason}"
        return cls(
            name=f"{found.cluster}/{found.hostname}", outcome=how, would_change=found.would_change
        )


def _host_lines(host: HostPackages) -> tuple[str, list[tuple[bool, str]]]:
    """The host's heading, then (is a fact, mrkdwn line) for each heading and fact."""
    head = f"*{mrkdwn(host.name)}* · {mrkdwn(host.outcome)}"
    lines: list[tuple[bool, str]] = []
    if host.would_change is not None:
        head += f"\n{mrkdwn(would_text(host.would_change))}"
        lines += [(True, f"• {mrkdwn(change[:LINE])}") for change in host.would_change]
    elif host.report is None:
        head += f"\nno package report ({mrkdwn(host.missing)})"
    else:
        head += f"\n{mrkdwn(short_line(host.report))}"
        for heading, facts in report_sections(host.report):
            lines.append((False, f"*{mrkdwn(heading)}*"))
            lines += [(True, f"• {mrkdwn(fact[:LINE])}") for fact in facts]
    return head, lines


def packages_view(
    rollout_id: str, hosts: Sequence[HostPackages], *, dry_run: bool = False
) -> dict[str, Any]:
    """The "Packages" modal, as views.open takes it: per host its outcome, short line and every
    fact of its report, in sections of up to CHUNK characters.

    Each host gets a fair share of the view (VIEW_CHARS and VIEW_BLOCKS over the hosts), so one
    host's thousand packages never hide the others' lines; what is past a host's share is
    counted under it, and hosts past the view's room in a last section, each count saying where
    it all is."""
    where = (
        "the rollout's result in the Temporal Web UI (and the summary e-mail) has all"
        if dry_run
        else f"`patchpilot report {mrkdwn(rollout_id)}` has all"
    )
    what = "what the update would change (apt-get -s)" if dry_run else "the package report"
    title = f"Rollout `{mrkdwn(rollout_id)}`: {what} of {len(hosts)} host{'s' * (len(hosts) != 1)}"
    blocks: list[Block] = [_section(title)]
    if not hosts:
        blocks.append(_section("No ended host has a report yet; try again in a moment."))
    share_chars = max(1000, (VIEW_CHARS - len(title)) // max(1, len(hosts)))
    share_blocks = max(2, (VIEW_BLOCKS - 2) // max(1, len(hosts)))  # with its divider
    chars = len(title)
    left_facts = left_hosts = 0
    for host in hosts:
        head, lines = _host_lines(host)
        # A divider and one section, and the last note, must fit.
        if left_hosts or len(blocks) + 3 > VIEW_BLOCKS or chars + len(head) > VIEW_CHARS:
            left_hosts += 1
            left_facts += sum(1 for is_fact, _ in lines if is_fact)
            continue
        mine: list[Block] = [DividerBlock()]
        text = head[: CHUNK - 400]  # each section keeps room for the count of what is left
        used = len(text)
        room = min(share_chars, VIEW_CHARS - chars)
        sections = min(share_blocks, VIEW_BLOCKS - 1 - len(blocks))  # with the divider
        facts = sum(1 for is_fact, _ in lines if is_fact)
        for is_fact, line in lines:
            rest = facts  # the facts not shown yet, this one included
            facts -= is_fact
            note = f"… and {rest} more of {mrkdwn(host.name)}; {where}"[:390]
            if used + len(line) + len(note) + 2 > room:
                text += "\n" + note
                used += len(note) + 1
                break
            if len(text) + len(line) + len(note) + 2 <= CHUNK:
                text += "\n" + line
            elif len(mine) + 2 <= sections:  # this section, and a new one
                mine.append(_section(text))
                text = line
            else:
                text += "\n" + note
                used += len(note) + 1
                break
            used += len(line) + 1
        mine.append(_section(text))
        blocks += mine
        chars += used
    if left_hosts:
        blocks.append(
            _section(
                f"… and {left_hosts} more hosts ({left_facts} package lines): a modal holds "
                f"only so much; {where}"
            )
        )
    view = View(type="modal", title="Packages", close="Close", blocks=blocks)
    return view.to_dict()
