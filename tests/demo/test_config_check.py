"""`patchpilot config check` against the real parts, configured well and badly."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from bot.settings import Settings
from lab import Lab, free_port
from tests.support import worker_env

PATCHPILOT = str(Path(sys.executable).parent / "patchpilot")
GOOD_SLACK_TOKEN = "xoxb-good-token"


class SlackAuthTest(BaseHTTPRequestHandler):
    """Answers POST /api/auth.test as Slack does: 200 with ok true or ok false + error."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path != "/api/auth.test":
            body: dict[str, Any] = {"ok": False, "error": "unknown_method"}
        elif self.headers.get("Authorization") == f"Bearer {GOOD_SLACK_TOKEN}":
            body = {"ok": True, "team": "PatchPilot Lab", "user": "patchpilot", "user_id": "U1"}
        else:
            body = {"ok": False, "error": "invalid_auth"}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def slack_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), SlackAuthTest)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/api/"
    server.shutdown()
    server.server_close()


def check(
    env: dict[str, str], *args: str, table: bool = True
) -> tuple[int, dict[str, dict[str, str]], str]:
    """Run `patchpilot config check` as JSON (parsed) and, if asked, as the table people see."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PATCHPILOT_", "VAULT_", "TEMPORAL_", "SLACK_"))
    }
    full_env = {**clean, **env, "COLUMNS": "250"}
    # Generous per-check time: other suites may load this machine; nothing here is meant to hang.
    args = ("--timeout", "15", *args)
    as_json = subprocess.run(
        [PATCHPILOT, "config", "check", "--json", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    document = json.loads(as_json.stdout)
    assert document["ok"] == (as_json.returncode == 0)
    by_name = {row["check"]: row for row in document["checks"]}
    if not table:
        return as_json.returncode, by_name, as_json.stdout
    shown = subprocess.run(
        [PATCHPILOT, "config", "check", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == as_json.returncode, (as_json.stdout, shown.stdout)
    return as_json.returncode, by_name, shown.stdout


def test_good_settings_pass_every_check(
    worker_settings: Settings, fleet: Lab, slack_api: str, tmp_path: Path
) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "slack_ed25519").write_bytes(key.export_private_key())
    policy = tmp_path / "policy.yml"
    policy.write_text(
        "people:\n  alice: {email: alice@example.com}\n  bob: {email: bob@example.com}\n"
        f'frontends:\n  slack: {{keys: ["{key.export_public_key().decode().strip()}"]}}\n'
        "clusters:\n  cluster-*: {requesters: [bob], approvers: [alice]}\n"
    )
    env = {
        **worker_env(worker_settings),
        "PATCHPILOT_POLICY": str(policy),
        "PATCHPILOT_SIGNING_KEY": str(tmp_path / "slack_ed25519"),
        "PATCHPILOT_SIGNER": "slack",
        "SLACK_BOT_TOKEN": GOOD_SLACK_TOKEN,
        "SLACK_API_URL": slack_api,
        "PATCHPILOT_CODEC_KEYS": "k2:" + base64.b64encode(bytes(range(32))).decode(),
    }
    code, rows, table = check(env)
    assert code == 0, table
    assert {name: row["status"] for name, row in rows.items()} == {
        "Temporal": "ok",
        # No worker runs for this test's task queue: worth a warning, not a failure.
        "Temporal workers": "warn",
        "Vault auth": "ok",
        "Vault KV mount": "ok",
        "Inventory": "ok",
        "known_hosts": "ok",
        "Policy": "ok",
        "SMTP": "ok",
        "Slack": "ok",
        "Payload codec": "ok",
        "Notifications": "ok",
    }, table
    assert (
        "2 people, 1 cluster rule(s), front ends: slack; signing as slack"
        in (rows["Policy"]["detail"])
    )
    assert "namespace 'default' exists" in rows["Temporal"]["detail"]
    assert "2 clusters: cluster-a (3 hosts), cluster-b (3 hosts)" in rows["Inventory"]["detail"]
    assert "keys for all 6 inventory hosts" in rows["known_hosts"]["detail"]
    assert "SSH key readable at secret/patch-deploy/default" in rows["Vault KV mount"]["detail"]
    assert "workspace PatchPilot Lab" in rows["Slack"]["detail"]
    assert "with key 'k2'" in rows["Payload codec"]["detail"]
    assert rows["Notifications"]["detail"] == "Slack thread: every event; e-mail: every event"
    assert "✓ configuration OK" in table
    assert "✗" not in table


def test_wrong_token_missing_inventory_and_temporal_down_are_each_named(
    worker_settings: Settings, tmp_path: Path, slack_api: str
) -> None:
    env = {
        **worker_env(worker_settings),
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",  # nothing listens there
        "VAULT_TOKEN": "not-the-token",
        "PATCHPILOT_INVENTORY": str(tmp_path / "missing.yml"),
        "SLACK_BOT_TOKEN": "xoxb-revoked",
        "SLACK_API_URL": slack_api,
        "PATCHPILOT_CODEC_KEYS": "k1:not base64!",
    }
    code, rows, table = check(env)
    assert code == 1, table
    assert rows["Temporal"]["status"] == "fail"
    assert "connection refused" in rows["Temporal"]["detail"]
    assert "TEMPORAL_ADDRESS" in rows["Temporal"]["fix"]
    assert rows["Vault auth"]["status"] == "fail"
    assert "refused the token" in rows["Vault auth"]["detail"]
    assert "VAULT_TOKEN" in rows["Vault auth"]["fix"]
    assert rows["Vault KV mount"]["status"] == "skip"
    assert rows["Inventory"]["status"] == "fail"
    assert "cannot read inventory" in rows["Inventory"]["detail"]
    assert rows["Slack"]["status"] == "fail" and "invalid_auth" in rows["Slack"]["detail"]
    assert rows["Payload codec"]["status"] == "fail"
    assert "PATCHPILOT_CODEC_KEYS" in rows["Payload codec"]["detail"]
    # What still works is still reported as working.
    assert rows["SMTP"]["status"] == "ok"
    assert "✗ 5 problem(s): Temporal, Vault auth, Inventory, Slack, Payload codec" in table
    for line in table.splitlines():
        if "│ Temporal " in line or "│ Vault auth " in line or "│ Inventory " in line:
            assert "✗" in line, line


def test_missing_namespace_bad_yaml_unknown_host_key_and_smtp_down(
    worker_settings: Settings, fleet: Lab, tmp_path: Path
) -> None:
    broken_yaml = tmp_path / "inventory.yml"
    broken_yaml.write_text("all:\n  children:\n    cluster-a: [unclosed\n")
    partial_known_hosts = tmp_path / "known_hosts"
    partial_known_hosts.write_text(fleet.known_hosts_path.read_text().splitlines()[0] + "\n")
    env = {
        **worker_env(worker_settings),
        "TEMPORAL_NAMESPACE": "no-such-namespace",
        "PATCHPILOT_SMTP_PORT": str(free_port()),
    }
    code, rows, table = check(env, "--only", "temporal,inventory,known_hosts,smtp", table=False)
    assert code == 1, table
    assert set(rows) == {"Temporal", "Inventory", "known_hosts", "SMTP"}
    assert rows["Temporal"]["status"] == "fail"
    assert "namespace 'no-such-namespace' does not exist" in rows["Temporal"]["detail"]
    assert "temporal operator namespace create" in rows["Temporal"]["fix"]
    assert rows["SMTP"]["status"] == "fail" and "PATCHPILOT_SMTP_PORT" in rows["SMTP"]["fix"]
    assert rows["known_hosts"]["status"] == "ok"  # the inventory is fine

    env["PATCHPILOT_INVENTORY"] = str(broken_yaml)
    code, rows, _ = check(env, "--only", "inventory", table=False)
    assert code == 1 and "is not valid YAML" in rows["Inventory"]["detail"]

    env["PATCHPILOT_INVENTORY"] = str(fleet.inventory_path)
    env["PATCHPILOT_KNOWN_HOSTS"] = str(partial_known_hosts)
    code, rows, table = check(env, "--only", "known_hosts", table=False)
    assert code == 1, table
    assert "has no key for 5 of 6 inventory hosts" in rows["known_hosts"]["detail"]
    assert "ssh-keyscan -p" in rows["known_hosts"]["fix"]


def test_unknown_check_name_is_a_usage_error() -> None:
    result = subprocess.run(
        [PATCHPILOT, "config", "check", "--only", "temporal,dns"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown check(s) dns" in result.stderr


def test_notification_channels_routes_and_a_bad_route(worker_settings: Settings) -> None:
    secret = "sig=c2VjcmV0LXNpZ25hdHVyZQ"
    env = {
        **worker_env(worker_settings),
        "PATCHPILOT_TEAMS_WEBHOOKS": json.dumps(
            {"cluster-a": f"https://a.example.com/hook?{secret}", "cluster-x": "https://x.example/"}
        ),
        "PATCHPILOT_WEBHOOK_URL": f"https://hooks.example.com/in?{secret}",
        "PATCHPILOT_NOTIFY_ROUTES": json.dumps({"webhook": ["host-start", "summary"]}),
    }
    code, rows, output = check(env, "--only", "notifications", table=False)
    assert code == 0, output
    assert set(rows) == {"Notifications"}
    row = rows["Notifications"]
    assert row["status"] == "warn"
    assert row["detail"] == (
        "e-mail: every event; Teams (cluster-a, cluster-x own webhooks): every event; "
        "JSON webhook at hooks.example.com: host-start, summary; teams_webhooks names clusters "
        "not in the inventory: cluster-x"
    )
    assert secret not in output

    env["PATCHPILOT_NOTIFY_ROUTES"] = json.dumps({"teams": ["approval-request", "host-end"]})
    result = subprocess.run(
        [PATCHPILOT, "config", "check", "--only", "notifications"],
        env={**os.environ, **env, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "invalid settings" in result.stderr
    assert "teams: unknown event 'host-end' (valid events: approval-request, host-start, " in (
        result.stderr
    )
    assert secret not in result.stderr + result.stdout
