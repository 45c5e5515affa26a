"""Real parts for every test package: sshd fleet, OpenBao, Temporal dev server, SMTP server.

Fixtures here are registered once, by the root conftest, so each session-wide part starts once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email
import email.policy
import inspect
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest
import pytest_asyncio
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.service import RPCError

from bot.settings import Settings
from bot.worker import WorkerParts, build_worker
from lab import Lab, OpenBaoProcess, free_port
from tests.fixtures import worker_prefix

FLEET = {"cluster-a": ["a1", "a2", "a3"], "cluster-b": ["b1", "b2", "b3"]}
SERVICES = ["nginx", "postgresql"]
SECRET_PREFIX = "patch-deploy"


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def events(self, event: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["X-PatchPilot-Event"] == event]

    def clear(self) -> None:
        self.messages.clear()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture
def mailbox(smtp_server: tuple[Mailbox, int]) -> Mailbox:
    smtp_server[0].clear()
    return smtp_server[0]


@pytest.fixture(scope="session")
def known_secrets() -> list[str]:
    """Every secret a test hands to PatchPilot; the last test checks no history holds one."""
    return []


@pytest.fixture(scope="session")
def fleet_session(
    tmp_path_factory: pytest.TempPathFactory, openbao: OpenBaoProcess
) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("fleet")
    with Lab(
        root,
        FLEET,
        services=tuple(SERVICES),
        port=free_port(),
        address_prefix=worker_prefix("127.0.4."),
    ) as lab:
        # Per host as well: other labs in the session (bench, demo fallbacks) may seed their own
        # key at <prefix>/default of the same OpenBao; a host's own path is read first.
        lab.seed_vault(openbao.address, openbao.root_token, prefix=SECRET_PREFIX, per_host=True)
        yield lab


@pytest.fixture
def fleet(fleet_session: Lab) -> Lab:
    fleet_session.reset()
    fleet_session.write_inventory()
    return fleet_session


async def end_rollouts(client: Client, task_queue: str) -> None:
    """Terminate every workflow still running on `task_queue` (a test's own queue, at its end).

    A rollout left waiting for approval after its test has no worker any more: a query about it
    (`patchpilot status`, the Slack `status` listing every running rollout) then waits for
    Temporal's query timeout (30 s) instead of answering, in whichever later test of the session
    asks. Ended rollouts are answered from their history at once."""
    query = f"TaskQueue='{task_queue}' AND ExecutionStatus='Running'"
    async for execution in client.list_workflows(query=query):
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        with contextlib.suppress(RPCError):  # ended in the meantime
            await handle.terminate(reason="the test that started it has ended")


@pytest_asyncio.fixture
async def worker_settings(
    fleet: Lab,
    openbao: OpenBaoProcess,
    smtp_server: tuple[Mailbox, int],
    temporal_dev_server,
    temporal_client: Client,
) -> AsyncIterator[Settings]:
    """A worker's settings on a task queue of the test's own; what still runs on that queue
    when the test ends is terminated (`end_rollouts`)."""
    settings = Settings(
        temporal_address=temporal_dev_server.address,
        task_queue=f"it-{uuid.uuid4().hex[:8]}",
        inventory=fleet.inventory_path,
        known_hosts=fleet.known_hosts_path,
        vault_addr=openbao.address,
        vault_token=openbao.root_token,
        smtp_host="127.0.0.1",
        smtp_port=smtp_server[1],
        smtp_from="patchpilot@example.com",
    )
    yield settings
    await end_rollouts(temporal_client, settings.task_queue)


@asynccontextmanager
async def running_worker(client: Client, settings: Settings) -> AsyncIterator[WorkerParts]:
    parts = WorkerParts(settings)
    worker = build_worker(client, settings, parts)
    async with worker:
        yield parts


@pytest_asyncio.fixture
async def worker(temporal_client: Client, worker_settings: Settings) -> AsyncIterator[WorkerParts]:
    async with running_worker(temporal_client, worker_settings) as parts:
        yield parts


# What a PatchPilot worker needs from Vault (README "Vault layout"): read the SSH keys, make,
# record (for the other workers), renew and revoke each rollout's token.
WORKER_POLICY = f"""
path "secret/data/{SECRET_PREFIX}/*" {{ capabilities = ["read"] }}
path "auth/token/create" {{ capabilities = ["create", "update"] }}
path "auth/token/revoke-accessor" {{ capabilities = ["update"] }}
path "auth/token/lookup-accessor" {{ capabilities = ["update"] }}
path "secret/data/patchpilot-rollout-tokens/*" {{ capabilities = ["create", "read", "update"] }}
path "secret/destroy/patchpilot-rollout-tokens/*" {{ capabilities = ["update"] }}
"""


def approle(
    openbao: OpenBaoProcess, role: str, *, token_ttl: str = "1h", token_max_ttl: str = "0"
) -> tuple[str, SecretStr]:
    """An AppRole `role` on `openbao` with the worker's policy; returns (role_id, secret_id)."""
    import hvac

    root = hvac.Client(url=openbao.address, token=openbao.root_token)
    if "approle/" not in root.sys.list_auth_methods():
        root.sys.enable_auth_method("approle")
    root.sys.create_or_update_policy("patchpilot-worker", WORKER_POLICY)
    root.auth.approle.create_or_update_approle(
        role,
        token_policies=["patchpilot-worker"],
        token_ttl=token_ttl,
        token_max_ttl=token_max_ttl,
    )
    role_id = root.auth.approle.read_role_id(role)["data"]["role_id"]
    secret_id = root.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    return role_id, SecretStr(secret_id)


def worker_env(settings: Settings) -> dict[str, str]:
    """The environment an operator would give `patchpilot` for these settings."""
    assert settings.vault_token is not None and settings.vault_addr is not None
    policy = {"PATCHPILOT_POLICY": str(settings.policy)} if settings.policy else {}
    return policy | {
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "PATCHPILOT_TASK_QUEUE": settings.task_queue,
        "PATCHPILOT_INVENTORY": str(settings.inventory),
        "PATCHPILOT_KNOWN_HOSTS": str(settings.known_hosts),
        "VAULT_ADDR": settings.vault_addr,
        "VAULT_TOKEN": settings.vault_token.get_secret_value(),
        "PATCHPILOT_SMTP_HOST": str(settings.smtp_host),
        "PATCHPILOT_SMTP_PORT": str(settings.smtp_port),
        "PATCHPILOT_SMTP_FROM": settings.smtp_from,
    }


async def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1) -> None:
    """Poll `predicate` (a plain or an async function) until it holds; AssertionError after
    `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout

    async def holds() -> bool:
        answer = predicate()
        return bool(await answer) if inspect.isawaitable(answer) else bool(answer)

    while not await holds():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


HISTORIES = Path(__file__).resolve().parent / "histories"


async def record_history(client: Client, workflow_id: str, name: str) -> None:
    """With PATCHPILOT_RECORD_HISTORIES=1, keep this run's history (and its hosts') for replay.

    tests/workflow/test_replay.py replays every kept history against the current workflow code, so a
    non-deterministic change fails CI. Re-record only when a change is meant to be incompatible.
    """
    import os

    if os.environ.get("PATCHPILOT_RECORD_HISTORIES") != "1":
        return
    HISTORIES.mkdir(exist_ok=True)
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    (HISTORIES / f"{name}.json").write_text(history.to_json())
    for event in history.events:
        if event.HasField("child_workflow_execution_started_event_attributes"):
            child_id = event.child_workflow_execution_started_event_attributes.workflow_execution
            child = await client.get_workflow_handle(
                child_id.workflow_id, run_id=child_id.run_id
            ).fetch_history()
            (HISTORIES / f"{name}.host-{child_id.workflow_id}.json").write_text(child.to_json())


def decoded_history(raw: str) -> str:
    """A history's JSON with every payload's base64 `data` decoded, so text in it can be found."""
    found: list[str] = [raw]

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "data" and isinstance(value, str):
                    with contextlib.suppress(ValueError):
                        found.append(base64.b64decode(value).decode("utf-8", "replace"))
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(raw))
    return "\n".join(found)
