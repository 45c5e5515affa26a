"""The Slack Web API client both halves of the Slack front end use, and how its errors read.

The bot (listeners, handlers) and the worker's SlackNotifier each build one with `web_client`; the
base URL comes from SLACK_API_URL so that a proxy, a Slack-compatible gateway or the lab's stand-in
can answer instead of slack.com.
"""

from __future__ import annotations

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    async_default_handlers,
)
from slack_sdk.web.async_client import AsyncWebClient

# Seconds one Web API call may take before slack_sdk gives up (its default is 30 s).
REQUEST_TIMEOUT = 15


def web_client(token: str | None, base_url: str, *, rate_limit_retries: int = 3) -> AsyncWebClient:
    """An AsyncWebClient for `base_url` (e.g. "https://slack.com/api/") with bot token `token`.

    Connection errors are retried by slack_sdk's default handlers; an HTTP 429 is retried up to
    `rate_limit_retries` times, each after the Retry-After seconds Slack sends
    (https://api.slack.com/apis/rate-limits). A call that still fails raises SlackApiError
    (Slack answered `ok: false`) or SlackClientError / OSError (Slack was not reached).
    """
    if not base_url.endswith("/"):
        base_url += "/"
    handlers = [
        *async_default_handlers(),
        AsyncRateLimitErrorRetryHandler(max_retry_count=rate_limit_retries),
    ]
    return AsyncWebClient(
        token=token, base_url=base_url, retry_handlers=handlers, timeout=REQUEST_TIMEOUT
    )


def slack_error(error: SlackApiError) -> str:
    """Slack's error code of a failed call (e.g. "not_in_channel"), or "http_<status>" when the
    answer carried no JSON body (https://api.slack.com/web#evaluating_responses)."""
    data = getattr(error.response, "data", None)
    if isinstance(data, dict):
        return str(data.get("error") or "unknown_error")
    return f"http_{getattr(error.response, 'status_code', '?')}"
