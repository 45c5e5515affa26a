"""`/patch` alone opens a modal (views.open); its submission is checked as the command line is,
with field-level errors (`response_action: errors`); a good one starts the rollout. The bot in
HTTP mode with a worker on the real Temporal dev server and lab; Slack is the stand-in."""

from __future__ import annotations

import json
from typing import Any

from lab.slack_standin import view_submission_body
from tests.slack.helpers import (
    ALICE,
    BOB,
    CHANNEL,
    UPDATE,
    BotServer,
)
from tests.support import wait_for


async def opened_modal(bot: BotServer) -> dict[str, Any]:
    status, body = await bot.command("", user=BOB)
    assert status == 200 and body == ""
    await wait_for(lambda: bot.slack.views, timeout=60)
    return bot.slack.views[-1]


def values(
    *, clusters: list[str], pilot: str = "", services: str | None = None, update: str = UPDATE
) -> dict[str, dict[str, dict[str, Any]]]:
    """The state Slack submits for these inputs."""
    picked = [{"text": {"type": "plain_text", "text": c}, "value": c} for c in clusters]
    return {
        "clusters": {"clusters": {"type": "multi_static_select", "selected_options": picked}},
        "pilot": {"pilot": {"type": "plain_text_input", "value": pilot or None}},
        "services": {"services": {"type": "plain_text_input", "value": services}},
        "update": {"update": {"type": "plain_text_input", "value": update}},
        "approvers": {"approvers": {"type": "multi_users_select", "selected_users": [ALICE]}},
    }


async def submit(bot: BotServer, view: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    status, body = await bot.post(view_submission_body(BOB, view, state))
    assert status == 200
    return json.loads(body) if body else {}


async def test_patch_alone_opens_the_modal_with_the_inventory_clusters(bot: BotServer) -> None:
    view = await opened_modal(bot)
    assert view["callback_id"] == "patchpilot_start"
    blocks = {block["block_id"]: block for block in view["blocks"]}
    assert [o["value"] for o in blocks["clusters"]["element"]["options"]] == [
        "cluster-a",
        "cluster-b",
    ]
    assert list(blocks) == ["clusters", "pilot", "services", "update", "approvers"]
    assert bot.slack.calls_to("views.open")[0].params["trigger_id"].startswith("trigger-")


async def test_a_submission_with_errors_is_refused_under_the_field(bot: BotServer) -> None:
    view = await opened_modal(bot)
    answer = await submit(bot, view, values(clusters=["cluster-a"], pilot="many"))
    assert answer["response_action"] == "errors"
    assert answer["errors"] == {"pilot": "pilot: 'many' is not a whole number ≥ 0 (e.g. pilot=2)"}
    answer = await submit(bot, view, values(clusters=["cluster-a"], services="nginx;reboot"))
    assert list(answer["errors"]) == ["services"]
    assert "nginx;reboot" in answer["errors"]["services"]
    assert bot.slack.top_level(CHANNEL) == []  # nothing started


async def test_a_good_submission_starts_the_rollout_with_the_command_as_typed(
    bot: BotServer,
) -> None:
    slack = bot.slack
    view = await opened_modal(bot)
    assert await submit(bot, view, values(clusters=["cluster-b"], pilot="1")) == {}
    await wait_for(lambda: slack.top_level(CHANNEL), timeout=60)
    card_ts = slack.top_level(CHANNEL)[-1]["ts"]
    await wait_for(
        lambda: any("Approval needed" in m["text"] for m in slack.thread(CHANNEL, card_ts)),
        timeout=60,
    )
    approval = next(m for m in slack.thread(CHANNEL, card_ts) if "Approval needed" in m["text"])
    rollout_id = approval["blocks"][1]["elements"][0]["value"]
    request = await bot.bot.rollouts.request(rollout_id)
    assert request.update_command == UPDATE and request.target_clusters == ["cluster-b"]
    assert f"`{UPDATE}`" in slack.card_versions(CHANNEL, card_ts)[0]
    await bot.bot.rollouts.handle(rollout_id).cancel()
