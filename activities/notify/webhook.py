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

from activities.notify.delivery import Target, WebhookNotifier
from activities.notify.messages import Message

SETTING = "PATCHPILOT_WEBHOOK_URL"


def payload(message: Message) -> dict[str, Any]:
    """The JSON document for `message` (shape in the module's docstring)."""
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
class JsonWebhookNotifier(WebhookNotifier):
    """Posts every message's `payload` to `url` (PATCHPILOT_WEBHOOK_URL)."""

    KIND = "JSON webhook"
    LOG = logging.getLogger("patchpilot.webhook")

    url: str = field(repr=False)  # may carry a token: a secret
    name: str = "webhook"

    async def send(self, message: Message) -> bool:
        return await self.delivery.post(Target(self.url, SETTING), payload(message), message)
