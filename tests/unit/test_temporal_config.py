"""Which Temporal a process connects to, and how: temporal.toml profiles and TEMPORAL_* variables
(the SDK's environment configuration) under PatchPilot's own address and namespace settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.settings import Settings
from bot.temporal_config import TemporalConfigError, profile_address, temporal_target


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY", "TEMPORAL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "none.toml"))
    monkeypatch.delenv("PATCHPILOT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    config = tmp_path / "temporal.toml"
    config.write_text(text)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(config))


def test_nothing_configured_is_the_local_default() -> None:
    target = temporal_target(Settings())
    assert (target.address, target.namespace, target.tls) == ("localhost:7233", "default", False)
    assert target.describe() == (
        "profile default: localhost:7233, namespace default, TLS off, auth none"
    )
    assert profile_address() is None


def test_a_profile_gives_address_namespace_and_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile(
        tmp_path,
        monkeypatch,
        '[profile.cloud]\naddress = "ns.a1b2.tmprl.cloud:7233"\nnamespace = "ns.a1b2"\n'
        'api_key = "k-123"\n',
    )
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud")
    target = temporal_target(Settings())
    assert (target.address, target.namespace) == ("ns.a1b2.tmprl.cloud:7233", "ns.a1b2")
    assert target.tls and target.options["api_key"] == "k-123"
    assert target.describe() == (
        "profile cloud: ns.a1b2.tmprl.cloud:7233, namespace ns.a1b2, TLS on, auth API key"
    )
    assert "k-123" not in target.describe()
    assert profile_address() == "ns.a1b2.tmprl.cloud:7233"
    # PatchPilot's own settings, when given, win over the profile.
    explicit = temporal_target(Settings(temporal_address="other:7233"))
    assert (explicit.address, explicit.namespace) == ("other:7233", "ns.a1b2")


def test_environment_variables_override_the_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile(tmp_path, monkeypatch, '[profile.default]\naddress = "file:7233"\n')
    monkeypatch.setenv("TEMPORAL_ADDRESS", "env:7233")
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "patching")
    target = temporal_target(Settings())
    assert (target.address, target.namespace) == ("env:7233", "patching")


def test_a_missing_certificate_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(tmp_path / "client.pem"))
    monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(tmp_path / "client-key.pem"))
    with pytest.raises(TemporalConfigError, match=r"profile default.*client\.pem"):
        temporal_target(Settings())


def test_a_malformed_temporal_toml_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile(tmp_path, monkeypatch, "[profile.default\naddress = 1\n")
    with pytest.raises(TemporalConfigError, match=r"TEMPORAL_CONFIG_FILE .*temporal\.toml"):
        temporal_target(Settings())


def test_the_web_ui_link_names_the_namespace_the_client_connects_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile(tmp_path, monkeypatch, '[profile.default]\nnamespace = "payments"\n')
    settings = Settings(temporal_ui_url="https://ui.example/")
    assert temporal_target(settings).namespace == "payments"
    assert settings.ui_link("patch-cluster-a-1") == (
        "https://ui.example/namespaces/payments/workflows/patch-cluster-a-1"
    )
    # PatchPilot's own namespace setting wins over the profile, for the client and the link.
    own = Settings(temporal_ui_url="https://ui.example", temporal_namespace="ops")
    assert temporal_target(own).namespace == "ops"
    assert own.ui_link("w") == "https://ui.example/namespaces/ops/workflows/w"
    # TEMPORAL_NAMESPACE too.
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "patching")
    env = Settings(temporal_ui_url="https://ui.example")
    assert temporal_target(env).namespace == "patching"
    assert env.ui_link("w") == "https://ui.example/namespaces/patching/workflows/w"
    # No UI URL, no link.
    assert Settings(temporal_ui_url=None).ui_link("w") is None
