"""After every other test: no workflow history on the session's Temporal server holds a secret."""

from __future__ import annotations

import re

import pytest
from temporalio.client import Client

from lab import Lab, OpenBaoProcess
from tests.support import decoded_history

# What a leaked secret looks like even when this test does not know its value.
SECRET_SHAPES = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{8,}"),  # Slack bot/user tokens
    re.compile(r"\bxapp-[A-Za-z0-9-]{8,}"),  # Slack app-level tokens
    re.compile(r"\bhvs\.[A-Za-z0-9_-]{20,}"),  # Vault service tokens
]


@pytest.mark.run_last
async def test_no_history_of_the_whole_session_holds_a_secret(
    temporal_client: Client,
    fleet_session: Lab,
    lab_session: Lab,
    openbao: OpenBaoProcess,
    known_secrets: list[str],
) -> None:
    key_lines = [
        line
        for lab in (fleet_session, lab_session)
        for line in lab.client_private_key.splitlines()
        if line and "PRIVATE KEY" not in line
    ]
    exact = [openbao.root_token, *known_secrets, *key_lines]
    scanned = 0
    async for execution in temporal_client.list_workflows():
        handle = temporal_client.get_workflow_handle(execution.id, run_id=execution.run_id)
        # The raw JSON (failure messages, stack traces, memo, search attributes) and every
        # payload decoded from its base64.
        text = decoded_history((await handle.fetch_history()).to_json())
        scanned += 1
        leaked = [secret[:6] + "…" for secret in exact if secret in text]
        leaked += [shape.pattern for shape in SECRET_SHAPES if shape.search(text)]
        assert not leaked, f"{execution.id} holds secrets: {leaked}"
    assert scanned > 0
