"""The bot in HTTP mode behind a real HTTP server: signatures, acks, bad input; real Temporal."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from temporalio.client import Client

from bot.settings import Settings
from lab.slack_standin import SlackStandIn, slash_command_body, slash_command_fields
from tests.slack.helpers import (
    ALICE,
    BOB,
    CHANNEL,
    UPDATE,
    BotServer,
    ack_text,
    people,
    running_bot,
    slack_settings,
)
from tests.support import end_rollouts, wait_for

INVENTORY = """\
cluster-a:
  hosts:
    a1: {ansible_host: 127.0.9.1}
cluster-b:
  hosts:
    b1: {ansible_host: 127.0.9.2}
"""


@pytest_asyncio.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(channels={CHANNEL, "CNOTIN"}, not_member={"CNOTIN"}) as standin:
        people(standin)
        yield standin


@pytest_asyncio.fixture
async def settings(
    tmp_path: Path, temporal_dev_server, temporal_client: Client, slack: SlackStandIn
) -> AsyncIterator[Settings]:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(INVENTORY)
    base = Settings(
        temporal_address=temporal_dev_server.address,
        task_queue=f"slack-{uuid.uuid4().hex[:8]}",
        inventory=inventory,
    )
    yield slack_settings(base, slack)
    # No worker ever runs these rollouts: ended, so no later test's query waits on them.
    await end_rollouts(temporal_client, base.task_queue)


@pytest_asyncio.fixture
async def server(
    settings: Settings,
    temporal_client: Client,
    slack: SlackStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[BotServer]:
    # No worker runs here: the approval request is posted with its hosts "not resolved yet"
    # once the bot stops waiting for them (90 s in production).
    monkeypatch.setattr("bot.slack.start.SELECTION_WAIT", 2.0)
    async with running_bot(settings, temporal_client, slack) as running:
        yield running


async def started_workflows(client: Client, settings: Settings) -> list[str]:
    return [
        execution.id
        async for execution in client.list_workflows(query=f"TaskQueue='{settings.task_queue}'")
    ]


GOOD = f'cluster-a pilot=1 update="{UPDATE}" approvers=<@{ALICE}|alice>'


async def test_forged_signature_and_stale_timestamp_get_401_and_start_nothing(
    server: BotServer, slack: SlackStandIn, temporal_client: Client, settings: Settings
) -> None:
    forged = await server.command(GOOD, secret="not-the-signing-secret")
    stale = await server.command(GOOD, timestamp=int(time.time()) - 6 * 60)
    assert forged[0] == 401 and stale[0] == 401
    click = await server.click("patchpilot_approve", "any-rollout", ALICE, "1.2", secret="forged")
    assert click[0] == 401
    assert slack.calls == [], "a refused request must not reach Slack's API"
    assert await started_workflows(temporal_client, settings) == []
    # The same request, correctly signed and fresh, is accepted: the 401s were the signature's.
    accepted = await server.command(GOOD)
    assert accepted[0] == 200
    await wait_for(lambda: slack.calls_to("chat.postMessage"), timeout=60)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (f'cluster-z update="{UPDATE}" approvers=<@{ALICE}>', "unknown cluster: cluster-z (known:"),
        (f'cluster-a colour=red update="{UPDATE}" approvers=<@{ALICE}>', "unknown option 'colour'"),
        (f'cluster-a pilot=many update="{UPDATE}" approvers=<@{ALICE}>', "pilot: 'many' is not"),
        (
            f'cluster-a services="nginx;reboot" update="{UPDATE}" approvers=<@{ALICE}>',
            "serviceList[0]: service name 'nginx;reboot' is not allowed",
        ),
        (f'cluster-a update="{UPDATE}"', "no approvers"),
    ],
)
async def test_bad_commands_get_an_ephemeral_problem_and_usage_in_the_ack(
    server: BotServer,
    slack: SlackStandIn,
    temporal_client: Client,
    settings: Settings,
    text: str,
    problem: str,
) -> None:
    status, body = await server.command(text)
    assert status == 200
    answer = json.loads(body)
    assert answer["response_type"] == "ephemeral"
    assert problem in answer["text"] and "*Usage*" in answer["text"]
    assert slack.calls_to("chat.postMessage") == [] and slack.calls_to("users.info") == []
    assert await started_workflows(temporal_client, settings) == []


async def test_help_is_the_usage(server: BotServer) -> None:
    status, body = await server.command("help")
    assert status == 200 and "*Examples*" in ack_text(body)


@pytest.mark.parametrize(
    ("approvers", "problem"),
    [
        ("<@UNOBODY>", "cannot look up <@UNOBODY> in Slack (user_not_found)"),
        ("<@UNOMAIL>", "<@UNOMAIL> has no e-mail address visible to PatchPilot"),
        (f"<@{BOB}>", "the requester cannot approve their own rollout"),
        ("@nosuchhandle", "no Slack user @nosuchhandle"),
    ],
)
async def test_identity_problems_after_the_ack_are_told_ephemerally_and_start_nothing(
    server: BotServer,
    slack: SlackStandIn,
    temporal_client: Client,
    settings: Settings,
    approvers: str,
    problem: str,
) -> None:
    status, _ = await server.command(f'cluster-a update="{UPDATE}" approvers={approvers}', user=BOB)
    assert status == 200
    await wait_for(lambda: slack.responses(), timeout=60)
    answer = slack.responses()[0]
    assert answer["response_type"] == "ephemeral" and problem in answer["text"]
    assert slack.calls_to("chat.postMessage") == []
    assert await started_workflows(temporal_client, settings) == []


async def test_a_channel_the_bot_is_not_in_gets_the_invite_hint(
    server: BotServer, slack: SlackStandIn, temporal_client: Client, settings: Settings
) -> None:
    fields = slash_command_fields(GOOD, BOB, "CNOTIN", slack.response_url())
    from urllib.parse import urlencode

    status, _ = await server.post(urlencode(fields))
    assert status == 200
    await wait_for(lambda: slack.responses(), timeout=60)
    assert "not_in_channel" in slack.responses()[0]["text"]
    assert "/invite @PatchPilot" in slack.responses()[0]["text"]
    assert await started_workflows(temporal_client, settings) == []


async def test_a_handle_is_resolved_through_users_list(
    server: BotServer, slack: SlackStandIn, temporal_client: Client, settings: Settings
) -> None:
    status, _ = await server.command(f'cluster-a update="{UPDATE}" approvers=@alice', user=BOB)
    assert status == 200
    await wait_for(lambda: len(slack.top_level(CHANNEL)) == 1, timeout=60)
    await wait_for(lambda: slack.thread(CHANNEL, slack.top_level(CHANNEL)[0]["ts"]), timeout=60)
    request = slack.thread(CHANNEL, slack.top_level(CHANNEL)[0]["ts"])[0]
    assert request["text"].endswith(f"<@{ALICE}>")
    assert len(await started_workflows(temporal_client, settings)) == 1


async def test_socket_mode_dispatch_through_a_real_websocket(
    settings: Settings, temporal_client: Client, slack: SlackStandIn
) -> None:
    """Slack's side of Socket Mode played by the stand-in: apps.connections.open + a WebSocket."""
    async with running_bot(settings, temporal_client, slack) as running:
        handler = AsyncSocketModeHandler(running.app, slack.app_token)
        await handler.connect_async()
        try:
            help_ack = await slack.socket_request(
                "slash_commands", slash_command_fields("help", BOB, CHANNEL)
            )
            assert "*Examples*" in help_ack["payload"]["text"]
            bad = await slack.socket_request(
                "slash_commands",
                slash_command_fields("cluster-z update=x approvers=a@b.co", BOB, CHANNEL),
            )
            assert "unknown cluster: cluster-z" in bad["payload"]["text"]
        finally:
            await handler.close_async()
    assert [call.method for call in slack.calls][:1] == ["apps.connections.open"]


async def test_an_inventory_edit_applies_to_the_next_command(
    server: BotServer, settings: Settings
) -> None:
    text = f'cluster-c update="{UPDATE}" approvers=<@{ALICE}>'
    assert "unknown cluster: cluster-c" in ack_text((await server.command(text))[1])
    assert settings.inventory is not None
    settings.inventory.write_text(INVENTORY + "cluster-c:\n  hosts:\n    c1: {}\n")
    status, body = await server.command(text)
    assert status == 200 and body == ""


async def test_a_replayed_request_is_refused_and_starts_nothing_twice(
    server: BotServer, slack: SlackStandIn, temporal_client: Client, settings: Settings
) -> None:
    body = slash_command_body(GOOD, BOB, CHANNEL, slack.response_url())
    stamp = int(time.time())
    first = await server.post(body, timestamp=stamp)
    replayed = await server.post(body, timestamp=stamp)  # byte for byte, same signature
    assert first[0] == 200
    assert replayed == (401, "replayed request")
    await wait_for(lambda: slack.calls_to("chat.postMessage"), timeout=60)
    await wait_for(lambda: len(slack.calls_to("chat.postMessage")) >= 2, timeout=60)
    assert len(await started_workflows(temporal_client, settings)) == 1


async def test_requests_from_another_workspace_are_refused(
    server: BotServer, slack: SlackStandIn, temporal_client: Client, settings: Settings
) -> None:
    server.bot.team_id = "TOTHERTEAM"  # as auth.test would say for another installation
    status, body = await server.command(GOOD)
    assert status == 200 and "serves Slack workspace TOTHERTEAM only" in ack_text(body)
    click = await server.click("patchpilot_approve", "any-rollout", ALICE, "1.2")
    assert click[0] == 200
    await wait_for(lambda: slack.calls_to("chat.postEphemeral"), timeout=30)
    told = slack.calls_to("chat.postEphemeral")[0]
    assert "is refused" in str(told)
    assert await started_workflows(temporal_client, settings) == []
