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

    for name in ("PATCHPILOT_LINK_SECRET", "PATCHPILOT_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["approval-server"])
    assert isinstance(result.exception, UserError)
    assert "PATCHPILOT_LINK_SECRET" in str(result.exception)
    monkeypatch.setenv("PATCHPILOT_LINK_SECRET", "short")
    monkeypatch.setenv("PATCHPILOT_PUBLIC_URL", "https://pp.example.com")
    result = CliRunner().invoke(app, ["approval-server"])
    assert isinstance(result.exception, UserError) and "16 bytes" in str(result.exception)


def test_the_server_serves_link_pages(temporal_dev_server) -> None:
    port = free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": temporal_dev_server.address,
        "PATCHPILOT_LINK_SECRET": LINK_SECRET,
        "PATCHPILOT_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "PATCHPILOT_APPROVAL_PORT": str(port),
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
        deadline = time.monotonic() + 40
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
