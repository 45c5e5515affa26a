"""A Vault 403 names the path Vault refused (activities/vault._refused), read from hvac's error, so
an operator knows which line of the worker's policy is missing."""

from __future__ import annotations

import hvac.exceptions

from activities.vault import _forbidden, _refused

TOKEN_PATHS = "auth/token/create or secret/patchpilot-rollout-tokens/*"


def test_a_403_names_the_path_vault_refused() -> None:
    for url, path in (
        ("http://127.0.0.1:8200/v1/auth/token/create", "auth/token/create"),
        (
            "https://vault.example:8200/v1/secret/data/patchpilot-rollout-tokens/0f3a",
            "secret/data/patchpilot-rollout-tokens/0f3a",
        ),
    ):
        refused = hvac.exceptions.Forbidden("permission denied", url=url, method="POST")
        shown = _forbidden(f"{_refused(refused, TOKEN_PATHS)} (the rollout's token)")
        assert shown.message.startswith(
            f"Vault refused access to {path} (the rollout's token) (403 permission denied): "
        )
        assert shown.type == "VaultForbidden" and shown.non_retryable


def test_without_a_url_the_paths_it_may_have_been_are_named() -> None:
    assert _refused(hvac.exceptions.Forbidden("permission denied"), TOKEN_PATHS) == TOKEN_PATHS
