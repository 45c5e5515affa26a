"""JsonWebhookNotifier: every rollout notice as one small JSON document, for any HTTP endpoint
(a chat bridge, an incident tool, an audit log).

POST <PATCHPILOT_WEBHOOK_URL>, `Content-Type: application/json`:

    {"event": "host-success", "rolloutId": "...", "cluster": "cluster-a", "hostname": "a1",
     "step": null, "subject": "...", "text": "...", "summary": null}

`event` is one of approval-request, host-start, host-success, failure, wave, summary; `cluster`,
`hostname` and `step` are null where the event has none; `subject` and `text` are the e-mail's
subject and body (the approval request without anyone's personal links); `summary` is the rollout
summary (camelCase, as `patchpilot status --json` prints it) on the summary event, else null.
Delivery follows `delivery.py` (429/5xx retried honouring Retry-After, a 4xx logged and
reported by e-mail once, never an error for the rollout).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from activities.notify import Message
from activities.notify.delivery import DeliveryOptions, Report, Target, WebhookDelivery

log = logging.getLogger("patchpilot.webhook")
SETTING = "PATCHPILOT_WEBHOOK_URL"


def payload(message: Message) -> dict[str, Any]:
    notice = message.notice
    summary = notice.summary.model_dump(mode="json") if notice.summary is not None else None
    return {
        "event": message.event,
        "rolloutId": notice.rollout_id,
        "cluster": notice.cluster,
        "hostname": notice.hostname,
        "step": notice.step,
        "subject": message.subject,
        "text": message.body,
        "summary": summary if message.event == "summary" else None,
    }


@dataclass
class JsonWebhookNotifier(DeliveryOptions):
    url: str = field(repr=False)  # may carry a token: a secret
    name: str = "webhook"
    delivery: WebhookDelivery = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.delivery = self.delivery_for("JSON webhook", log)

    async def send(self, message: Message) -> bool:
        return await self.delivery.post(Target(self.url, SETTING), payload(message), message)


def webhook_from_settings(
    settings: object, report: Report | None = None
) -> JsonWebhookNotifier | None:
    """A JsonWebhookNotifier when PATCHPILOT_WEBHOOK_URL is set."""
    url = getattr(settings, "webhook_url", None)
    if url is None:
        return None
    getter = getattr(url, "get_secret_value", None)
    value = str(getter() if getter else url)
    return JsonWebhookNotifier(value, report=report) if value else None
