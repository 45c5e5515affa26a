"""Temporal behind TLS, configured the SDK's way (TEMPORAL_* variables, temporal.toml profiles):
the real dev server behind a TLS terminator that requires a client certificate, and an API key
read off the wire as the SDK sends it."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from bot.settings import Settings
from bot.worker import connect
from lab import Lab
from lab.tls import Pki, TlsProxy, make_pki, request_headers
from tests.integration.test_rollout import ALICE, BOB, PATCHPILOT, UPDATE
from tests.support import Mailbox, running_worker, wait_for, worker_env


def tls_env(pki: Pki, *, client_cert: bool) -> dict[str, str]:
    env = {"TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(pki.ca_cert)}
    if client_cert:
        env["TEMPORAL_TLS_CLIENT_CERT_PATH"] = str(pki.client_cert)
        env["TEMPORAL_TLS_CLIENT_KEY_PATH"] = str(pki.client_key)
    return env


def run(settings: Settings, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`patchpilot ARGS` with only the environment an operator would give it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPORAL_", "PATCHPILOT_"))}
    return subprocess.run(
        [PATCHPILOT, *args],
        env={**clean, **worker_env(settings), **env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest_asyncio.fixture
async def mtls(pki: Pki, temporal_dev_server) -> AsyncIterator[TlsProxy]:
    async with TlsProxy(pki, temporal_dev_server.address, require_client_cert=True) as proxy:
        yield proxy


async def test_a_rollout_runs_over_mtls_and_nothing_connects_without_a_certificate(
    fleet: Lab,
    worker_settings: Settings,
    mailbox: Mailbox,
    pki: Pki,
    mtls: TlsProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio

    settings = worker_settings.model_copy(update={"temporal_address": mtls.address})
    with_cert = tls_env(pki, client_cert=True)
    for key, value in with_cert.items():
        monkeypatch.setenv(key, value)
    client = await connect(settings)  # the worker's own connection, through the proxy
    rollout_id = f"it-mtls-{uuid.uuid4().hex[:6]}"
    async with running_worker(client, settings):
        started = await asyncio.to_thread(
            run, settings, with_cert, "start", "--cluster", "cluster-a", "--pilot", "1",
            "--approver", ALICE, "--requester", BOB, "--update", UPDATE, "--id", rollout_id,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        await wait_for(lambda: mailbox.events("approval-request"), timeout=60)
        approved = await asyncio.to_thread(
            run, settings, with_cert, "approve", rollout_id, "--as", ALICE
        )
        assert approved.returncode == 0, approved.stderr
        done = await asyncio.to_thread(run, settings, with_cert, "result", rollout_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "patched 3, failed 0" in done.stdout
    assert all(fleet.update_count(name) == 1 for name in fleet.clusters["cluster-a"])
    assert len(mtls.received) >= 2, "the worker and the CLI both went through the TLS proxy"

    without_cert = tls_env(pki, client_cert=False)
    refused = await asyncio.to_thread(run, settings, without_cert, "status", rollout_id)
    assert refused.returncode == 2
    assert f"cannot reach Temporal at {mtls.address}" in refused.stderr
    plain = await asyncio.to_thread(run, settings, {}, "status", rollout_id)
    assert plain.returncode == 2 and "cannot reach Temporal" in plain.stderr

    checked = await asyncio.to_thread(
        run, settings, with_cert, "config", "check", "--only", "temporal", "--json"
    )
    [row] = [r for r in json.loads(checked.stdout)["checks"] if r["check"] == "Temporal"]
    assert row["status"] == "ok", row
    assert f"profile default: {mtls.address}, namespace default" in row["detail"]
    assert "TLS on with a client certificate, auth mTLS" in row["detail"]
    assert "certificate of 127.0.0.1 verifies (commonName=lab server" in row["detail"]


async def test_config_check_says_when_the_server_certificate_does_not_verify(
    worker_settings: Settings, pki: Pki, mtls: TlsProxy, tmp_path: Path
) -> None:
    import asyncio

    other = make_pki(tmp_path / "other", ca_name="Some other CA")
    settings = worker_settings.model_copy(update={"temporal_address": mtls.address})
    env = {**tls_env(pki, client_cert=True), "TEMPORAL_TLS_SERVER_CA_CERT_PATH": str(other.ca_cert)}
    checked = await asyncio.to_thread(
        run, settings, env, "config", "check", "--only", "temporal", "--json"
    )
    assert checked.returncode == 1
    [row] = [r for r in json.loads(checked.stdout)["checks"] if r["check"] == "Temporal"]
    assert row["status"] == "fail"
    assert "the certificate of" in row["detail"] and "does not verify" in row["detail"]
    assert "CERTIFICATE_VERIFY_FAILED" in row["detail"]
    assert "TEMPORAL_TLS_SERVER_CA_CERT_PATH" in row["fix"]


async def test_an_api_key_goes_on_the_wire_as_a_bearer_token_from_a_temporal_toml_profile(
    worker_settings: Settings,
    pki: Pki,
    temporal_dev_server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = f"pp-key-{uuid.uuid4().hex}"
    async with TlsProxy(pki, temporal_dev_server.address, require_client_cert=False) as proxy:
        config = tmp_path / "temporal.toml"
        config.write_text(
            f'[profile.cloud]\naddress = "{proxy.address}"\nnamespace = "default"\n'
            f'api_key = "{key}"\n[profile.cloud.tls]\nserver_ca_cert_path = "{pki.ca_cert}"\n'
        )
        for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))
        monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
        settings = Settings(task_queue=worker_settings.task_queue)  # no address of its own
        client = await connect(settings)
        assert [w async for w in client.list_workflows("WorkflowId = 'none'")] == []
    sent = [h for stream in proxy.received for h in request_headers(bytes(stream))]
    calls = [h for h in sent if h.get(":path", "").startswith("/temporal.api.workflowservice")]
    assert calls, "no gRPC call went through the proxy"
    assert all(h.get("authorization") == f"Bearer {key}" for h in calls), calls[0]
