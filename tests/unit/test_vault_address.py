"""Which Vault addresses a rollout may name: the pure rules, the model, and the CLI settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bot.settings import Settings, describe_settings_error
from workflows.models import RolloutInput, describe_validation_error
from workflows.vault_address import check_transport, check_trusted, is_loopback, normalize

BASE = {
    "targetClusters": ["cluster-a"],
    "pilotHostCount": 1,
    "approverEmails": ["alice@example.com"],
    "requesterEmail": "bob@example.com",
    "updateCommand": "apt-get -y upgrade",
}


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("https://Vault.Example.com", "https://vault.example.com:443"),
        ("https://vault.example.com:443/", "https://vault.example.com:443"),
        ("http://127.0.0.1:8200", "http://127.0.0.1:8200"),
        ("http://[::1]:8200", "http://[::1]:8200"),
    ],
)
def test_equal_addresses_normalize_alike(given: str, canonical: str) -> None:
    assert normalize(given) == canonical


@pytest.mark.parametrize(
    "bad",
    ["vault.example.com", "https://user@evil.example", "https://vault/v1/x", "ftp://vault:1"],
)
def test_anything_but_scheme_host_port_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not an http\\(s\\) URL"):
        normalize(bad)


def test_plain_http_only_on_loopback() -> None:
    assert is_loopback("http://localhost:8200") and is_loopback("http://127.9.9.9:1")
    assert not is_loopback("http://10.0.0.1:8200")
    assert check_transport("http://127.0.0.1:8200") == "http://127.0.0.1:8200"
    with pytest.raises(ValueError, match="must use https"):
        check_transport("http://vault.internal:8200")


def test_only_a_trusted_address_passes_and_the_error_says_how_to_trust_one() -> None:
    trusted = ["https://vault.example.com:8200", "http://127.0.0.1:8200"]
    assert check_trusted("https://VAULT.example.com:8200/", trusted)
    with pytest.raises(ValueError) as refused:
        check_trusted("http://127.0.0.1:18200", trusted)
    message = str(refused.value)
    assert "not a Vault address this worker trusts" in message
    assert "https://vault.example.com:8200, http://127.0.0.1:8200" in message
    assert "PATCHPILOT_VAULT_TRUSTED_ADDRESSES" in message
    with pytest.raises(ValueError, match="none configured"):
        check_trusted("https://vault.example.com:8200", [])


def test_the_model_refuses_plain_http_off_loopback_naming_the_field() -> None:
    with pytest.raises(ValidationError) as refused:
        RolloutInput.model_validate({**BASE, "vaultAddress": "http://vault.example.com:8200"})
    assert describe_validation_error(refused.value).startswith("vaultAddress:")
    assert "must use https" in describe_validation_error(refused.value)


def test_the_edge_refuses_an_untrusted_address_naming_the_field() -> None:
    listener = "http://127.0.0.1:18200"
    raw = {**BASE, "vaultAddress": listener}
    with pytest.raises(ValidationError) as refused:
        RolloutInput.at_edge(raw, trusted_vault_addresses=["http://127.0.0.1:8200"])
    assert describe_validation_error(refused.value).startswith("vaultAddress:")
    trusted = RolloutInput.at_edge(raw, trusted_vault_addresses=["http://localhost:1", listener])
    assert trusted.vault_address == "http://127.0.0.1:18200"


def test_settings_trust_vault_addr_and_the_extra_list_and_refuse_plain_http() -> None:
    settings = Settings(
        vault_addr="http://openbao:8200",
        vault_trusted_addresses=" https://vault-b.example.com:8200 ,http://127.0.0.1:8300",
    )
    assert settings.trusted_vault_addresses() == [
        "http://openbao:8200",  # VAULT_ADDR is the operator's own choice, kept as given
        "https://vault-b.example.com:8200",
        "http://127.0.0.1:8300",
    ]
    with pytest.raises(ValidationError) as refused:
        Settings(vault_trusted_addresses="http://vault.internal:8200")
    assert "vault_trusted_addresses" in describe_settings_error(refused.value)
    assert "must use https" in describe_settings_error(refused.value)
