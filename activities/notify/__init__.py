"""Notification activities of the spec (approval request, start, success, failure) plus the summary.

E-mail (SMTP) is the channel the spec names; chat channels plug in as further `Notifier`s.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows import names
from workflows.models import RolloutNotice, RolloutSummary

log = logging.getLogger("patchpilot.notify")


@dataclass(frozen=True)
class Message:
    event: str
    recipients: list[str]
    subject: str
    body: str
    notice: RolloutNotice


class Notifier(Protocol):
    name: str

    async def send(self, message: Message) -> bool: ...


@dataclass
class EmailNotifier:
    host: str
    port: int = 25
    sender: str = "patchpilot@localhost"
    starttls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 15.0
    name: str = "email"

    def _send_blocking(self, message: Message) -> None:
        email = EmailMessage()
        email["From"] = self.sender
        email["To"] = ", ".join(message.recipients)
        email["Subject"] = message.subject
        email["X-PatchPilot-Rollout"] = message.notice.rollout_id
        email["X-PatchPilot-Event"] = message.event
        email.set_content(message.body)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username and self.password:
                smtp.login(self.username, self.password)
            smtp.send_message(email)

    async def send(self, message: Message) -> bool:
        if not message.recipients:
            return False
        try:
            await asyncio.to_thread(self._send_blocking, message)
        except (OSError, smtplib.SMTPException) as error:
            # Retryable: the activity's retry policy backs off and tries again.
            raise ApplicationError(
                f"SMTP {self.host}:{self.port} failed: {error}", type="SmtpError"
            ) from None
        return True


def _unique(*groups: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for group in groups:
        for address in group:
            seen.setdefault(address, None)
    return list(seen)


def _hosts_block(notice: RolloutNotice) -> str:
    lines = []
    for cluster, hosts in notice.hosts_by_cluster.items():
        shown = ", ".join(hosts[:50]) + (
            f" … and {len(hosts) - 50} more" if len(hosts) > 50 else ""
        )
        lines.append(f"  {cluster} ({len(hosts)} hosts): {shown}")
    return "\n".join(lines) or "  " + ", ".join(notice.target_clusters)


def approval_request(
    notice: RolloutNotice,
    *,
    links: Callable[[RolloutNotice, str], tuple[str, str]] | None = None,
    approver: str | None = None,
) -> Message:
    """The approval e-mail; with `links` and `approver`, that approver's personal copy carrying
    their own signed Approve / Reject links (`links(notice, approver)` -> (approve, reject))."""
    approvers = [a for a in notice.approver_emails if a != notice.requester_email]
    how = (
        f"To approve:  patchpilot approve {notice.rollout_id} --as <your e-mail>\n"
        f"To reject:   patchpilot reject {notice.rollout_id} --as <your e-mail>\n"
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
        f"Pilot hosts per cluster: {notice.pilot_host_count}\n"
        f"Services stopped and restarted: {', '.join(notice.service_list) or 'none'}\n"
        f"Update command: {notice.update_command}\n\n"
        f"{how}"
        "Nothing is touched until an approver other than the requester approves.\n"
    )
    return Message(
        event="approval-request",
        recipients=recipients,
        subject=f"[PatchPilot] Approval needed: patch {', '.join(notice.target_clusters)}",
        body=body,
        notice=notice,
    )


def start_notice(notice: RolloutNotice) -> Message:
    return Message(
        event="host-start",
        recipients=[notice.requester_email],
        subject=f"[PatchPilot] Patching {notice.hostname} ({notice.cluster})",
        body=f"Patching started on {notice.hostname} in {notice.cluster} "
        f"(rollout {notice.rollout_id}).\n",
        notice=notice,
    )


def success_notice(notice: RolloutNotice) -> Message:
    return Message(
        event="host-success",
        recipients=[notice.requester_email],
        subject=f"[PatchPilot] Patched {notice.hostname} ({notice.cluster})",
        body=f"{notice.hostname} in {notice.cluster} was patched, its services are healthy and "
        f"it is out of maintenance mode (rollout {notice.rollout_id}).\n",
        notice=notice,
    )


def wave_notice(notice: RolloutNotice) -> Message:
    # Chat only: a wave is too small an event for an e-mail.
    what = notice.waiting or f"Starting {notice.wave}"
    return Message(
        event="wave",
        recipients=[],
        subject=what,
        body=f"{what} (rollout {notice.rollout_id}).\n",
        notice=notice,
    )


def failure_alert(notice: RolloutNotice) -> Message:
    where = f"{notice.hostname} at step {notice.step}" if notice.hostname else "the rollout"
    return Message(
        event="failure",
        recipients=_unique([notice.requester_email], notice.approver_emails),
        subject=f"[PatchPilot] FAILED: {where} (rollout {notice.rollout_id})",
        body=f"{notice.failure_details}\n\nThe rollout stops: no further host will be touched.\n"
        f"Check it with: patchpilot status {notice.rollout_id}\n",
        notice=notice,
    )


def summary_text(summary: RolloutSummary) -> str:
    lines = [
        f"Rollout {summary.rollout_id}: {summary.phase.value}",
        summary.message,
        f"patched {summary.patched}, failed {summary.failed}, skipped {summary.skipped}, "
        f"duration {summary.duration_seconds:.0f}s",
        "",
    ]
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
        return "\n".join(lines) + "\n"
    for host in summary.hosts:
        extra = ""
        if host.failure_reason:
            extra = f" at {host.step}: {host.failure_reason}"
        if host.rebooted:
            extra += " (rebooted)"
        if host.in_maintenance:
            extra += " [IN MAINTENANCE]"
        elif host.in_maintenance is None and host.state in ("failed", "running"):
            extra += " [maintenance state unknown]"
        lines.append(f"  {host.cluster}/{host.name}: {host.state.value}{extra}")
    return "\n".join(lines) + "\n"


def rollout_summary(notice: RolloutNotice) -> Message:
    assert notice.summary is not None
    summary = notice.summary
    return Message(
        event="summary",
        recipients=_unique([notice.requester_email], notice.approver_emails),
        subject=f"[PatchPilot] Rollout {summary.phase.value}: {', '.join(notice.target_clusters)}"
        f" ({summary.patched} patched, {summary.failed} failed)",
        body=summary_text(summary),
        notice=notice,
    )


class NotificationActivities:
    def __init__(self, notifiers: list[Notifier]) -> None:
        self._notifiers = notifiers

    async def _deliver(self, message: Message) -> bool:
        delivered = False
        for notifier in self._notifiers:
            if await notifier.send(message):
                delivered = True
        if not self._notifiers:
            log.info(
                "no notifier configured; %s for %s not sent", message.event, message.recipients
            )
        return delivered

    @activity.defn(name=names.SEND_APPROVAL_REQUEST)
    async def send_approval_request(self, notice: RolloutNotice) -> bool:
        return await self._deliver(approval_request(notice))

    @activity.defn(name=names.SEND_START_NOTIFICATION)
    async def send_start_notification(self, notice: RolloutNotice) -> bool:
        return await self._deliver(start_notice(notice))

    @activity.defn(name=names.SEND_SUCCESS_NOTIFICATION)
    async def send_success_notification(self, notice: RolloutNotice) -> bool:
        return await self._deliver(success_notice(notice))

    @activity.defn(name=names.SEND_WAVE_NOTIFICATION)
    async def send_wave_notification(self, notice: RolloutNotice) -> bool:
        return await self._deliver(wave_notice(notice))

    @activity.defn(name=names.SEND_FAILURE_ALERT)
    async def send_failure_alert(self, notice: RolloutNotice) -> bool:
        return await self._deliver(failure_alert(notice))

    @activity.defn(name=names.SEND_ROLLOUT_SUMMARY)
    async def send_rollout_summary(self, notice: RolloutNotice) -> bool:
        return await self._deliver(rollout_summary(notice))

    def all(self) -> list[object]:
        return [
            self.send_approval_request,
            self.send_start_notification,
            self.send_success_notification,
            self.send_failure_alert,
            self.send_rollout_summary,
            self.send_wave_notification,
        ]
