"""`patchpilot approval-server`: starts from the environment, serves pages, refuses bad links."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from activities.notify.links import LinkSigner
from lab import free_port
from tests.teams.conftest import LINK_SECRET

PATCHPILOT = str(Path(sys.executable).parent / "patchpilot")


def test_the_server_needs_secret_and_public_url(monkeypatch) -> None:
    from typer.testing import CliRunner

    from bot.cli import UserError, app

    for name in ("PATCHPILOT_LINK_SECRET", "PATCHPILOT_PUBLIC_URL", "PATCHPILOT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["approval-server", "--no-policy"])
    assert isinstance(result.exception, UserError)
    assert "PATCHPILOT_LINK_SECRET" in str(result.exception)
    monkeypatch.setenv("PATCHPILOT_LINK_SECRET", "short")
    monkeypatch.setenv("PATCHPILOT_PUBLIC_URL", "https://pp.example.com")
    result = CliRunner().invoke(app, ["approval-server", "--no-policy"])
    assert isinstance(result.exception, UserError) and "16 bytes" in str(result.exception)


def test_the_server_needs_a_policy_and_its_signing_key(monkeypatch, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from bot.cli import UserError, app

    for name in ("PATCHPILOT_POLICY", "PATCHPILOT_SIGNING_KEY", "PATCHPILOT_INVENTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATCHPILOT_LINK_SECRET", LINK_SECRET)
    monkeypatch.setenv("PATCHPILOT_PUBLIC_URL", "https://pp.example.com")
    result = CliRunner().invoke(app, ["approval-server"])
    assert isinstance(result.exception, UserError)
    assert str(result.exception).startswith("PATCHPILOT_POLICY is not set")
    policy, _ = write_policy(tmp_path)
    monkeypatch.setenv("PATCHPILOT_POLICY", str(policy))
    result = CliRunner().invoke(app, ["approval-server"])
    assert isinstance(result.exception, UserError)
    assert str(result.exception).startswith(
        "set PATCHPILOT_SIGNING_KEY and PATCHPILOT_INVENTORY: under a policy the approval server "
        "signs each decision of a link it verified with its own key (listed under the policy's "
        "frontends as 'links')"
    )


def write_policy(tmp: Path) -> tuple[Path, Path]:
    """A policy whose front end `links` has a fresh key; (policy file, private key file)."""
    import asyncssh

    key = asyncssh.generate_private_key("ssh-ed25519")
    private = tmp / "links_ed25519"
    private.write_bytes(key.export_private_key())
    private.chmod(0o600)
    policy = tmp / "policy.yml"
    policy.write_text(
        "people:\n  alice: {email: alice@example.com}\n  bob: {email: bob@example.com}\n"
        f'frontends:\n  links: {{keys: ["{key.export_public_key().decode().strip()}"]}}\n'
        'clusters:\n  "*": {requesters: [bob], approvers: [alice]}\n'
    )
    return policy, private


def test_the_server_serves_link_pages(temporal_dev_server, tmp_path: Path) -> None:
    port = free_port()
    policy, key = write_policy(tmp_path)
    (tmp_path / "inventory.yml").write_text("all:\n  hosts: {}\n")
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_dev_server.address,
        "PATCHPILOT_LINK_SECRET": LINK_SECRET,
        "PATCHPILOT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PATCHPILOT_APPROVAL_PORT": str(port),
        "PATCHPILOT_POLICY": str(policy),
        "PATCHPILOT_SIGNING_KEY": str(key),
        "PATCHPILOT_INVENTORY": str(tmp_path / "inventory.yml"),
    }
    server = subprocess.Popen(
        [PATCHPILOT, "approval-server", "--host", "127.0.0.1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        # As for `patchpilot bot` (tests/slack/test_cli_bot.py): the start of a process that
        # imports Temporal's SDK, on a machine that runs the suite's other workers too.
        deadline = time.monotonic() + 90
        while True:
            try:
                assert httpx.get(f"{base}/healthz").text == "ok\n"
                break
            except httpx.HTTPError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "approval-server did not start"
                time.sleep(0.3)
        signer = LinkSigner(LINK_SECRET.encode())
        unknown = signer.sign("no-such-rollout", "alice@example.com", "approve", time.time() + 60)
        answer = httpx.get(f"{base}/approve", params={"t": unknown})
        assert answer.status_code == 410 and "was not found" in answer.text
        forged = LinkSigner(b"f" * 32).sign("x", "alice@example.com", "approve", time.time() + 60)
        answer = httpx.post(f"{base}/approve", data={"t": forged})
        assert answer.status_code == 403 and "altered" in answer.text
        assert answer.headers["Cache-Control"] == "no-store"
        assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
    finally:
        server.terminate()
        server.wait(timeout=20)
    output = server.stdout.read() if server.stdout else ""
    assert "decisions signing as links" in output
