"""Requests as Slack sends them to a bot in HTTP mode: signed headers, slash commands and button
clicks (``block_actions``), as form bodies ready to POST to ``/slack/events``."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

from lab.slack_standin.rules import escape_typed
from lab.slack_standin.server import TEAM_ID


def signed_headers(
    signing_secret: str, body: str, timestamp: int | None = None, content_type: str | None = None
) -> dict[str, str]:
    """Headers that make ``body`` a request from Slack signed with ``signing_secret``, at unix
    time ``timestamp`` (default now; an old one tests the bot's replay check)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=stamp, body=body)
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature or "",
        "Content-Type": content_type or "application/x-www-form-urlencoded",
    }


def slash_command_fields(
    text: str,
    user_id: str,
    channel_id: str = "CPATCH",
    response_url: str = "",
    command: str = "/patch",
    team_id: str = TEAM_ID,
) -> dict[str, str]:
    """The form fields of a slash command ``command text`` typed by ``user_id`` in
    ``channel_id`` of the stand-in's workspace. ``text`` is what the person typed, with Slack's own
    entities (``<@U…|name>``, ``<#C…|name>``, ``<mailto:…|…>``) where Slack would make them; it is
    sent escaped as Slack sends it (``&`` ``<`` ``>`` as ``&amp;`` ``&lt;`` ``&gt;``); ``team_id``
    another workspace's for a request from there."""
    return {
        "token": "deprecated-verification-token",
        "team_id": team_id,
        "team_domain": "patchpilot-test",
        "channel_id": channel_id,
        "channel_name": "ops",
        "user_id": user_id,
        "user_name": user_id.lower(),
        "command": command,
        "text": escape_typed(text),
        "api_app_id": "APATCHPILOT",
        "response_url": response_url,
        "trigger_id": f"trigger-{uuid.uuid4().hex[:12]}",
    }


def slash_command_body(*args: Any, **kwargs: Any) -> str:
    """``slash_command_fields(...)`` form-encoded, as the request body."""
    return urlencode(slash_command_fields(*args, **kwargs))


def block_action_payload(
    action_id: str,
    value: str,
    user_id: str,
    channel_id: str,
    message_ts: str,
    *,
    block_id: str = "patchpilot_decision",
    thread_ts: str | None = None,
    response_url: str = "",
    selected: dict[str, Any] | None = None,
    team_id: str = TEAM_ID,
) -> dict[str, Any]:
    """The ``block_actions`` payload of ``user_id`` clicking the button ``action_id`` (with
    ``value``) on the message ``message_ts`` in ``channel_id`` (a reply in ``thread_ts``); with
    ``selected`` (one of a static_select's options, as the message offered it), choosing that
    option of the menu ``action_id`` instead (``value`` unused: a select has none)."""
    message: dict[str, Any] = {"type": "message", "ts": message_ts, "text": ""}
    container: dict[str, Any] = {
        "type": "message",
        "message_ts": message_ts,
        "channel_id": channel_id,
        "is_ephemeral": False,
    }
    if thread_ts:
        # A click on a message in a thread names the thread in both
        # (https://api.slack.com/reference/interaction-payloads/block-actions).
        message["thread_ts"] = thread_ts
        container["thread_ts"] = thread_ts
    action: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "block_id": block_id,
        "value": value,
        "action_ts": f"{time.time():.6f}",
    }
    if selected is not None:
        action = {
            "type": "static_select",
            "action_id": action_id,
            "block_id": block_id,
            "selected_option": selected,
            "action_ts": action["action_ts"],
        }
    return {
        "type": "block_actions",
        "team": {"id": team_id, "domain": "patchpilot-test"},
        "user": {"id": user_id, "username": user_id.lower(), "team_id": team_id},
        "api_app_id": "APATCHPILOT",
        "token": "deprecated-verification-token",
        "container": container,
        "trigger_id": f"trigger-{uuid.uuid4().hex[:12]}",
        "channel": {"id": channel_id, "name": "ops"},
        "message": message,
        "response_url": response_url,
        "actions": [action],
    }


def block_action_body(*args: Any, **kwargs: Any) -> str:
    """``block_action_payload(...)`` as Slack posts it: a form field ``payload`` of JSON."""
    return urlencode({"payload": json.dumps(block_action_payload(*args, **kwargs))})


def view_submission_payload(
    user_id: str, view: dict[str, Any], values: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, Any]:
    """The ``view_submission`` payload of ``user_id`` submitting the modal ``view`` (as opened)
    with ``values`` (``block_id -> action_id -> state``) as Slack sends it
    (https://api.slack.com/reference/interaction-payloads/views#view_submission)."""
    return {
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "patchpilot-test"},
        "user": {"id": user_id, "username": user_id.lower(), "team_id": TEAM_ID},
        "api_app_id": "APATCHPILOT",
        "token": "deprecated-verification-token",
        "trigger_id": f"trigger-{uuid.uuid4().hex[:12]}",
        "view": {**view, "state": {"values": values}},
        "response_urls": [],
    }


def view_submission_body(*args: Any, **kwargs: Any) -> str:
    """``view_submission_payload(...)`` as Slack posts it: a form field ``payload`` of JSON."""
    return urlencode({"payload": json.dumps(view_submission_payload(*args, **kwargs))})
