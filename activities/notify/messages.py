"""What each rollout event says: the `Message` every channel takes, the `Notifier` protocol a
channel implements, and one builder per event.

A Message is e-mail shaped (recipients, subject, plain-text body) and keeps the `RolloutNotice` it
was built from, so a channel with richer rendering (Teams cards, Slack blocks, the JSON webhook)
can draw on the notice itself. Who hears of what is decided here: a host's own start and success
go to the requester only; the approval request to the approvers; a failure and the summary to the
requester and the approvers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from workflows.models import HostProgress, RolloutNotice, RolloutSummary
from workflows.packages import PackageReport
from workflows.progress import DRY_RUN_STATES
from workflows.repair import REPAIR_SHOWN

HOSTS_LISTED = 50  # hosts named per cluster in the approval e-mail; the rest are counted


@dataclass(frozen=True)
class Message:
    """One rollout event as it is sent.

    `event` is one of routing.EVENTS ("approval-request", "host-start", …) or, for a report about a
    channel's own trouble, a name outside them ("teams-error"); `recipients` are e-mail addresses
    (empty: chat channels only); `body` is plain text ending in a newline; `packages` maps a
    host to its package report where the event has them (a host's success, the summary: read by
    activities/notify/reports.py, shown by activities/notify/packages.py and each channel).
    """

    event: str
    recipients: list[str]
    subject: str
    body: str
    notice: RolloutNotice
    packages: Mapping[str, PackageReport] = field(default_factory=dict)


class Notifier(Protocol):
    """A channel. `name` is its channel name in `notify_routes` ("email", "teams", "webhook",
    "slack"); `send` answers whether the message was delivered (False: nothing to send, or a
    refusal that was logged). Raising fails the notification activity, and Temporal's retry sends
    the message again on every channel: raise only for an error a retry can fix."""

    name: str

    async def send(self, message: Message) -> bool: ...


def wanted(notifier: Notifier, message: Message) -> bool:
    """Whether `notifier` would deliver `message`: its `wants(message)` where it has one (the
    routing table, Slack without a thread, e-mail without recipients say no), else True.

    Asked before work only a delivery needs: a host's success and the summary read the package
    reports from Temporal (activities/notify/reports.py), a history read per host that no
    channel may show."""
    wants = getattr(notifier, "wants", None)
    return True if wants is None else bool(wants(message))


def clip(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, the cut marked with "…"."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failure_place(notice: RolloutNotice) -> str:
    """Where a failure happened: "<host> at step <step>", or "the rollout" outside any host."""
    return f"{notice.hostname} at step {notice.step}" if notice.hostname else "the rollout"


def host_outcome(
    host: HostProgress, reason_limit: int | None = None, *, dry_run: bool = False
) -> str:
    """One host's line in a summary: "<cluster>/<host>: <state>[ at <step>: <reason>]", then
    " (rebooted)" and " [IN MAINTENANCE]" where they apply; the reason clipped to `reason_limit`
    characters when given. In a `dry_run` the state reads "ready" or "refused"."""
    state = DRY_RUN_STATES.get(host.state.value, host.state.value) if dry_run else host.state.value
    line = f"{host.cluster}/{host.name}: {state}"
    if host.failure_reason:
        reason = (
            host.failure_reason if reason_limit is None else clip(host.failure_reason, reason_limit)
        )
        line += f" at {host.step}: {reason}"
    if host.state == "skipped" and host.note:  # who skipped it and why, or the end that did
        line += f" ({host.note})"
    if host.rebooted:
        line += " (rebooted)"
    if host.in_maintenance:
        line += " [IN MAINTENANCE]"
    return line


def _unique(*groups: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for group in groups:
        for address in group:
            seen.setdefault(address, None)
    return list(seen)


def _everyone(notice: RolloutNotice) -> list[str]:
    """The requester and every approver, each once: who hears of a failure and of the end."""
    return _unique([notice.requester_email], notice.approver_emails)


def _of_rollout(text: str, notice: RolloutNotice) -> str:
    return f"{text} (rollout {notice.rollout_id}).\n"


def _host_message(notice: RolloutNotice, event: str, subject: str, body: str) -> Message:
    """A host's own event, for the requester only."""
    return Message(
        event=event,
        recipients=[notice.requester_email],
        subject=f"[PatchPilot] {subject} {notice.hostname} ({notice.cluster})",
        body=_of_rollout(body, notice),
        notice=notice,
    )


def _hosts_block(notice: RolloutNotice) -> str:
    """Per cluster its host count and first HOSTS_LISTED hosts (the rest in `_every_host`), its
    note, then the limit pattern that selected them."""
    lines = []
    for cluster, hosts in notice.hosts_by_cluster.items():
        more = len(hosts) - HOSTS_LISTED
        shown = ", ".join(hosts[:HOSTS_LISTED]) + (
            f" … and {more} more (every host is listed at the end)" if more > 0 else ""
        )
        lines.append(f"  {cluster} ({len(hosts)} hosts): {shown}")
        if notice.cluster_notes.get(cluster):
            lines.append(f"    note: {notice.cluster_notes[cluster]}")
    if notice.host_pattern and lines:
        lines.append(
            f"  limit: {notice.host_pattern} (Ansible host pattern: only the hosts it selects "
            "are listed and patched)"
        )
    return "\n".join(lines) or "  " + ", ".join(notice.target_clusters)


def _every_host(notice: RolloutNotice) -> str:
    """When a cluster has more than HOSTS_LISTED hosts: every selected host, one per line, per
    cluster in inventory order (folded to the end of the e-mail, never cut); else ""."""
    if all(len(hosts) <= HOSTS_LISTED for hosts in notice.hosts_by_cluster.values()):
        return ""
    lines = ["", "Every selected host:"]
    for cluster, hosts in notice.hosts_by_cluster.items():
        lines.append(f"  {cluster} ({len(hosts)} hosts):")
        lines.extend(f"    {host}" for host in hosts)
    return "\n".join(lines) + "\n"


SCRIPT_KINDS = {
    "preDowntimeScripts": "Before downtime (each host, before maintenance mode)",
    "preUpdateScripts": "Before the update (each host, services stopped and drained)",
    "postUpdateScripts": "After the update (each host, services started, before health checks)",
}


def host_count(notice: RolloutNotice) -> int:
    """How many hosts the approval request covers (all clusters)."""
    return sum(len(hosts) for hosts in notice.hosts_by_cluster.values())


def script_sections(notice: RolloutNotice) -> list[tuple[str, str]]:
    """(heading, script) for every script of the notice, in the order they run on a host."""
    return [
        (f"{SCRIPT_KINDS.get(kind, kind)}, script {index} of {len(scripts)}", script)
        for kind, scripts in notice.scripts.items()
        for index, script in enumerate(scripts, 1)
    ]


def _indented(text: str) -> str:
    return "\n".join(f"    {line}" for line in text.splitlines() or [""])


def what_runs(notice: RolloutNotice) -> str:
    """Everything the approval covers, in full (never cut: an approver must read what runs): the
    update command and its profile, every script, and the digest the signed approvals bind.
    Plain text, lines indented by four spaces, ending in a newline."""
    profile = f" (update profile {notice.update_profile})" if notice.update_profile else ""
    lines = [
        f"Update command{profile}, run on every host as written:",
        "",
        _indented(notice.update_command),
        "",
    ]
    if notice.repair_interrupted_dpkg:  # a command too: approvers see it (workflows/repair.py)
        lines.extend([REPAIR_SHOWN, ""])
    for heading, script in script_sections(notice):
        lines.extend([f"{heading}:", "", _indented(script), ""])
    if not notice.scripts:
        lines.extend(["Scripts: none", ""])
    if notice.digest:
        lines.append(
            f"Digest of exactly what runs (clusters, hosts, command, scripts, services): "
            f"{notice.digest}\nAn approval is signed for this digest and holds for nothing else."
        )
    return "\n".join(lines) + "\n"


def approval_request(
    notice: RolloutNotice,
    *,
    links: Callable[[RolloutNotice, str], tuple[str, str]] | None = None,
    approver: str | None = None,
) -> Message:
    """The approval e-mail to every approver but the requester, telling how to decide from a
    terminal. With `links` and `approver`: that approver's personal copy, to them alone, carrying
    their own signed Approve / Reject URLs (`links(notice, approver)` -> (approve, reject))."""
    approvers = [a for a in notice.approver_emails if a != notice.requester_email]
    how = (
        f"To approve:  patchpilot approve {notice.rollout_id} --as <your e-mail> [--key KEY]\n"
        f"To reject:   patchpilot reject {notice.rollout_id} --as <your e-mail> [--key KEY]\n"
        "(--key: your own SSH key, which signs the decision when an approval policy applies)\n"
    )
    recipients = _unique(approvers)
    if links is not None and approver is not None:
        approve_url, reject_url = links(notice, approver)
        recipients = [approver]
        how = (
            f"Your personal links (as {approver}; do not forward this e-mail):\n"
            f"  Approve: {approve_url}\n"
            f"  Reject:  {reject_url}\n"
            "Each link opens a confirmation page; nothing happens until you press its button.\n\n"
            f"Or from a terminal: patchpilot approve|reject {notice.rollout_id} --as {approver}\n"
        )
    body = (
        f"{notice.requester_email} asks to patch these hosts (rollout {notice.rollout_id}):\n\n"
        f"{_hosts_block(notice)}\n\n"
        f"Clusters: {', '.join(notice.target_clusters)} ({host_count(notice)} hosts in all)\n"
        f"Pilot hosts per cluster: {notice.pilot_host_count}\n"
        f"Services stopped and restarted: {', '.join(notice.service_list) or 'none'}\n\n"
        f"{what_runs(notice)}\n"
        f"{how}"
        "Nothing is touched until the approvals it needs, never the requester's, are given.\n"
        f"{_every_host(notice)}"
    )
    return Message(
        event="approval-request",
        recipients=recipients,
        subject=f"[PatchPilot] Approval needed: patch {', '.join(notice.target_clusters)}",
        body=body,
        notice=notice,
    )


def start_notice(notice: RolloutNotice) -> Message:
    """A host's patching has started (the spec's start notification)."""
    return _host_message(
        notice,
        "host-start",
        "Patching",
        f"Patching started on {notice.hostname} in {notice.cluster}",
    )


def success_notice(notice: RolloutNotice) -> Message:
    """A host is patched, healthy and out of maintenance mode (the spec's success notification)."""
    return _host_message(
        notice,
        "host-success",
        "Patched",
        f"{notice.hostname} in {notice.cluster} was patched, its services are healthy and "
        "it is out of maintenance mode",
    )


def wave_notice(notice: RolloutNotice) -> Message:
    """A wave starts, or the rollout waits (for a maintenance window): chat only, no recipients,
    since a wave is too small an event for an e-mail."""
    what = notice.waiting or f"Starting {notice.wave}"
    return Message(
        event="wave", recipients=[], subject=what, body=_of_rollout(what, notice), notice=notice
    )


def failure_alert(notice: RolloutNotice) -> Message:
    """A host (or the rollout itself) failed and the rollout stops: to requester and approvers."""
    return Message(
        event="failure",
        recipients=_everyone(notice),
        subject=f"[PatchPilot] FAILED: {failure_place(notice)} (rollout {notice.rollout_id})",
        body=f"{notice.failure_details}\n\nThe rollout stops: no further host will be touched.\n"
        f"Check it with: patchpilot status {notice.rollout_id}\n",
        notice=notice,
    )


def counts_text(summary: RolloutSummary) -> str:
    """ "patched 3, failed 0, skipped 1" (a dry run: "ready 2, refused 1, skipped 0"; it patches
    nothing: `RolloutSummary.counts`)."""
    return ", ".join(f"{word} {n}" for word, n in summary.counts())


def summary_text(summary: RolloutSummary) -> str:
    """The rollout's end as plain text: phase, message, counts, the controls used (pause, resume,
    skip, abort: who, when, why), then one line per host (or, for a dry run, what each host would
    need). Also what `patchpilot status` prints for an ended rollout.
    """
    lines = [
        f"Rollout {summary.rollout_id}: {summary.phase.value}",
        summary.message,
        f"{counts_text(summary)}, duration {summary.duration_seconds:.0f}s",
    ]
    if summary.controls:
        lines.append("Controls:")
        lines.extend(f"  {control}" for control in summary.controls)
    if summary.gates:  # each health gate's decision and its numbers (workflows/gating.py)
        lines.append("Gates:")
        lines.extend(f"  {gate}" for gate in summary.gates)
    return "\n".join([*lines, "", hosts_text(summary)])


def hosts_text(summary: RolloutSummary) -> str:
    """The per-host part of `summary_text`: one line per host, or what a dry run found; ends in
    a newline when it has lines."""
    lines = []
    if summary.dry_run is not None:
        lines.append("Dry run — nothing was changed:")
        for found in summary.dry_run:
            verdict = "ok" if found.preconditions_ok else f"REFUSED: {found.reason}"
            reboot = {True: "reboot needed", False: "no reboot", None: "reboot unknown"}[
                found.reboot_required
            ]
            lines.append(
                f"  {found.cluster}/{found.hostname}: {verdict}; "
                f"{len(found.pending_updates)} pending updates; {reboot}"
            )
            lines.extend(f"      {update}" for update in found.pending_updates[:20])
            if found.would_change:  # apt-get -s: what the update would do
                lines.append(f"    apt-get -s: the update would ({len(found.would_change)}):")
                lines.extend(f"      {change}" for change in found.would_change[:20])
        return "\n".join(lines) + "\n"
    for host in summary.hosts:
        line = host_outcome(host)
        if host.in_maintenance is None and host.state in ("failed", "running"):
            line += " [maintenance state unknown]"
        lines.append(f"  {line}")
        if host.packages:  # what the update did to its packages (workflows/packages.py)
            lines.append(f"      packages: {host.packages}")
        if host.notes:  # what the preconditions reported but did not refuse
            lines.append(f"      notes: {'; '.join(host.notes)}")
    return "\n".join(lines) + "\n" if lines else ""


def rollout_summary(notice: RolloutNotice) -> Message:
    """The final summary (`notice.summary` must be set): to requester and approvers."""
    assert notice.summary is not None
    summary = notice.summary
    return Message(
        event="summary",
        recipients=_everyone(notice),
        subject=f"[PatchPilot] Rollout {summary.phase.value}: {', '.join(notice.target_clusters)}"
        f" ({', '.join(f'{n} {word}' for word, n in summary.counts()[:2])})",
        body=summary_text(summary),
        notice=notice,
    )
