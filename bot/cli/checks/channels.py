"""The people-facing channels: the SMTP server, the Slack bot token, and which notification
channel gets which events."""

from __future__ import annotations

import os
import smtplib
import ssl
from typing import Any

from bot.cli.checks import CheckResult, fail, ok, short, skip, warn
from bot.settings import Settings

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
SMTP = "SMTP"
SLACK = "Slack"
NOTIFICATIONS = "Notifications"


def check_smtp(settings: Settings, timeout: float) -> CheckResult:
    """EHLO (and STARTTLS and login when configured), then NOOP; blocking, `timeout` s."""
    if not settings.smtp_host:
        return skip(
            SMTP,
            "PATCHPILOT_SMTP_HOST not set: e-mail notifications are off",
            "Optional: set PATCHPILOT_SMTP_HOST, PATCHPILOT_SMTP_PORT and PATCHPILOT_SMTP_FROM",
        )
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        _talk_smtp(settings, timeout)
    except smtplib.SMTPAuthenticationError as error:
        return fail(
            SMTP,
            f"{where} refused the login: {short(error)}",
            "Check PATCHPILOT_SMTP_USERNAME / PATCHPILOT_SMTP_PASSWORD",
        )
    except (OSError, smtplib.SMTPException) as error:
        return fail(
            SMTP,
            f"cannot talk to the SMTP server at {where}: {short(error)}",
            "Check PATCHPILOT_SMTP_HOST / PATCHPILOT_SMTP_PORT (and PATCHPILOT_SMTP_STARTTLS)",
        )
    tls = ", STARTTLS" if settings.smtp_starttls else ""
    return ok(SMTP, f"{where} answers EHLO and NOOP{tls}")


def _talk_smtp(settings: Settings, timeout: float) -> None:
    assert settings.smtp_host is not None
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as smtp:
        code, _ = smtp.ehlo()
        if code != 250:
            raise smtplib.SMTPResponseException(code, b"EHLO refused")
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if settings.smtp_username and settings.smtp_password:
            smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
        code, _ = smtp.noop()
        if code != 250:
            raise smtplib.SMTPResponseException(code, b"NOOP refused")


async def check_slack(settings: Settings, timeout: float) -> CheckResult:
    """Slack's auth.test with the bot token (at SLACK_API_URL when set)."""
    import httpx

    token = os.environ.get("SLACK_BOT_TOKEN") or _secret(getattr(settings, "slack_bot_token", None))
    if not token:
        return skip(
            SLACK,
            "SLACK_BOT_TOKEN not set: the Slack bot is off (CLI and e-mail still work)",
            "Optional: set SLACK_BOT_TOKEN and SLACK_APP_TOKEN (or SLACK_SIGNING_SECRET)",
        )
    base = (
        os.environ.get("SLACK_API_URL")
        or getattr(settings, "slack_api_url", None)
        or DEFAULT_SLACK_API_URL
    )
    url = str(base).rstrip("/") + "/auth.test"
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.post(url, headers={"Authorization": f"Bearer {token}"})
        body = response.json()
    except (httpx.HTTPError, ValueError) as error:
        return fail(
            SLACK,
            f"auth.test at {url} failed: {short(error)}",
            "Check network access to Slack, or SLACK_API_URL if you use a proxy/gateway",
        )
    if not isinstance(body, dict) or not body.get("ok"):
        problem = (
            body.get("error", f"HTTP {response.status_code}") if isinstance(body, dict) else ""
        )
        return fail(
            SLACK,
            f"auth.test refused the bot token: {problem}",
            "Set SLACK_BOT_TOKEN to the app's Bot User OAuth Token (xoxb-...) from "
            "OAuth & Permissions; reinstall the app if it was revoked",
        )
    return ok(
        SLACK,
        f"bot token valid: workspace {body.get('team', '?')}, bot user {body.get('user', '?')}",
    )


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter else value)


def _present_channels(settings: Settings) -> dict[str, str]:
    """Configured channel -> how the report names it."""
    from urllib.parse import urlsplit

    present: dict[str, str] = {}
    if settings.slack_bot_token or os.environ.get("SLACK_BOT_TOKEN"):
        present["slack"] = "Slack thread"
    if settings.smtp_host:
        present["email"] = "e-mail"
    own = sorted(settings.teams_webhooks)
    if settings.teams_webhook_url or own:
        where = [f"{', '.join(own)} own webhook{'s' if len(own) > 1 else ''}"] if own else []
        if settings.teams_webhook_url:
            where.append("global webhook" + (" for the other clusters" if own else ""))
        present["teams"] = f"Teams ({'; '.join(where)})"
    if settings.webhook_url:
        host = urlsplit(settings.webhook_url.get_secret_value()).netloc
        present["webhook"] = f"JSON webhook at {host}"
    return present


def check_notifications(settings: Settings, clusters: dict[str, list[Any]] | None) -> CheckResult:
    """Which channel gets which events, and what will not work: per-cluster Teams webhooks of
    clusters the inventory does not know, approval requests routed only to absent channels.
    No webhook is called: a test post would show up in the channel. (Bad URLs and unknown channel
    or event names never get here: the settings refuse them when loaded.)"""
    from activities.notify.routing import EVENTS, allowed

    present = _present_channels(settings)
    if not present:
        return skip(
            NOTIFICATIONS,
            "no channel configured: rollouts are followed with `patchpilot watch`",
            "Optional: SMTP, Slack, PATCHPILOT_TEAMS_WEBHOOK_URL or PATCHPILOT_WEBHOOK_URL",
        )
    routes = settings.notify_routes
    parts = []
    for channel, label in present.items():
        events = allowed(routes, channel)
        parts.append(
            f"{label}: {'every event' if events == EVENTS else ', '.join(events) or 'nothing'}"
        )
    detail = "; ".join(parts)
    unknown = [
        c for c in sorted(settings.teams_webhooks) if clusters is not None and c not in clusters
    ]
    if unknown:
        return warn(
            NOTIFICATIONS,
            f"{detail}; teams_webhooks names clusters not in the inventory: {', '.join(unknown)}",
            "Fix the cluster names in teams_webhooks / PATCHPILOT_TEAMS_WEBHOOKS",
        )
    if not any("approval-request" in allowed(routes, channel) for channel in present):
        return warn(
            NOTIFICATIONS,
            f"{detail}; no configured channel gets approval requests (approvers must be told "
            "otherwise, or use `patchpilot approve`)",
            "Add approval-request to the notify_routes of a configured channel",
        )
    return ok(NOTIFICATIONS, detail)
