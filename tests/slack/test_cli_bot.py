"""`patchpilot bot`: the Bolt app (HTTP mode or Socket Mode) with the embedded worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from pydantic import SecretStr
from temporalio.client import Client

from bot.settings import Settings
from bot.slack.blocks import APPROVE_ACTION
from bot.slack.runner import run_bot
from lab import Lab, free_port
from lab.slack_standin import (
    SlackStandIn,
    block_action_body,
    block_action_payload,
    signed_headers,
    slash_command_body,
    slash_command_fields,
)
from tests.slack.helpers import ALICE, BOB, CHANNEL, SECRET, UPDATE, people, slack_settings
from tests.support import wait_for, worker_env
from workflows.models import Phase, RolloutSummary

PATCHPILOT = str(Path(sys.executable).parent / "patchpilot")


@pytest_asyncio.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn(channels={CHANNEL}) as standin:
        people(standin)
        yield standin


async def approval_request(slack: SlackStandIn) -> tuple[str, dict[str, Any], str]:
    """(card ts, the approval request in its thread, the rollout id its buttons carry)."""
    await wait_for(lambda: slack.top_level(CHANNEL), timeout=60)
    card_ts = slack.top_level(CHANNEL)[0]["ts"]
    await wait_for(lambda: slack.thread(CHANNEL, card_ts), timeout=60)
    request = slack.thread(CHANNEL, card_ts)[0]
    return card_ts, request, request["blocks"][1]["elements"][0]["value"]


async def rollout_succeeded(
    temporal_client: Client, slack: SlackStandIn, rollout_id: str, card_ts: str
) -> None:
    """The rollout patches the 3 hosts of cluster-a and its thread ends with the summary."""
    handle = temporal_client.get_workflow_handle(rollout_id, result_type=RolloutSummary)
    summary = await asyncio.wait_for(handle.result(), 120)
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    await wait_for(
        lambda: any("Rollout succeeded" in m["text"] for m in slack.thread(CHANNEL, card_ts)),
        timeout=60,
    )


async def test_patchpilot_bot_serves_slash_commands_and_runs_the_rollout(
    fleet: Lab,
    worker_settings: Settings,
    temporal_client: Client,
    slack: SlackStandIn,
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        **os.environ,
        **worker_env(worker_settings),
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": slack.api_url,
        "PATCHPILOT_HTTP_PORT": str(port),
    }
    env.pop("SLACK_APP_TOKEN", None)
    log = (tmp_path / "bot.log").open("w")
    process = subprocess.Popen(
        [PATCHPILOT, "bot", "--host", "127.0.0.1", "--no-policy"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/slack/events"
    try:
        async with aiohttp.ClientSession() as session:

            async def up() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            deadline = asyncio.get_running_loop().time() + 90
            while not await up():
                assert process.poll() is None, (tmp_path / "bot.log").read_text()
                assert asyncio.get_running_loop().time() < deadline, "bot not serving in 90 s"
                await asyncio.sleep(0.1)
            body = slash_command_body(
                f'cluster-a pilot=1 update="{UPDATE}" approvers=<@{ALICE}>',
                BOB,
                CHANNEL,
                slack.response_url(),
            )
            async with session.post(url, data=body, headers=signed_headers(SECRET, body)) as r:
                assert r.status == 200
            card_ts, request, rollout_id = await approval_request(slack)
            click = block_action_body(APPROVE_ACTION, rollout_id, ALICE, CHANNEL, request["ts"])
            async with session.post(url, data=click, headers=signed_headers(SECRET, click)) as r:
                assert r.status == 200
        await rollout_succeeded(temporal_client, slack, rollout_id, card_ts)
        # The card is updated right after the summary is posted.
        await wait_for(
            lambda: "3/3 done" in str(slack.messages[(CHANNEL, card_ts)]["blocks"]), timeout=60
        )
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        log.close()


def test_patchpilot_bot_refuses_a_missing_mode_and_a_bad_defaults_file(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLACK_")}
    env["SLACK_BOT_TOKEN"] = "xoxb-1"
    done = subprocess.run([PATCHPILOT, "bot"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET" in (
        done.stderr
    )
    (tmp_path / "defaults.yml").write_text("channels: {C1: {pilot: many}}\n")
    env["SLACK_SIGNING_SECRET"] = "s"
    env["PATCHPILOT_SLACK_DEFAULTS"] = str(tmp_path / "defaults.yml")
    done = subprocess.run([PATCHPILOT, "bot"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "PATCHPILOT_SLACK_DEFAULTS: Slack defaults" in done.stderr
    assert "channels.C1.pilot" in done.stderr


async def test_run_bot_in_socket_mode_runs_a_rollout_end_to_end(
    fleet: Lab, worker_settings: Settings, temporal_client: Client, slack: SlackStandIn
) -> None:
    """`patchpilot bot`'s coroutine with SLACK_APP_TOKEN: everything through the WebSocket."""
    settings = slack_settings(worker_settings, slack).model_copy(
        update={"slack_app_token": SecretStr(slack.app_token), "slack_signing_secret": None}
    )
    running = asyncio.create_task(run_bot(settings))
    try:
        ack = await slack.socket_request(
            "slash_commands",
            slash_command_fields(
                f'cluster-a pilot=1 update="{UPDATE}" approvers=<@{ALICE}>',
                BOB,
                CHANNEL,
                slack.response_url(),
            ),
            timeout=60,
        )
        assert not ack.get("payload"), "an empty ack: the rollout card is the answer"
        card_ts, request, rollout_id = await approval_request(slack)
        await slack.socket_request(
            "interactive",
            block_action_payload(APPROVE_ACTION, rollout_id, ALICE, CHANNEL, request["ts"]),
        )
        await rollout_succeeded(temporal_client, slack, rollout_id, card_ts)
        assert slack.messages[(CHANNEL, request["ts"])]["text"] == f"Approved by <@{ALICE}>"
        assert [call.method for call in slack.calls][:2] == ["auth.test", "apps.connections.open"]
    finally:
        running.cancel()
        done, _ = await asyncio.wait({running}, timeout=30)
        assert done, "run_bot did not stop within 30 s of being cancelled"
