"""Payload encryption on the real dev server: a rollout's own Vault token is accepted only with a
codec, and then neither it nor failure messages appear in the stored history; the codec server
decodes for callers with the token only."""

from __future__ import annotations

import base64
import json
import os

import httpx
import hvac
import pytest
from aiohttp import web
from pydantic import SecretStr
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter

from bot.codec import data_converter
from bot.settings import Settings
from bot.web.codec_server import build_app
from lab import Lab, OpenBaoProcess, free_port
from tests.integration.test_rollout import approve, rollout, start
from tests.support import running_worker
from workflows.models import Phase, RolloutInput


@pytest.fixture
def codec_settings(worker_settings: Settings) -> Settings:
    keys = f"k2:{base64.b64encode(os.urandom(32)).decode()}"
    # The worker has no Vault credentials of its own: only the rollout's token can work.
    return worker_settings.model_copy(update={"codec_keys": SecretStr(keys), "vault_token": None})


async def encrypted_client(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address, data_converter=data_converter(settings.payload_codec())
    )


async def test_rollout_token_is_encrypted_in_history_and_decodable_with_the_key(
    fleet: Lab,
    openbao: OpenBaoProcess,
    codec_settings: Settings,
    temporal_dev_server,
    known_secrets: list[str],
) -> None:
    admin = hvac.Client(url=openbao.address, token=openbao.root_token)
    token = admin.auth.token.create(policies=["root"], ttl="10m")["auth"]["client_token"]
    known_secrets.append(token)
    raw = rollout(["cluster-b"]).model_dump(by_alias=True, mode="json") | {"vaultToken": token}
    with pytest.raises(ValueError, match="plain text in Temporal history"):
        RolloutInput.at_edge(raw, payload_encryption=False)
    rollout_input = RolloutInput.at_edge(raw, payload_encryption=True)

    client = await encrypted_client(codec_settings)
    async with running_worker(client, codec_settings) as parts:
        handle = await start(client, codec_settings, rollout_input)
        await approve(handle)
        summary = await handle.result()
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 3
    assert parts.vault.reads >= 1

    plain_client = await Client.connect(
        temporal_dev_server.address, data_converter=pydantic_data_converter
    )
    stored = (await plain_client.get_workflow_handle(handle.id).fetch_history()).to_json()
    assert token not in stored
    assert "cluster-b" not in stored and "apt-get" not in stored
    assert "binary/encrypted" in stored or base64.b64encode(b"binary/encrypted").decode() in stored
    decoded = await client.get_workflow_handle(handle.id).fetch_history()
    start_event = decoded.events[0].workflow_execution_started_event_attributes
    payload = start_event.input.payloads[0]
    assert payload.metadata["encoding"] == b"binary/encrypted"
    [clear] = await codec_settings.payload_codec().decode([payload])  # type: ignore[union-attr]
    assert json.loads(clear.data)["vaultToken"] == token


async def test_failure_messages_are_encrypted_too(
    fleet: Lab, openbao: OpenBaoProcess, codec_settings: Settings, temporal_dev_server
) -> None:
    settings = codec_settings.model_copy(update={"vault_token": SecretStr(openbao.root_token)})
    fleet.set_fault("b1", "update-fail")
    client = await encrypted_client(settings)
    async with running_worker(client, settings):
        handle = await start(client, settings, rollout(["cluster-b"]))
        await approve(handle)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    assert "simulated upgrade failure" in str(failed.value.cause)  # readable with the key
    plain_client = await Client.connect(
        temporal_dev_server.address, data_converter=pydantic_data_converter
    )
    stored = (await plain_client.get_workflow_handle(handle.id).fetch_history()).to_json()
    assert "simulated upgrade failure" not in stored
    assert "failed at step update" not in stored


async def test_codec_server_decodes_only_for_bearers_of_the_token(
    codec_settings: Settings,
) -> None:
    codec = codec_settings.payload_codec()
    assert codec is not None
    port = free_port()
    runner = web.AppRunner(
        build_app(codec, token="ui-secret", cors_origins=["http://localhost:8233"])
    )
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        from temporalio.api.common.v1 import Payload

        [sealed] = await codec.encode([Payload(metadata={"encoding": b"json/plain"}, data=b'"hi"')])
        body = {
            "payloads": [
                {
                    "metadata": {
                        k: base64.b64encode(v).decode() for k, v in sealed.metadata.items()
                    },
                    "data": base64.b64encode(sealed.data).decode(),
                }
            ]
        }
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            refused = await http.post("/decode", json=body)
            assert refused.status_code == 401
            wrong = await http.post("/decode", json=body, headers={"Authorization": "Bearer no"})
            assert wrong.status_code == 401
            answer = await http.post(
                "/decode",
                json=body,
                headers={"Authorization": "Bearer ui-secret", "Origin": "http://localhost:8233"},
            )
            assert answer.status_code == 200
            assert answer.headers["Access-Control-Allow-Origin"] == "http://localhost:8233"
            decoded = answer.json()["payloads"][0]
            assert base64.b64decode(decoded["data"]) == b'"hi"'
            preflight = await http.options("/decode", headers={"Origin": "http://localhost:8233"})
            assert preflight.status_code == 204
            assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    finally:
        await runner.cleanup()
