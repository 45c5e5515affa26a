"""Slack's text rules both ways, and the stand-in's own rules, without Temporal or a lab."""

from __future__ import annotations

import pytest

from bot.slack import blocks
from bot.slack.commands import PatchCommand, parse_command
from bot.slack.text import from_slack, mrkdwn
from lab.slack_standin.rules import ChannelRate, block_kit_error, escape_typed, rendered
from workflows.models import RolloutInput

TYPED = 'cluster-a update="apt-get update && apt-get -y upgrade" approvers=<@UALICE|alice>'


def test_slack_escapes_typed_text_and_keeps_its_own_entities() -> None:
    assert escape_typed(TYPED) == (
        'cluster-a update="apt-get update &amp;&amp; apt-get -y upgrade" approvers=<@UALICE|alice>'
    )
    assert escape_typed("echo <b> 1>2 &lt;") == "echo &lt;b&gt; 1&gt;2 &amp;lt;"


@pytest.mark.parametrize(
    ("typed", "read"),
    [
        (TYPED, 'cluster-a update="apt-get update && apt-get -y upgrade" approvers=<@UALICE>'),
        ("echo <b> 1>2 &lt; &amp;", "echo <b> 1>2 &lt; &amp;"),  # typed entities stay typed
        ("approvers=<mailto:c@x.org|c@x.org>", "approvers=c@x.org"),
        ("see <#C123|ops> and <http://example.com|example.com>", "see #ops and example.com"),
        ("<!here> <https://example.com/a?b=1&amp;c=2>", "@here https://example.com/a?b=1&c=2"),
    ],
)
def test_command_text_is_read_back_as_typed(typed: str, read: str) -> None:
    assert from_slack(escape_typed(typed)) == read


def test_the_readme_example_parses_to_the_typed_command() -> None:
    command = parse_command(from_slack(escape_typed(TYPED)))
    assert isinstance(command, PatchCommand)
    assert command.update == "apt-get update && apt-get -y upgrade"
    assert [str(ref) for ref in command.approvers or []] == ["<@UALICE>"]


def test_posted_text_is_escaped_once_and_reads_as_typed() -> None:
    odd = "echo '<b>' && true &amp;"
    assert rendered(mrkdwn(odd)) == odd
    rollout = RolloutInput.model_validate(
        {
            "targetClusters": ["cluster-a"],
            "pilotHostCount": 1,
            "approverEmails": ["alice@example.com"],
            "requesterEmail": "bob@example.com",
            "updateCommand": "apt-get update && apt-get -y upgrade",
            "serviceList": ["nginx"],
        }
    )
    info = blocks.CardInfo.from_input("patch-x", rollout)
    shown = str([rendered(t) for t in _texts(blocks.as_dicts(blocks.status_card(info)))])
    assert "`apt-get update && apt-get -y upgrade`" in shown and "&amp;" not in shown
    assert rendered(blocks.card_text(info)) == "Patch rollout patch-x (cluster-a): starting"


def _texts(node: object) -> list[str]:
    if isinstance(node, dict):
        if node.get("type") == "mrkdwn":
            return [str(node["text"])]
        return [text for value in node.values() for text in _texts(value)]
    if isinstance(node, list):
        return [text for value in node for text in _texts(value)]
    return []


def test_the_standin_refuses_what_slack_refuses() -> None:
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    assert block_kit_error({"blocks": [section]}) == "invalid_blocks"
    assert block_kit_error({"blocks": [{"type": "divider"}] * 51}) == "invalid_blocks"
    assert block_kit_error({"text": "x" * 40_001}) == "msg_too_long"
    assert block_kit_error({"text": "ok", "blocks": [{"type": "divider"}]}) is None


def test_about_one_post_a_second_per_channel_after_a_short_burst() -> None:
    rate = ChannelRate(per_second=1.0, burst=4)
    assert [rate.retry_after("C1", 0.0) for _ in range(4)] == [None] * 4
    assert rate.retry_after("C1", 0.1) == 1  # the fifth at once: 429, retry after 1 s
    assert rate.retry_after("C2", 0.1) is None  # another channel has its own budget
    assert rate.retry_after("C1", 1.2) is None  # a second later, one more
    assert all(rate.retry_after("C1", 2.2 + n) is None for n in range(20))  # 1/s: always fine
