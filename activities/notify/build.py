"""The worker's channels, built once from settings: the only module of the package that reads them.

`build_notifiers(settings, extra)` gives the list the notification activities send on, in this
order: `extra` (the Slack notifier, built beside the Slack app), e-mail, Teams, the JSON webhook.
E-mail carries each approver's personal links when links are configured; Teams and the webhook
report a refusing webhook by e-mail; every channel gets the events `notify_routes` gives it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from pydantic import SecretStr

from activities.notify.delivery import Report
from activities.notify.email import EmailNotifier
from activities.notify.links import DEFAULT_TTL, ApprovalLinks, LinkSigner, PersonalLinksEmail
from activities.notify.messages import Message, Notifier
from activities.notify.routing import route
from activities.notify.teams import TeamsNotifier
from activities.notify.webhook import JsonWebhookNotifier

log = logging.getLogger("patchpilot.worker")  # news of the worker's start-up, under its name


class NotifySettings(Protocol):
    """The settings this package reads; bot.settings.Settings has them all (its field comments
    name the environment variables)."""

    smtp_host: str | None
    smtp_port: int
    smtp_from: str
    smtp_starttls: bool
    smtp_username: str | None
    smtp_password: SecretStr | None
    public_url: str | None
    link_secret: SecretStr | None
    link_ttl: timedelta
    teams_webhook_url: SecretStr | None
    teams_webhooks: dict[str, SecretStr]
    webhook_url: SecretStr | None
    notify_routes: dict[str, list[str]] | None


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def email_notifier(settings: NotifySettings) -> EmailNotifier | None:
    """The e-mail channel from PATCHPILOT_SMTP_*; None when PATCHPILOT_SMTP_HOST is unset."""
    if not settings.smtp_host:
        return None
    return EmailNotifier(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_from,
        starttls=settings.smtp_starttls,
        username=settings.smtp_username,
        password=_secret(settings.smtp_password) or None,
    )


def links_from_settings(settings: NotifySettings) -> ApprovalLinks | None:
    """Personal Approve / Reject links when PATCHPILOT_PUBLIC_URL and PATCHPILOT_LINK_SECRET are
    both set (ValueError when the secret is shorter than links.MIN_SECRET_BYTES); they last
    PATCHPILOT_LINK_TTL when the rollout's own approval timeout cannot be read."""
    if not settings.public_url or settings.link_secret is None:
        return None
    signer = LinkSigner(_secret(settings.link_secret).encode())
    return ApprovalLinks(signer, settings.public_url, default_ttl=settings.link_ttl or DEFAULT_TTL)


def teams_from_settings(
    settings: NotifySettings, report: Report | None = None
) -> TeamsNotifier | None:
    """A TeamsNotifier when PATCHPILOT_TEAMS_WEBHOOK_URL or PATCHPILOT_TEAMS_WEBHOOKS is set."""
    url = _secret(settings.teams_webhook_url)
    cluster_urls = {cluster: _secret(v) for cluster, v in settings.teams_webhooks.items()}
    if not url and not cluster_urls:
        return None
    return TeamsNotifier(url or None, report=report, cluster_urls=cluster_urls)


def webhook_from_settings(
    settings: NotifySettings, report: Report | None = None
) -> JsonWebhookNotifier | None:
    """A JsonWebhookNotifier when PATCHPILOT_WEBHOOK_URL is set."""
    url = _secret(settings.webhook_url)
    return JsonWebhookNotifier(url, report=report) if url else None


def report_by_mail(mail: EmailNotifier, channel: str, event: str) -> Report:
    """Tells a rollout's requester by e-mail that `channel` refuses PatchPilot's messages, as a
    message of `event` ("teams-error"): not a rollout event, so routing never holds it back."""

    async def report(message: Message, problem: str) -> object:
        notice = message.notice
        return await mail.send(
            Message(
                event=event,
                recipients=[notice.requester_email],
                subject=f"[PatchPilot] {channel} notifications failing "
                f"(rollout {notice.rollout_id})",
                body=problem + "\n",
                notice=notice,
            )
        )

    return report


def link_notifiers(settings: NotifySettings, notifiers: Sequence[Notifier]) -> list[Notifier]:
    """`notifiers` with personal links on e-mail, plus Teams and the JSON webhook when configured
    (their 4xx errors reported by e-mail, when there is e-mail)."""
    links = links_from_settings(settings)
    mail = next((n for n in notifiers if isinstance(n, EmailNotifier)), None)
    result: list[Notifier] = [
        PersonalLinksEmail(n, links) if links and isinstance(n, EmailNotifier) else n
        for n in notifiers
    ]
    teams = teams_from_settings(
        settings, report_by_mail(mail, "Teams", "teams-error") if mail else None
    )
    if teams is not None:
        result.append(teams)
    webhook = webhook_from_settings(
        settings, report_by_mail(mail, "JSON webhook", "webhook-error") if mail else None
    )
    if webhook is not None:
        result.append(webhook)
    return result


def build_notifiers(settings: NotifySettings, extra: Sequence[Notifier] = ()) -> list[Notifier]:
    """Every channel the worker sends on: `extra`, e-mail (a warning is logged when SMTP is not
    configured), Teams and the JSON webhook, each wrapped by `notify_routes` (routing.route)."""
    notifiers = list(extra)
    mail = email_notifier(settings)
    if mail is not None:
        notifiers.append(mail)
    else:
        log.warning(
            "SMTP is not configured (PATCHPILOT_SMTP_HOST unset): e-mail notifications are disabled"
        )
    return route(link_notifiers(settings, notifiers), settings.notify_routes)
