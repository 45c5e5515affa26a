"""The per-host package report (workflows/packages.py) as people read it in a notification: one
short line per host, and the whole report as a "Packages" section of the e-mail.

The short line is what the Slack thread, the Teams cards and the e-mail show per host ("4
upgraded, 1 kept back, 1 held; reboot required (pp-reboot); 1 conffile left"); the full list is
behind Slack's "Packages" button (bot/slack/package_blocks.py) and in the e-mail's section. A dry
run's "would change" (`apt-get -s`, HostInspection.would_change) is shown the same way.

Everything here is plain text: each channel escapes it for its own format (Slack mrkdwn, HTML).
Package names, versions, apt's reasons and conffile paths come from the hosts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from activities.notify.messages import Message, clip
from workflows.models import HostInspection, RolloutSummary
from workflows.packages import PackageReport

# Reboot packages named in a short line before the rest are counted ("pp-a, pp-b +3").
NAMED_REBOOT_PACKAGES = 2
SHORT_LINE = 300  # characters of a short line at most (a host can name anything)
# The e-mail's section: lines per host and in all before the rest is counted (a 10,000-host
# rollout with hundreds of packages each must still be an e-mail a mail server takes).
EMAIL_HOST_LINES = 2000
EMAIL_LINES = 20_000


def _count(n: int, what: str) -> str:
    return f"{n} {what}"


def short_line(report: PackageReport) -> str:
    """One line for `report`: what changed (zero counts left out), then what needs a person:
    unfinished packages, the reboot and its packages, conffiles left; "no package changed" when
    nothing did. At most SHORT_LINE characters."""
    counts = [
        _count(len(report.upgraded), "upgraded") if report.upgraded else "",
        _count(len(report.installed), "installed") if report.installed else "",
        _count(len(report.removed), "removed") if report.removed else "",
        _count(len(report.kept_back), "kept back") if report.kept_back else "",
        _count(len(report.held), "held") if report.held else "",
    ]
    parts = [", ".join(c for c in counts if c) or "no package changed"]
    if report.unfinished:
        names = ", ".join(f"{p.name} {p.state}" for p in report.unfinished[:2])
        more = f" +{len(report.unfinished) - 2}" if len(report.unfinished) > 2 else ""
        parts.insert(0, f"{len(report.unfinished)} UNFINISHED ({names}{more})")
    if report.reboot_required:
        named = report.reboot_packages[:NAMED_REBOOT_PACKAGES]
        rest = len(report.reboot_packages) - len(named)
        by = f" ({', '.join(named)}{f' +{rest}' if rest > 0 else ''})" if named else ""
        parts.append(f"reboot required{by}")
    if report.conffiles:
        n = len(report.conffiles)
        parts.append(f"{n} conffile{'' if n == 1 else 's'} left (.dpkg-dist/.dpkg-old)")
    return clip("; ".join(parts), SHORT_LINE)


def would_line(inspection: HostInspection) -> str:
    """A dry run's short line for one host: what `apt-get -s` says the update would do
    ("would upgrade 4, install 1"), or that it would change nothing / gave no answer."""
    if not inspection.would_change:
        return "apt-get -s: would change nothing" if inspection.preconditions_ok else ""
    return would_text(inspection.would_change)


def would_text(changes: list[str]) -> str:
    """ "would upgrade 4, install 1, remove 1" for HostInspection.would_change's lines."""
    verbs = [change.split(" ", 1)[0] for change in changes]
    counts = [f"{verb} {verbs.count(verb)}" for verb in ("upgrade", "install", "remove")]
    return clip(f"would {', '.join(c for c in counts if not c.endswith(' 0'))}", SHORT_LINE)


def report_sections(report: PackageReport) -> list[tuple[str, list[str]]]:
    """(heading, lines) for every non-empty part of `report`, in the order a person acts on
    them: unfinished first, then upgraded, installed, removed, kept back (with apt's reason),
    held, the reboot (and because of which packages), conffiles left."""
    sections = [
        (
            "Unfinished (dpkg left them half-way)",
            [f"{p.name} {p.version}: {p.state}" for p in report.unfinished],
        ),
        ("Upgraded", [f"{c.name} {c.old} → {c.new}" for c in report.upgraded]),
        ("Installed", [f"{c.name} {c.new}" for c in report.installed]),
        ("Removed", [f"{c.name} {c.old}" for c in report.removed]),
        ("Kept back", [f"{k.name}: {k.reason}" for k in report.kept_back]),
        ("Held", list(report.held)),
        (
            "Reboot required",
            [f"because of {', '.join(report.reboot_packages) or 'an unnamed package'}"]
            if report.reboot_required
            else [],
        ),
        ("Conffiles left beside the host's own", list(report.conffiles)),
    ]
    return [(f"{heading} ({len(lines)})", lines) for heading, lines in sections if lines]


def email_section(
    summary: RolloutSummary, reports: Mapping[str, PackageReport], more_hint: str
) -> str:
    """The summary e-mail's "Packages" section: per host its short line and every fact of its
    report (a dry run: what `apt-get -s` says would change), or why there is none. Plain text
    ending in a newline; "" when no host has anything to show. Beyond EMAIL_HOST_LINES lines of
    one host or EMAIL_LINES in all, the rest is counted and `more_hint` says where it all is."""
    lines: list[str] = []
    left = EMAIL_LINES

    def add(facts: list[str], indent: str) -> None:
        nonlocal left
        room = max(0, min(EMAIL_HOST_LINES, left))
        lines.extend(f"{indent}{fact}" for fact in facts[:room])
        left -= min(room, len(facts))
        if len(facts) > room:
            lines.append(f"{indent}… and {len(facts) - room} more; {more_hint}")

    if summary.dry_run is not None:
        for found in summary.dry_run:
            if not found.would_change:
                continue
            lines.append(f"  {found.cluster}/{found.hostname}: {would_line(found)}")
            add(found.would_change, "      ")
    else:
        for host in summary.hosts:
            report = reports.get(host.name)
            if report is None:
                if host.packages:  # the report was not readable now: its line still is
                    lines.append(f"  {host.cluster}/{host.name}: {host.packages}")
                continue
            lines.append(f"  {host.cluster}/{host.name}: {short_line(report)}")
            for heading, facts in report_sections(report):
                lines.append(f"    {heading}:")
                add(facts, "      ")
    if not lines:
        return ""
    title = (
        "Packages the update would change (apt-get -s; nothing was changed):"
        if summary.dry_run is not None
        else f"Packages (what the update did on each host; {more_hint}):"
    )
    return "\n".join(["", title, *lines]) + "\n"


def with_packages(message: Message, reports: Mapping[str, PackageReport]) -> Message:
    """`message` carrying `reports` (host -> report) for the channels that render them, its
    plain-text body (the e-mail, the webhook's `text`) extended with them: a host's success gets
    its short line and facts, the summary the "Packages" section. Other events unchanged."""
    notice = message.notice
    hint = f"`patchpilot report {notice.rollout_id}` has all, also as JSON or CSV"
    if message.event == "summary" and notice.summary is not None:
        if notice.summary.dry_run is not None:
            hint = "the rollout's result in the Temporal Web UI has all"
        section = email_section(notice.summary, reports, hint)
        return replace(message, packages=dict(reports), body=message.body + section)
    if message.event == "host-success" and notice.hostname in reports:
        report = reports[notice.hostname or ""]
        facts = [f"  {fact}" for fact in report.lines()[:EMAIL_HOST_LINES]]
        if len(report.lines()) > EMAIL_HOST_LINES:
            facts.append(f"  … and {len(report.lines()) - EMAIL_HOST_LINES} more; {hint}")
        body = message.body + f"\nPackages: {short_line(report)}\n" + "\n".join(facts) + "\n"
        return replace(message, packages=dict(reports), body=body)
    return message
