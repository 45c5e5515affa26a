"""Text between Slack and PatchPilot, both directions, following Slack's formatting reference
(https://api.slack.com/reference/surfaces/formatting).

In: Slack sends `&`, `<` and `>` of what a person typed as `&amp;`, `&lt;` and `&gt;`, and what it
recognised as a mention, a channel, a link or an e-mail address as `<…>` entities
(https://api.slack.com/reference/surfaces/formatting#escaping,
https://api.slack.com/interactivity/slash-commands#creating_commands). `from_slack` reads such text
once, entities first, so the result is what the person typed; user mentions stay `<@U…>` because
people are identified by id, never by a name they can change.

Out: `mrkdwn` escapes user-supplied text exactly once for `mrkdwn` fields and a message's top-level
`text`; `plain_text` fields are shown as sent and take the text unchanged (`plain`).
"""

from __future__ import annotations

import re

# A Slack entity: never contains a literal < or >, since Slack escapes those in the text around it.
ENTITY = re.compile(r"<([^<>]*)>")
_USER = re.compile(r"^@([UW][A-Z0-9]+)(?:\|.*)?$", re.DOTALL)
_CHANNEL = re.compile(r"^#([CGD][A-Z0-9]+)(?:\|(.*))?$", re.DOTALL)
_SPECIAL = re.compile(r"^!(here|channel|everyone)(?:\|.*)?$", re.DOTALL)


def unescape(text: str) -> str:
    """Slack's three escapes undone; `&amp;` last, so `&amp;lt;` stays the typed `&lt;`."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _entity(body: str) -> str:
    """What the person typed for one `<…>` entity (its label when Slack gives one)."""
    if match := _USER.fullmatch(body):
        return f"<@{match.group(1)}>"
    if match := _CHANNEL.fullmatch(body):
        return f"#{unescape(match.group(2))}" if match.group(2) else f"<#{match.group(1)}>"
    if match := _SPECIAL.fullmatch(body):
        return f"@{match.group(1)}"
    target, bar, label = body.partition("|")
    if bar and label:
        return unescape(label)  # a link or e-mail Slack made of the typed text: the text
    return unescape(target.removeprefix("mailto:"))


def from_slack(text: str) -> str:
    """Text that Slack sent (slash-command text, a message) as the person typed it.

    Mentions become `<@U…>`, `<#C…|name>` becomes `#name`, `<!here>` `@here`, a link or
    `<mailto:…|…>` its label (else its target), and `&amp;` `&lt;` `&gt;` outside entities their
    characters; decoding the result again would change it, so call this exactly once, at the edge.
    """
    parts: list[str] = []
    last = 0
    for match in ENTITY.finditer(text):
        parts.append(unescape(text[last : match.start()]))
        parts.append(_entity(match.group(1)))
        last = match.end()
    parts.append(unescape(text[last:]))
    return "".join(parts)


def mrkdwn(text: str) -> str:
    """User-supplied `text` for a `mrkdwn` field or a message's `text`: `&`, `<` and `>` escaped
    once, everything else shown as typed
    (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain(text: str) -> str:
    """User-supplied `text` for a `plain_text` object, which Slack shows as sent: unchanged
    (https://api.slack.com/reference/block-kit/composition-objects#text)."""
    return text
