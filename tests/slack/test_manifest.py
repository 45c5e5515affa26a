"""manifest.yml: what the bot relies on is declared."""

from __future__ import annotations

from pathlib import Path

import yaml

MANIFEST = Path(__file__).resolve().parents[2] / "manifest.yml"


def test_manifest_declares_socket_mode_the_command_interactivity_and_scopes() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/patch" and command["should_escape"] is True
    assert command["url"].endswith("/slack/events")
    assert manifest["settings"]["interactivity"]["request_url"].endswith("/slack/events")
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "users:read", "users:read.email"} <= scopes
    assert manifest["features"]["bot_user"]["display_name"] == "PatchPilot"
