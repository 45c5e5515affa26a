"""Slack's documented rules the stand-in applies, written from Slack's documentation, not from
the bot: how typed text is escaped, how mrkdwn reads to a person, Block Kit's limits, and the
per-channel posting rate.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# What Slack itself writes as `<…>` in command text when the command escapes mentions, channels
# and links (https://api.slack.com/interactivity/slash-commands#creating_commands): a test types
# these the way Slack would send them, everything else is typed text.
SLACK_ENTITY = re.compile(
    r"<(?:[@#][A-Z0-9]+(?:\|[^<>]*)?|![a-z^A-Z0-9]+(?:\|[^<>]*)?|"
    r"(?:mailto:|https?://)[^<>|]+(?:\|[^<>]*)?)>"
)
_ANY_ENTITY = re.compile(r"<([^<>]*)>")


def escape_typed(typed: str) -> str:
    """Command text as Slack sends it: `&`, `<`, `>` of typed text as `&amp;`, `&lt;`, `&gt;`
    (https://api.slack.com/reference/surfaces/formatting#escaping); Slack's own entities kept."""
    parts: list[str] = []
    last = 0
    for match in SLACK_ENTITY.finditer(typed):
        parts.append(_escape(typed[last : match.start()]))
        parts.append(match.group(0))
        last = match.end()
    parts.append(_escape(typed[last:]))
    return "".join(parts)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def rendered(text: str, names: Callable[[str], str] | None = None) -> str:
    """What a person reads for mrkdwn `text`: `<@U1>` as @name, `<#C1|x>` as #x, a link as its
    label, and `&amp;` `&lt;` `&gt;` as their characters
    (https://api.slack.com/reference/surfaces/formatting)."""

    def entity(match: re.Match[str]) -> str:
        body = match.group(1)
        target, _, label = body.partition("|")
        if target.startswith("@"):
            return "@" + (label or (names(target[1:]) if names else target[1:]))
        if target.startswith("#"):
            return "#" + (label or target[1:])
        if target.startswith("!"):
            return label or "@" + target[1:]
        return label or target.removeprefix("mailto:")

    shown = _ANY_ENTITY.sub(entity, text)
    return shown.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def block_texts(blocks: list[dict[str, Any]]) -> list[str]:
    """Every text a person reads in `blocks`, rendered (plain_text as sent)."""
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("mrkdwn", "plain_text") and isinstance(node.get("text"), str):
                text = node["text"]
                found.append(rendered(text) if node["type"] == "mrkdwn" else text)
                return
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(blocks)
    return found


# Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_TEXT = 40_000  # a message's `text` (https://api.slack.com/methods/chat.postMessage)


def block_kit_error(params: dict[str, Any]) -> str | None:
    """Slack's error for a message beyond its documented limits, or None."""
    if len(str(params.get("text") or "")) > MAX_TEXT:
        return "msg_too_long"
    blocks = params.get("blocks")
    if blocks is None or blocks == "":
        return None
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, dict) or not _block_ok(block):
            return "invalid_blocks"
    return None


def _text_len(obj: Any) -> int:
    return len(obj.get("text", "")) if isinstance(obj, dict) else 0


def _block_ok(block: dict[str, Any]) -> bool:
    kind = block.get("type")
    if kind == "header":
        text = block.get("text") or {}
        return text.get("type") == "plain_text" and 0 < _text_len(text) <= MAX_HEADER_TEXT
    if kind == "section":
        fields = block.get("fields") or []
        if "text" not in block and not fields:
            return False
        return _text_len(block.get("text")) <= MAX_SECTION_TEXT and (
            len(fields) <= MAX_FIELDS and all(_text_len(f) <= MAX_FIELD_TEXT for f in fields)
        )
    if len(str(block.get("block_id") or "")) > MAX_ID:
        return False
    if kind == "actions":
        elements = block.get("elements") or []
        return 0 < len(elements) <= MAX_ACTIONS and all(_element_ok(e) for e in elements)
    return kind in ("context", "divider", "input", "image", "rich_text")


# Interactive elements (https://api.slack.com/reference/block-kit/block-elements) and options
# (https://api.slack.com/reference/block-kit/composition-objects#option).
MAX_ID = 255  # block_id, action_id
MAX_ACTIONS = 25  # elements of an actions block
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150


def _element_ok(element: Any) -> bool:
    if not isinstance(element, dict) or len(str(element.get("action_id") or "")) > MAX_ID:
        return False
    kind = element.get("type")
    if kind == "button":
        return 0 < _text_len(element.get("text")) <= MAX_BUTTON_TEXT and (
            len(str(element.get("value") or "")) <= MAX_BUTTON_VALUE
        )
    if kind == "static_select":
        options = element.get("options") or []
        return 0 < len(options) <= MAX_OPTIONS and all(
            isinstance(o, dict)
            and 0 < _text_len(o.get("text")) <= MAX_OPTION_TEXT
            and 0 < len(str(o.get("value") or "")) <= MAX_OPTION_VALUE
            for o in options
        )
    return isinstance(kind, str)


MAX_VIEW_BLOCKS = 100
MAX_VIEW_TITLE = 24
# views.open: "view_too_large: ... greater than 250kb" (https://api.slack.com/methods/views.open).
MAX_VIEW_BYTES = 250 * 1024


def view_error(view: Any) -> str | None:
    """Slack's error for a modal views.open refuses (https://api.slack.com/reference/surfaces/views):
    over 250 KB of JSON, not a modal, a title over 24 characters, over 100 blocks, a block beyond
    Block Kit's limits, or an input block without label or element."""
    if len(json.dumps(view, ensure_ascii=False).encode("utf-8")) > MAX_VIEW_BYTES:
        return "view_too_large"
    if not isinstance(view, dict) or view.get("type") != "modal":
        return "invalid_arguments"
    title = view.get("title") or {}
    if title.get("type") != "plain_text" or not 0 < _text_len(title) <= MAX_VIEW_TITLE:
        return "invalid_arguments"
    blocks = view.get("blocks") or []
    if len(blocks) > MAX_VIEW_BLOCKS:
        return "invalid_arguments"
    for block in blocks:
        if block.get("type") == "input" and not (block.get("label") and block.get("element")):
            return "invalid_arguments"
        if not isinstance(block, dict) or not _block_ok(block):
            return "invalid_blocks"
    return None


@dataclass
class ChannelRate:
    """About one message a second per channel, short bursts tolerated
    (https://api.slack.com/apis/rate-limits#posting-messages): a token bucket of `burst` posts
    refilled at `per_second`; an empty bucket answers 429 with the seconds until the next token."""

    per_second: float = 1.0
    burst: int = 4
    _tokens: dict[str, float] = field(default_factory=dict)
    _at: dict[str, float] = field(default_factory=dict)

    def retry_after(self, channel: str, now: float) -> int | None:
        """None when a post to `channel` at `now` is allowed (and counted), else Retry-After."""
        tokens = self._tokens.get(channel, float(self.burst))
        tokens = min(
            float(self.burst), tokens + (now - self._at.get(channel, now)) * self.per_second
        )
        self._at[channel] = now
        if tokens >= 1.0:
            self._tokens[channel] = tokens - 1.0
            return None
        self._tokens[channel] = tokens
        return max(1, round((1.0 - tokens) / self.per_second + 0.5))
