"""`patchpilot config check`: try every configured dependency, say what is wrong and how to fix it.

Each check is bounded in time (``timeout`` seconds, default 5) and the checks run concurrently, so
the whole command answers in a few seconds even when everything is down. A check reports ``ok``,
``fail`` (the exit code becomes 1), ``warn`` (worth knowing, not fatal) or ``skip`` (not
configured, and that is allowed: e-mail and Slack are optional).
"""

from __future__ import annotations

import asyncio
import json
import os
import smtplib
import ssl
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bot.settings import Settings

CHECKS = (
    "temporal",
    "vault",
    "inventory",
    "known_hosts",
    "smtp",
    "slack",
    "codec",
    "notifications",
)
DEFAULT_SLACK_API_URL = "https://slack.com/api/"


class Status(StrEnum):
    OK = "ok"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


_MARK = {
    Status.OK: "[green]✓[/]",
    Status.FAIL: "[bold red]✗[/]",
    Status.WARN: "[yellow]![/]",
    Status.SKIP: "[dim]-[/]",
}


@dataclass
class CheckResult:
    check: str
    status: Status
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == Status.FAIL


def _short(error: BaseException, limit: int = 200) -> str:
    text = str(error).strip().replace("\n", " ") or type(error).__name__
    return text[:limit]


# ---------------------------------------------------------------------- Temporal


def _connect_problem(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        return "no answer"
    text = str(error)
    if "ConnectionRefused" in text or "Connection refused" in text:
        return "connection refused (nothing listens there)"
    if "dns error" in text or "failed to lookup address" in text:
        return "the host name does not resolve"
    return _short(error)


async def check_temporal(settings: Settings, timeout: float) -> list[CheckResult]:
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import (
        DescribeNamespaceRequest,
        DescribeTaskQueueRequest,
    )
    from temporalio.client import Client
    from temporalio.service import RPCError, RPCStatusCode

    address, namespace = settings.temporal_address, settings.temporal_namespace
    try:
        client = await asyncio.wait_for(
            Client.connect(address, namespace=namespace), timeout=timeout
        )
    except Exception as error:
        reason = _connect_problem(error)
        return [
            CheckResult(
                "Temporal",
                Status.FAIL,
                f"cannot reach Temporal at {address}: {reason}",
                "Start the Temporal server (for a trial: `temporal server start-dev`) and set "
                "TEMPORAL_ADDRESS=host:port (default localhost:7233)",
            )
        ]
    rpc_timeout = timedelta(seconds=timeout)
    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace), timeout=rpc_timeout
        )
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return [
                CheckResult(
                    "Temporal",
                    Status.FAIL,
                    f"{address} answers, but namespace {namespace!r} does not exist",
                    f"Create it (`temporal operator namespace create --namespace {namespace}`) "
                    "or set TEMPORAL_NAMESPACE to an existing one",
                )
            ]
        return [
            CheckResult(
                "Temporal",
                Status.FAIL,
                f"{address} refused DescribeNamespace({namespace}): {_short(error)}",
                "Check TEMPORAL_ADDRESS/TEMPORAL_NAMESPACE and the server's logs",
            )
        ]
    except Exception as error:
        return [
            CheckResult(
                "Temporal",
                Status.FAIL,
                f"{address}: DescribeNamespace({namespace}) failed: {_short(error)}",
                "Check that TEMPORAL_ADDRESS is a Temporal frontend (gRPC, usually port 7233)",
            )
        ]
    results = [
        CheckResult("Temporal", Status.OK, f"{address} reachable, namespace {namespace!r} exists")
    ]
    try:
        queue = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=namespace,
                task_queue=TaskQueue(name=settings.task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            ),
            timeout=rpc_timeout,
        )
        pollers = len(queue.pollers)
    except Exception as error:
        results.append(
            CheckResult(
                "Temporal workers",
                Status.WARN,
                f"cannot describe task queue {settings.task_queue!r}: {_short(error)}",
            )
        )
        return results
    if pollers:
        results.append(
            CheckResult(
                "Temporal workers",
                Status.OK,
                f"{pollers} worker(s) polling task queue {settings.task_queue!r}",
            )
        )
    else:
        results.append(
            CheckResult(
                "Temporal workers",
                Status.WARN,
                f"no worker has polled task queue {settings.task_queue!r} recently: rollouts "
                "would wait",
                "Run `patchpilot bot` (embedded worker) or `patchpilot worker` with the same "
                "PATCHPILOT_TASK_QUEUE",
            )
        )
    return results


# ---------------------------------------------------------------------- Vault


def check_vault(settings: Settings, secret_prefix: str, timeout: float) -> list[CheckResult]:
    import hvac
    import hvac.exceptions
    import requests

    mount = settings.vault_kv_mount
    if not settings.vault_addr:
        return [
            CheckResult(
                "Vault auth",
                Status.FAIL,
                "VAULT_ADDR is not set: the worker cannot fetch SSH keys",
                "Set VAULT_ADDR=https://vault.example.com:8200 (Vault or OpenBao)",
            ),
            CheckResult("Vault KV mount", Status.SKIP, "needs VAULT_ADDR"),
        ]
    address = settings.vault_addr
    token = settings.vault_token.get_secret_value() if settings.vault_token else None
    client = hvac.Client(url=address, token=token, timeout=timeout)
    try:
        health = client.sys.read_health_status(method="GET")
        if not isinstance(health, dict):
            health = health.json()
    except (requests.exceptions.RequestException, hvac.exceptions.VaultError, ValueError) as error:
        return [
            CheckResult(
                "Vault auth",
                Status.FAIL,
                f"cannot reach Vault at {address}: {_short(error)}",
                "Check VAULT_ADDR (scheme, host, port) and that Vault is running",
            ),
            CheckResult("Vault KV mount", Status.SKIP, "needs a reachable Vault"),
        ]
    if health.get("sealed"):
        return [
            CheckResult(
                "Vault auth",
                Status.FAIL,
                f"Vault at {address} is sealed",
                "Unseal it (`vault operator unseal` / `bao operator unseal`)",
            ),
            CheckResult("Vault KV mount", Status.SKIP, "needs an unsealed Vault"),
        ]

    try:
        if token:
            info = client.auth.token.lookup_self()["data"]
            ttl = int(info.get("ttl") or 0)
            expires = (
                "never expires" if ttl == 0 else f"expires in {ttl // 3600}h{ttl % 3600 // 60:02d}m"
            )
            auth = CheckResult(
                "Vault auth",
                Status.OK,
                f"{address}: token valid (policies {', '.join(info.get('policies') or [])}; "
                f"{expires})",
            )
            if 0 < ttl < 24 * 3600:
                auth.status = Status.WARN
                auth.fix = "The token expires within a day: renew it or use AppRole"
        elif settings.vault_role_id and settings.vault_secret_id:
            client.auth.approle.login(
                role_id=settings.vault_role_id,
                secret_id=settings.vault_secret_id.get_secret_value(),
            )
            auth = CheckResult("Vault auth", Status.OK, f"{address}: AppRole login succeeded")
        else:
            return [
                CheckResult(
                    "Vault auth",
                    Status.FAIL,
                    "no Vault credentials for the worker",
                    "Set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID (AppRole)",
                ),
                CheckResult("Vault KV mount", Status.SKIP, "needs Vault credentials"),
            ]
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest) as error:
        what = "token" if token else "AppRole login"
        return [
            CheckResult(
                "Vault auth",
                Status.FAIL,
                f"Vault at {address} refused the {what}: {_short(error, 120)}",
                "Set VAULT_TOKEN to a valid, unexpired token (check with `vault token lookup`), "
                "or VAULT_ROLE_ID + VAULT_SECRET_ID for AppRole",
            ),
            CheckResult("Vault KV mount", Status.SKIP, "needs valid Vault credentials"),
        ]
    except (requests.exceptions.RequestException, hvac.exceptions.VaultError) as error:
        return [
            CheckResult(
                "Vault auth",
                Status.FAIL,
                f"Vault at {address}: authentication failed: {_short(error)}",
                "Check VAULT_ADDR and the Vault server's logs",
            ),
            CheckResult("Vault KV mount", Status.SKIP, "needs valid Vault credentials"),
        ]
    return [auth, _check_kv(client, mount, secret_prefix)]


def _check_kv(client: Any, mount: str, prefix: str) -> CheckResult:
    import hvac.exceptions
    import requests

    path = f"{prefix}/default"
    shown = f"{mount}/{path}"
    policy_fix = (
        f"Check PATCHPILOT_VAULT_KV_MOUNT (now {mount!r}) names a KV v2 mount, and that the "
        f"worker's policy allows read on {mount}/data/{prefix}/*"
    )
    mount_known = False
    try:
        info = client.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}")
        data = info.get("data", {}) if isinstance(info, dict) else {}
        kind, version = data.get("type"), str((data.get("options") or {}).get("version", "1"))
        if kind != "kv" or version != "2":
            return CheckResult(
                "Vault KV mount",
                Status.FAIL,
                f"{mount}/ is a {kind or 'unknown'} mount (version {version}), not KV v2",
                f"Enable KV v2 there (`vault secrets enable -path={mount} kv-v2`) or set "
                "PATCHPILOT_VAULT_KV_MOUNT to your KV v2 mount",
            )
        mount_known = True
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException):
        pass  # policies often hide mount metadata; reading the key below says enough
    try:
        secret = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True
        )
    except hvac.exceptions.InvalidPath:
        if mount_known:
            return CheckResult(
                "Vault KV mount",
                Status.WARN,
                f"KV v2 mount {mount}/ readable, but there is no key at {shown}; rollouts need "
                f"{mount}/{prefix}/<host> for every host then",
                f"Store the SSH key: `vault kv put -mount={mount} {path} "
                "private_key=@id_ed25519 username=<user>`",
            )
        return CheckResult(
            "Vault KV mount",
            Status.FAIL,
            f"nothing at {shown}: the mount {mount!r} or the key does not exist",
            policy_fix,
        )
    except hvac.exceptions.Forbidden:
        return CheckResult(
            "Vault KV mount",
            Status.FAIL,
            f"permission denied reading {shown}",
            policy_fix,
        )
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as error:
        return CheckResult(
            "Vault KV mount", Status.FAIL, f"reading {shown} failed: {_short(error)}", policy_fix
        )
    fields = (secret.get("data") or {}).get("data") or {}
    if not fields.get("private_key"):
        return CheckResult(
            "Vault KV mount",
            Status.FAIL,
            f"{shown} exists but has no 'private_key' field",
            "Store the key under the field name private_key (and optionally username)",
        )
    return CheckResult("Vault KV mount", Status.OK, f"SSH key readable at {shown}")


# ---------------------------------------------------------------------- inventory, known_hosts


def check_inventory(settings: Settings) -> tuple[CheckResult, dict[str, list[Any]] | None]:
    from activities.inventory import InventoryError, load_inventory

    if settings.inventory is None:
        return (
            CheckResult(
                "Inventory",
                Status.FAIL,
                "PATCHPILOT_INVENTORY is not set: no cluster can be resolved",
                "Set PATCHPILOT_INVENTORY to an Ansible YAML inventory (groups are clusters)",
            ),
            None,
        )
    try:
        clusters = load_inventory(settings.inventory)
    except InventoryError as error:
        return (
            CheckResult(
                "Inventory",
                Status.FAIL,
                _short(error, 300),
                f"Make PATCHPILOT_INVENTORY ({settings.inventory}) a readable Ansible YAML "
                "inventory: all: children: <cluster>: hosts: <host>: {ansible_host: ...}",
            ),
            None,
        )
    with_hosts = {name: hosts for name, hosts in clusters.items() if hosts}
    if not with_hosts:
        return (
            CheckResult(
                "Inventory",
                Status.FAIL,
                f"{settings.inventory} names no cluster with hosts",
                "Add groups with hosts under all: children:",
            ),
            clusters,
        )
    listed = ", ".join(f"{name} ({len(hosts)} hosts)" for name, hosts in with_hosts.items())
    return (
        CheckResult(
            "Inventory", Status.OK, f"{settings.inventory}: {len(with_hosts)} clusters: {listed}"
        ),
        clusters,
    )


def check_known_hosts(settings: Settings, clusters: dict[str, list[Any]] | None) -> CheckResult:
    import asyncssh

    path: Path = settings.known_hosts
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return CheckResult(
            "known_hosts",
            Status.FAIL,
            f"{path} does not exist: no host key can be verified, so no SSH connection is made",
            "Set PATCHPILOT_KNOWN_HOSTS to a known_hosts file with every host's key "
            "(e.g. `ssh-keyscan -p PORT HOST >> FILE`, then verify the fingerprints)",
        )
    except (OSError, UnicodeDecodeError) as error:
        return CheckResult(
            "known_hosts",
            Status.FAIL,
            f"cannot read {path}: {_short(error)}",
            "Make the file readable by the worker's user, or set PATCHPILOT_KNOWN_HOSTS",
        )
    try:
        known = asyncssh.import_known_hosts(text)
    except (ValueError, asyncssh.Error) as error:
        return CheckResult(
            "known_hosts",
            Status.FAIL,
            f"{path} is not a valid known_hosts file: {_short(error)}",
            "Regenerate it with ssh-keyscan or fix the broken line",
        )
    entries = sum(1 for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if clusters is None:
        return CheckResult(
            "known_hosts", Status.OK, f"{path}: {entries} entries (inventory not checked)"
        )
    hosts = [host for members in clusters.values() for host in members]
    missing = []
    for host in hosts:
        port = None if host.port == 22 else host.port
        host_keys, ca_keys, *_ = known.match(host.address, host.address, port)
        if not host_keys and not ca_keys:
            missing.append(host)
    if missing:
        shown = ", ".join(f"{h.name} ({h.address}:{h.port})" for h in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        first = missing[0]
        return CheckResult(
            "known_hosts",
            Status.FAIL,
            f"{path} has no key for {len(missing)} of {len(hosts)} inventory hosts: {shown}{more}",
            f"Add them, e.g. `ssh-keyscan -p {first.port} {first.address} >> {path}` and verify "
            "the fingerprints out of band (host keys are always checked)",
        )
    return CheckResult(
        "known_hosts", Status.OK, f"{path}: keys for all {len(hosts)} inventory hosts"
    )


# ---------------------------------------------------------------------- SMTP, Slack


def check_smtp(settings: Settings, timeout: float) -> CheckResult:
    if not settings.smtp_host:
        return CheckResult(
            "SMTP",
            Status.SKIP,
            "PATCHPILOT_SMTP_HOST not set: e-mail notifications are off",
            "Optional: set PATCHPILOT_SMTP_HOST, PATCHPILOT_SMTP_PORT and PATCHPILOT_SMTP_FROM",
        )
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=timeout) as smtp:
            code, _ = smtp.ehlo()
            if code != 250:
                raise smtplib.SMTPResponseException(code, b"EHLO refused")
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.smtp_username and settings.smtp_password:
                smtp.login(settings.smtp_username, settings.smtp_password.get_secret_value())
            code, _ = smtp.noop()
            if code != 250:
                raise smtplib.SMTPResponseException(code, b"NOOP refused")
    except smtplib.SMTPAuthenticationError as error:
        return CheckResult(
            "SMTP",
            Status.FAIL,
            f"{where} refused the login: {_short(error)}",
            "Check PATCHPILOT_SMTP_USERNAME / PATCHPILOT_SMTP_PASSWORD",
        )
    except (OSError, smtplib.SMTPException) as error:
        return CheckResult(
            "SMTP",
            Status.FAIL,
            f"cannot talk to the SMTP server at {where}: {_short(error)}",
            "Check PATCHPILOT_SMTP_HOST / PATCHPILOT_SMTP_PORT (and PATCHPILOT_SMTP_STARTTLS)",
        )
    tls = ", STARTTLS" if settings.smtp_starttls else ""
    return CheckResult("SMTP", Status.OK, f"{where} answers EHLO and NOOP{tls}")


async def check_slack(settings: Settings, timeout: float) -> CheckResult:
    import httpx

    token = os.environ.get("SLACK_BOT_TOKEN") or _secret(getattr(settings, "slack_bot_token", None))
    if not token:
        return CheckResult(
            "Slack",
            Status.SKIP,
            "SLACK_BOT_TOKEN not set: the Slack bot is off (CLI and e-mail still work)",
            "Optional: set SLACK_BOT_TOKEN and SLACK_APP_TOKEN (or SLACK_SIGNING_SECRET)",
        )
    base = (
        os.environ.get("SLACK_API_URL")
        or getattr(settings, "slack_api_url", None)
        or DEFAULT_SLACK_API_URL
    )
    url = str(base).rstrip("/") + "/auth.test"
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            response = await http.post(url, headers={"Authorization": f"Bearer {token}"})
        body = response.json()
    except (httpx.HTTPError, ValueError) as error:
        return CheckResult(
            "Slack",
            Status.FAIL,
            f"auth.test at {url} failed: {_short(error)}",
            "Check network access to Slack, or SLACK_API_URL if you use a proxy/gateway",
        )
    if not isinstance(body, dict) or not body.get("ok"):
        problem = (
            body.get("error", f"HTTP {response.status_code}") if isinstance(body, dict) else ""
        )
        return CheckResult(
            "Slack",
            Status.FAIL,
            f"auth.test refused the bot token: {problem}",
            "Set SLACK_BOT_TOKEN to the app's Bot User OAuth Token (xoxb-...) from "
            "OAuth & Permissions; reinstall the app if it was revoked",
        )
    return CheckResult(
        "Slack",
        Status.OK,
        f"bot token valid: workspace {body.get('team', '?')}, bot user {body.get('user', '?')}",
    )


async def check_codec(settings: Settings) -> CheckResult:
    """The payload encryption keys parse, and a payload survives encode + decode."""
    from temporalio.api.common.v1 import Payload

    make_codec = getattr(settings, "payload_codec", None)
    if make_codec is None:
        return CheckResult("Payload codec", Status.SKIP, "this build has no payload encryption")
    try:
        codec = make_codec()
    except ValueError as error:  # bot.codec.CodecConfigError
        return CheckResult(
            "Payload codec",
            Status.FAIL,
            _short(error, 300),
            "Set PATCHPILOT_CODEC_KEYS (or a PATCHPILOT_CODEC_KEY_FILE) to 'key-id:base64-key' "
            "entries, the current key first; every worker and client needs the same keys",
        )
    if codec is None:
        return CheckResult(
            "Payload codec",
            Status.SKIP,
            "payload encryption off: workflow inputs and results are stored as plain JSON "
            "(they never hold secrets)",
            "Optional: PATCHPILOT_CODEC_KEYS to encrypt them",
        )
    probe = Payload(metadata={"encoding": b"json/plain"}, data=b'{"probe": true}')
    try:
        decoded = await codec.decode(await codec.encode([probe]))
    except Exception as error:
        return CheckResult(
            "Payload codec",
            Status.FAIL,
            f"a payload does not survive encryption and decryption: {_short(error)}",
            "Check the keys in PATCHPILOT_CODEC_KEYS / PATCHPILOT_CODEC_KEY_FILE",
        )
    if list(decoded) != [probe]:
        return CheckResult(
            "Payload codec", Status.FAIL, "decrypting an encrypted payload gave something else"
        )
    current = getattr(codec, "current_key_id", "?")
    return CheckResult(
        "Payload codec", Status.OK, f"payloads encrypted (AES-GCM) with key {current!r}"
    )


# ---------------------------------------------------------------------- notification channels


def check_notifications(settings: Settings, clusters: dict[str, list[Any]] | None) -> CheckResult:
    """Which channel gets which events, and what will not work: per-cluster Teams webhooks of
    clusters the inventory does not know, approval requests routed only to absent channels.
    No webhook is called: a test post would show up in the channel. (Bad URLs and unknown channel
    or event names never get here: the settings refuse them when loaded.)"""
    from urllib.parse import urlsplit

    from activities.notify.routing import EVENTS, allowed

    present: dict[str, str] = {}
    if settings.slack_bot_token or os.environ.get("SLACK_BOT_TOKEN"):
        present["slack"] = "Slack thread"
    if settings.smtp_host:
        present["email"] = "e-mail"
    own = sorted(settings.teams_webhooks)
    if settings.teams_webhook_url or own:
        where = [f"{', '.join(own)} own webhook{'s' if len(own) > 1 else ''}"] if own else []
        if settings.teams_webhook_url:
            where.append("global webhook" + (" for the other clusters" if own else ""))
        present["teams"] = f"Teams ({'; '.join(where)})"
    if settings.webhook_url:
        host = urlsplit(settings.webhook_url.get_secret_value()).netloc
        present["webhook"] = f"JSON webhook at {host}"
    if not present:
        return CheckResult(
            "Notifications",
            Status.SKIP,
            "no channel configured: rollouts are followed with `patchpilot watch`",
            "Optional: SMTP, Slack, PATCHPILOT_TEAMS_WEBHOOK_URL or PATCHPILOT_WEBHOOK_URL",
        )
    routes = settings.notify_routes
    parts = []
    for channel, label in present.items():
        events = allowed(routes, channel)
        parts.append(
            f"{label}: {'every event' if events == EVENTS else ', '.join(events) or 'nothing'}"
        )
    detail = "; ".join(parts)
    unknown = [c for c in own if clusters is not None and c not in clusters]
    if unknown:
        return CheckResult(
            "Notifications",
            Status.WARN,
            f"{detail}; teams_webhooks names clusters not in the inventory: {', '.join(unknown)}",
            "Fix the cluster names in teams_webhooks / PATCHPILOT_TEAMS_WEBHOOKS",
        )
    if not any("approval-request" in allowed(routes, channel) for channel in present):
        return CheckResult(
            "Notifications",
            Status.WARN,
            f"{detail}; no configured channel gets approval requests (approvers must be told "
            "otherwise, or use `patchpilot approve`)",
            "Add approval-request to the notify_routes of a configured channel",
        )
    return CheckResult("Notifications", Status.OK, detail)


def _secret(value: Any) -> str | None:
    if value is None:
        return None
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if getter else value)


# ---------------------------------------------------------------------- running and printing


async def run_checks(
    settings: Settings,
    only: list[str] | None = None,
    secret_prefix: str = "patch-deploy",  # noqa: S107 - a path, not a password
    timeout: float = 5.0,
) -> list[CheckResult]:
    """Run the selected checks at once; each is bounded by ``timeout`` (plus a little)."""
    selected = [name.strip().lower().replace("-", "_") for name in only or []] or list(CHECKS)
    unknown = [name for name in selected if name not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    bound = timeout + 2

    async def bounded(name: str, work: Any) -> list[CheckResult]:
        try:
            result = await asyncio.wait_for(work, timeout=bound)
        except TimeoutError:
            return [CheckResult(name, Status.FAIL, f"no answer within {bound:.0f}s", "")]
        return result if isinstance(result, list) else [result]

    def files() -> list[CheckResult]:
        inventory, clusters = check_inventory(settings)
        found = []
        if "inventory" in selected:
            found.append(inventory)
        if "known_hosts" in selected:
            found.append(check_known_hosts(settings, clusters))
        if "notifications" in selected:
            found.append(check_notifications(settings, clusters))
        return found

    jobs: list[Any] = []
    if "temporal" in selected:
        jobs.append(bounded("Temporal", check_temporal(settings, timeout)))
    if "vault" in selected:
        jobs.append(
            bounded("Vault", asyncio.to_thread(check_vault, settings, secret_prefix, timeout))
        )
    if {"inventory", "known_hosts", "notifications"} & set(selected):
        jobs.append(bounded("Inventory", asyncio.to_thread(files)))
    if "smtp" in selected:
        jobs.append(bounded("SMTP", asyncio.to_thread(check_smtp, settings, timeout)))
    if "slack" in selected:
        jobs.append(bounded("Slack", check_slack(settings, timeout)))
    if "codec" in selected:
        jobs.append(bounded("Payload codec", check_codec(settings)))
    groups = await asyncio.gather(*jobs)
    return [result for group in groups for result in group]


def print_json(results: list[CheckResult]) -> int:
    """One JSON document on stdout; returns the exit code (1 if any check failed)."""
    document = {
        "ok": not any(r.failed for r in results),
        "checks": [
            {"check": r.check, "status": r.status.value, "detail": r.detail, "fix": r.fix}
            for r in results
        ],
    }
    print(json.dumps(document, indent=2))
    return 0 if document["ok"] else 1


def print_report(results: list[CheckResult], console: Console) -> int:
    """The table; returns the exit code (1 if any check failed)."""
    table = Table(title="PatchPilot configuration", title_justify="left", show_lines=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("result")
    table.add_column("fix")
    for result in results:
        table.add_row(_MARK[result.status], result.check, result.detail, result.fix)
    console.print(table)
    failed = [r for r in results if r.failed]
    if failed:
        console.print(
            f"[bold red]✗ {len(failed)} problem(s):[/] {', '.join(r.check for r in failed)}"
        )
        return 1
    warned = [r for r in results if r.status == Status.WARN]
    note = f" ({len(warned)} warning(s))" if warned else ""
    console.print(f"[bold green]✓ configuration OK{note}[/]")
    return 0
