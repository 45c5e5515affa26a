"""Posting JSON to a webhook that may refuse: the delivery rules the Teams notifier and the generic
JSON webhook share.

A post never raises and never makes the notification activity retry (that would re-send the
e-mails): 429 and 5xx are retried honouring Retry-After (bounded), network errors are retried a
little, every post of one message has a time budget (the activity has 60 s for all its channels),
and a 4xx is logged once per webhook URL and reported (by e-mail, through `report`) once, naming the
webhook by its label and host, never by its URL (which embeds the webhook's secret).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from activities.notify.messages import Message

# Told of a webhook's refusal: (the message that was refused, the problem as a sentence).
Report = Callable[[Message, str], Awaitable[object]]


class HideUrlSecrets(logging.Filter):
    """httpx logs each request's full URL at info level, and a webhook's URL holds its secret
    (Teams: `?sig=...`): only scheme and host are kept in httpx's log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(
                f"{a.scheme}://{a.netloc.decode('ascii', 'replace')}/…"
                if isinstance(a, httpx.URL)
                else a
                for a in record.args
            )
        return True


if not any(isinstance(f, HideUrlSecrets) for f in logging.getLogger("httpx").filters):
    logging.getLogger("httpx").addFilter(HideUrlSecrets())


def retry_after(response: httpx.Response, default: float) -> float:
    """Seconds to wait as the answer's Retry-After header says (delay-seconds or an HTTP date, as
    RFC 9110 section 10.2.3 allows; a date in the past is 0), else `default`."""
    value = response.headers.get("Retry-After")
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return default


@dataclass(frozen=True)
class Target:
    """One webhook to post to. `label` names it in logs and reports ("cluster cluster-a");
    `setting` is the setting to fix when it refuses."""

    url: str = field(repr=False)  # a secret: the URL carries the webhook's signature
    setting: str
    label: str = ""

    @property
    def where(self) -> str:
        host = urlsplit(self.url).netloc or "?"
        return f"{host} ({self.label})" if self.label else host


@dataclass
class WebhookDelivery:
    """Posts JSON payloads for one notifier under the rules above; remembers which URLs refused,
    so that each is reported once per process. Times are seconds."""

    kind: str  # "Teams webhook", "JSON webhook": how logs and reports name it
    log: logging.Logger
    report: Report | None = None
    timeout: float = 10.0
    max_attempts: int = 4
    max_retry_wait: float = 20.0  # longest honoured Retry-After
    budget: float = 25.0  # all attempts of one post; two channels fit the activity's 60 s
    _reported: set[str] = field(default_factory=set, repr=False)

    async def post(self, target: Target, payload: dict[str, Any], message: Message) -> bool:
        """True when the webhook took the payload; False (logged, never raised) otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            for attempt in range(1, self.max_attempts + 1):
                last = attempt == self.max_attempts
                left = deadline - loop.time()
                try:
                    response = await client.post(
                        target.url, json=payload, timeout=max(0.5, min(self.timeout, left))
                    )
                except httpx.HTTPError as error:
                    wait = min(2.0**attempt, self.max_retry_wait)
                    self.log.warning(
                        "%s %s unreachable (%s)", self.kind, target.where, type(error).__name__
                    )
                    if last or loop.time() + wait > deadline:
                        return False
                    await asyncio.sleep(wait)
                    continue
                if response.is_success:
                    return True
                status = response.status_code
                if status == 429 or status >= 500:
                    wait = retry_after(response, min(2.0**attempt, self.max_retry_wait))
                    if last or wait > self.max_retry_wait or loop.time() + wait > deadline:
                        self.log.warning(
                            "%s %s still answers %s after %s attempts; %s not posted",
                            self.kind,
                            target.where,
                            status,
                            attempt,
                            message.event,
                        )
                        return False
                    await asyncio.sleep(wait)
                    continue
                await self._refused(target, status, response.text[:300], message)
                return False
        return False

    async def _refused(self, target: Target, status: int, text: str, message: Message) -> None:
        if target.url in self._reported:
            self.log.debug("%s %s refused again with HTTP %s", self.kind, target.where, status)
            return
        self._reported.add(target.url)
        problem = (
            f"The {self.kind} at {target.where} refused PatchPilot's message with HTTP {status}: "
            f"{text or '(no body)'}. Its notifications are not delivered until the webhook URL "
            f"({target.setting}) is fixed; the rollout goes on."
        )
        self.log.error(problem)
        if self.report is not None:
            try:
                await self.report(message, problem)
            except Exception as error:
                self.log.warning("could not report the %s error by e-mail: %s", self.kind, error)


@dataclass(kw_only=True)
class WebhookNotifier:
    """Base of the notifiers that post to webhooks (Teams, the JSON webhook): the delivery
    options they take, keyword-only, and the WebhookDelivery built from them. `report` is told of
    a refusing webhook (build.report_by_mail); `timeout` is seconds per request; a Retry-After
    longer than `max_retry_wait` seconds is not waited for."""

    KIND: ClassVar[str]  # how logs and reports name the webhook ("Teams webhook")
    LOG: ClassVar[logging.Logger]

    report: Report | None = None
    timeout: float = 10.0
    max_attempts: int = 4
    max_retry_wait: float = 20.0
    delivery: WebhookDelivery = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.delivery = WebhookDelivery(
            self.KIND,
            self.LOG,
            report=self.report,
            timeout=self.timeout,
            max_attempts=self.max_attempts,
            max_retry_wait=self.max_retry_wait,
        )
