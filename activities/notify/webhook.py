"""JsonWebhookNotifier: every rollout notice as one small JSON document, for any HTTP endpoint
(a chat bridge, an incident tool, an audit log).

POST <PATCHPILOT_WEBHOOK_URL>, `Content-Type: application/json`:

    {"event": "host-success", "rolloutId": "...", "cluster": "cluster-a", "hostname": "a1",
     "step": null, "subject": "...", "text": "...", "summary": null}

`event` is one of approval-request, host-start, host-success, failure, wave, summary; `cluster`,
`hostname` and `step` are null where the event has none; `subject` and `text` are the e-mail's
subject and body (the approval request without anyone's personal links); `summary` is the rollout
summary (camelCase, as `patchpilot status --json` prints it) on the summary event, else null;
`packages` maps a host to its whole package report (workflows/packages.py, camelCase) on a host's
success and the summary, else {}, as many as fit 512 KB of JSON; `packagesLeftOut` counts the
hosts whose report did not fit (`patchpilot report <id>` has them all).
Delivery follows `delivery.py` (429/5xx retried honouring Retry-After, a 4xx logged and
reported by e-mail once, never an error for the rollout).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from activities.notify.delivery import Target, WebhookNotifier
from activities.notify.messages import Message

SETTING = "PATCHPILOT_WEBHOOK_URL"
# The package reports one document carries at most (JSON bytes): a summary of hundreds of hosts
# with hundreds of packages each must stay a request any endpoint takes.
PACKAGES_BYTES = 512 * 1024


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
        **_packages(message),
    }


def _packages(message: Message) -> dict[str, Any]:
    """`packages` (host -> whole report) for as many hosts as fit PACKAGES_BYTES of JSON, and
    `packagesLeftOut`, how many hosts' reports did not (`patchpilot report` has them)."""
    packages: dict[str, Any] = {}
    size = 0
    for host, report in message.packages.items():
        data = report.model_dump(mode="json", by_alias=True)
        size += len(json.dumps(data)) + len(host) + 8
        if size > PACKAGES_BYTES:
            break
        packages[host] = data
    return {"packages": packages, "packagesLeftOut": len(message.packages) - len(packages)}


@dataclass
class JsonWebhookNotifier(WebhookNotifier):
    """Posts every message's `payload` to `url` (PATCHPILOT_WEBHOOK_URL)."""

    KIND = "JSON webhook"
    LOG = logging.getLogger("patchpilot.webhook")

    url: str = field(repr=False)  # may carry a token: a secret
    name: str = "webhook"

    async def send(self, message: Message) -> bool:
        return await self.delivery.post(Target(self.url, SETTING), payload(message), message)
