"""Every notifier the worker has, and the spec's notification activities that send on them.

Module map:
    messages.py    Message, the Notifier protocol, and what each rollout event says
    activities.py  NotificationActivities: the spec's activities (SendStartNotificationActivity, …)
    build.py       the worker's channels built once from settings (build_notifiers, email_notifier)
    email.py       EmailNotifier (SMTP)
    teams.py       TeamsNotifier (Adaptive Cards to Teams Workflows webhooks)
    webhook.py     JsonWebhookNotifier (one small JSON document per event)
    delivery.py    posting to a webhook: retries, Retry-After, time budget, reporting a refusal
    links.py       signed personal Approve / Reject links, and the e-mail that carries them
    routing.py     notify_routes: which channel gets which event

The Slack notifier lives beside the Slack app (bot/slack/notifier.py): it renders Slack blocks and
reads rollout progress from Temporal, and `activities/` never imports `bot/`.
"""

from activities.notify.activities import NotificationActivities
from activities.notify.build import NotifySettings, build_notifiers, email_notifier
from activities.notify.email import EmailNotifier
from activities.notify.messages import (
    Message,
    Notifier,
    approval_request,
    counts_text,
    failure_alert,
    hosts_text,
    rollout_summary,
    start_notice,
    success_notice,
    summary_text,
    wave_notice,
)

__all__ = [
    "EmailNotifier",
    "Message",
    "NotificationActivities",
    "Notifier",
    "NotifySettings",
    "approval_request",
    "build_notifiers",
    "counts_text",
    "email_notifier",
    "failure_alert",
    "hosts_text",
    "rollout_summary",
    "start_notice",
    "success_notice",
    "summary_text",
    "wave_notice",
]
