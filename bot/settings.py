"""One settings model for every PatchPilot process: environment first, then `patchpilot.toml`.

The TOML file is `$PATCHPILOT_CONFIG`, else `./patchpilot.toml` when it exists; its keys are the
field names below (e.g. `temporal_address = "temporal:7233"`). Environment variables win.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

if TYPE_CHECKING:
    from bot.codec import EncryptionCodec

from workflows.models import DEFAULT_TASK_QUEUE, NAME_PATTERN

# Variables some commands read from the environment, not from the TOML file.
ENVIRONMENT_ONLY = (
    "PATCHPILOT_METRICS_PORT",
    "PATCHPILOT_CODEC_SERVER_TOKEN",
    "TEMPORAL_PROFILE",
    "TEMPORAL_CONFIG_FILE",
    "TEMPORAL_TLS",
    "TEMPORAL_API_KEY",
)


def _toml_keys(settings_cls: type[BaseSettings]) -> set[str]:
    """The keys a TOML file may use: each setting's name and its variables' names."""
    keys: set[str] = set()
    for name, field in settings_cls.model_fields.items():
        keys.add(name)
        choices = getattr(field.validation_alias, "choices", None) or []
        keys.update(str(choice) for choice in choices)
    return keys


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def _check_webhook(url: SecretStr, name: str) -> None:
    parts = urlsplit(url.get_secret_value().strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        # The value itself is a secret: named, never shown.
        raise ValueError(f"{name} must be an http:// or https:// URL (the value is not shown)")


def _comma_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def config_file() -> Path | None:
    named = os.environ.get("PATCHPILOT_CONFIG")
    if named:
        return Path(named).expanduser()
    default = Path("patchpilot.toml")
    return default if default.is_file() else None


class Settings(BaseSettings):
    # Errors never echo a value: several settings are secrets (webhook URLs, tokens).
    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_file()
        if path is None:
            return (init_settings, env_settings)
        if not path.is_file():
            raise SettingsError(f"PATCHPILOT_CONFIG names {path}, which does not exist")
        try:
            toml = TomlConfigSettingsSource(settings_cls, path)
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"PATCHPILOT_CONFIG {path} is not valid TOML: {error}") from None
        known = {key.lower() for key in _toml_keys(settings_cls)}  # pydantic matches any case
        unknown = sorted(key for key in toml.toml_data if key.lower() not in known)
        if unknown:  # a misspelt key would otherwise be left out without a word
            raise SettingsError(
                f"{path}: no setting is called {', '.join(unknown)} (a TOML key is the "
                "variable's name in lower case without PATCHPILOT_, e.g. smtp_host; "
                f"{', '.join(ENVIRONMENT_ONLY)} are read from the environment only)"
            )
        return (init_settings, env_settings, toml)

    temporal_address: str = Field("localhost:7233", validation_alias=_env("TEMPORAL_ADDRESS"))
    temporal_namespace: str = Field("default", validation_alias=_env("TEMPORAL_NAMESPACE"))
    task_queue: str = Field(DEFAULT_TASK_QUEUE, validation_alias=_env("PATCHPILOT_TASK_QUEUE"))
    temporal_ui_url: str | None = Field(None, validation_alias=_env("PATCHPILOT_TEMPORAL_UI_URL"))

    inventory: Path | None = Field(None, validation_alias=_env("PATCHPILOT_INVENTORY"))
    # The approval policy (README "Trust model"); the worker and the bot refuse to start
    # without one unless run with --no-policy.
    policy: Path | None = Field(None, validation_alias=_env("PATCHPILOT_POLICY"))
    # A front end's own signing key (OpenSSH ed25519 private key file) and its name in the
    # policy's `frontends`: the bot signs Slack clicks, the approval server personal links.
    signing_key: Path | None = Field(None, validation_alias=_env("PATCHPILOT_SIGNING_KEY"))
    signer: str | None = Field(None, validation_alias=_env("PATCHPILOT_SIGNER"))
    known_hosts: Path = Field(
        Path("~/.ssh/known_hosts").expanduser(), validation_alias=_env("PATCHPILOT_KNOWN_HOSTS")
    )
    ssh_connect_timeout: float = Field(
        15.0, gt=0, validation_alias=_env("PATCHPILOT_SSH_CONNECT_TIMEOUT")
    )
    # The worker's workflow cache (temporalio's max_cached_workflows). Above the host workflows
    # in flight on the worker plus its rollouts: the SDK cancels the local activities of a
    # workflow it drops from a full cache, whose task then waits out its timeout (README
    # "Scaling out"). Never 0, which drops every workflow after each activation.
    max_cached_workflows: int = Field(
        1000, ge=1, validation_alias=_env("PATCHPILOT_MAX_CACHED_WORKFLOWS")
    )

    vault_addr: str | None = Field(None, validation_alias=_env("VAULT_ADDR"))
    vault_token: SecretStr | None = Field(None, validation_alias=_env("VAULT_TOKEN"))
    vault_role_id: str | None = Field(None, validation_alias=_env("VAULT_ROLE_ID"))
    vault_secret_id: SecretStr | None = Field(None, validation_alias=_env("VAULT_SECRET_ID"))
    vault_kv_mount: str = Field("secret", validation_alias=_env("PATCHPILOT_VAULT_KV_MOUNT"))
    vault_cache_ttl: float = Field(300.0, ge=0, validation_alias=_env("PATCHPILOT_VAULT_CACHE_TTL"))
    # Addresses besides VAULT_ADDR a rollout's vaultAddress may name (comma-separated URLs).
    vault_trusted_addresses: str = Field(
        "", validation_alias=_env("PATCHPILOT_VAULT_TRUSTED_ADDRESSES")
    )
    # Each rollout's child token (activities/vault_auth.py): policies (comma-separated; empty:
    # the worker token's own), TTL in seconds (renewed while the rollout uses it), token role.
    vault_rollout_policies: str = Field(
        "", validation_alias=_env("PATCHPILOT_VAULT_ROLLOUT_POLICIES")
    )
    vault_rollout_token_ttl: int = Field(
        1800, ge=2, le=30 * 24 * 3600, validation_alias=_env("PATCHPILOT_VAULT_ROLLOUT_TOKEN_TTL")
    )
    vault_rollout_token_role: str | None = Field(
        None, validation_alias=_env("PATCHPILOT_VAULT_ROLLOUT_TOKEN_ROLE")
    )
    # Where every worker finds a running rollout's one token: a KV v2 entry per rollout under
    # <kv mount>/<this>/ (activities/vault_handoff.py); only the workers' policy may read it.
    vault_rollout_token_path: str = Field(
        "patchpilot-rollout-tokens", validation_alias=_env("PATCHPILOT_VAULT_ROLLOUT_TOKEN_PATH")
    )
    # SSH login: "kv" (a static key from KV) or "certificate" (an ephemeral key signed by Vault's
    # SSH secrets engine at <mount>/sign/<role>, `{host}` in the role replaced by the host name).
    ssh_auth: Literal["kv", "certificate"] = Field(
        "kv", validation_alias=_env("PATCHPILOT_SSH_AUTH")
    )
    vault_ssh_mount: str = Field("ssh", validation_alias=_env("PATCHPILOT_VAULT_SSH_MOUNT"))
    vault_ssh_role: str = Field("patchpilot", validation_alias=_env("PATCHPILOT_VAULT_SSH_ROLE"))
    vault_ssh_cert_ttl: int = Field(
        600, ge=30, le=24 * 3600, validation_alias=_env("PATCHPILOT_VAULT_SSH_CERT_TTL")
    )
    vault_ssh_default_user: str = Field(
        "root", validation_alias=_env("PATCHPILOT_VAULT_SSH_DEFAULT_USER")
    )

    # Health gates (issue 18): the Prometheus whose alerts and queries gate each wave, e.g.
    # http://prometheus:9090. Unset: this worker runs no gate and rollouts asking for one are
    # refused.
    prometheus_url: str | None = Field(None, validation_alias=_env("PATCHPILOT_PROMETHEUS_URL"))

    smtp_host: str | None = Field(None, validation_alias=_env("PATCHPILOT_SMTP_HOST"))
    smtp_port: int = Field(25, ge=1, le=65535, validation_alias=_env("PATCHPILOT_SMTP_PORT"))
    smtp_from: str = Field("patchpilot@localhost", validation_alias=_env("PATCHPILOT_SMTP_FROM"))
    smtp_starttls: bool = Field(False, validation_alias=_env("PATCHPILOT_SMTP_STARTTLS"))
    smtp_username: str | None = Field(None, validation_alias=_env("PATCHPILOT_SMTP_USERNAME"))
    smtp_password: SecretStr | None = Field(None, validation_alias=_env("PATCHPILOT_SMTP_PASSWORD"))

    # Where embedded servers keep their state (the demo's Temporal database, lab, logs).
    data_dir: Path = Field(
        Path("~/.patchpilot").expanduser(), validation_alias=_env("PATCHPILOT_DATA_DIR")
    )

    # Slack (the bot): Socket Mode with SLACK_APP_TOKEN, else HTTP mode with SLACK_SIGNING_SECRET.
    slack_bot_token: SecretStr | None = Field(None, validation_alias=_env("SLACK_BOT_TOKEN"))
    slack_app_token: SecretStr | None = Field(None, validation_alias=_env("SLACK_APP_TOKEN"))
    slack_signing_secret: SecretStr | None = Field(
        None, validation_alias=_env("SLACK_SIGNING_SECRET")
    )
    slack_api_url: str = Field("https://slack.com/api/", validation_alias=_env("SLACK_API_URL"))
    http_port: int = Field(3000, ge=1, le=65535, validation_alias=_env("PATCHPILOT_HTTP_PORT"))
    slack_defaults: Path | None = Field(None, validation_alias=_env("PATCHPILOT_SLACK_DEFAULTS"))

    # Teams (Workflows webhook) and signed Approve / Reject links (activities/notify/links.py).
    teams_webhook_url: SecretStr | None = Field(
        None, validation_alias=_env("PATCHPILOT_TEAMS_WEBHOOK_URL")
    )
    # cluster -> its own Teams webhook (TOML table, or JSON in the environment); others: the global.
    teams_webhooks: dict[str, SecretStr] = Field(
        default_factory=dict, validation_alias=_env("PATCHPILOT_TEAMS_WEBHOOKS")
    )
    # The generic JSON webhook (activities/notify/webhook.py).
    webhook_url: SecretStr | None = Field(None, validation_alias=_env("PATCHPILOT_WEBHOOK_URL"))
    # channel -> the events it gets (activities/notify/routing.py); unset: all get every event.
    notify_routes: dict[str, list[str]] | None = Field(
        None, validation_alias=_env("PATCHPILOT_NOTIFY_ROUTES")
    )
    public_url: str | None = Field(None, validation_alias=_env("PATCHPILOT_PUBLIC_URL"))
    link_secret: SecretStr | None = Field(None, validation_alias=_env("PATCHPILOT_LINK_SECRET"))
    link_ttl: timedelta = Field(timedelta(hours=24), validation_alias=_env("PATCHPILOT_LINK_TTL"))
    approval_port: int = Field(
        3001, ge=1, le=65535, validation_alias=_env("PATCHPILOT_APPROVAL_PORT")
    )

    # Payload encryption (see bot/codec.py): "id:base64key,..." or a file of such lines.
    codec_keys: SecretStr | None = Field(None, validation_alias=_env("PATCHPILOT_CODEC_KEYS"))
    codec_key_file: Path | None = Field(None, validation_alias=_env("PATCHPILOT_CODEC_KEY_FILE"))

    @field_validator("teams_webhook_url", "webhook_url")
    @classmethod
    def _one_webhook(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            _check_webhook(value, info.field_name or "webhook URL")
        return value

    @field_validator("teams_webhooks")
    @classmethod
    def _cluster_webhooks(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for cluster, url in value.items():
            name = f"teams_webhooks[{cluster!r}]"
            if not re.fullmatch(NAME_PATTERN, cluster):
                raise ValueError(f"{name}: {cluster!r} is not a cluster name")
            _check_webhook(url, name)
        return value

    @field_validator("prometheus_url")
    @classmethod
    def _prometheus_url(cls, value: str | None) -> str | None:
        if not value or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL, e.g. http://prometheus:9090")
        return value.strip().rstrip("/")

    @field_validator("vault_trusted_addresses")
    @classmethod
    def _trusted_vault_urls(cls, value: str) -> str:
        from workflows.vault_address import check_transport

        for entry in _comma_list(value):
            check_transport(entry)  # a URL, and https unless loopback
        return value

    def trusted_vault_addresses(self) -> list[str]:
        """Where a rollout's `vaultAddress` may point: VAULT_ADDR, then each URL of
        PATCHPILOT_VAULT_TRUSTED_ADDRESSES (as configured; compared normalized)."""
        first = [self.vault_addr] if self.vault_addr else []
        return first + _comma_list(self.vault_trusted_addresses)

    def rollout_token_policies(self) -> list[str]:
        """PATCHPILOT_VAULT_ROLLOUT_POLICIES as a list; empty: the worker token's own policies."""
        return _comma_list(self.vault_rollout_policies)

    @field_validator("notify_routes")
    @classmethod
    def _routes(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        from activities.notify.routing import check_routes

        return None if value is None else check_routes(value)

    def payload_codec(self) -> EncryptionCodec | None:
        from bot.codec import codec_from_environment

        environ: dict[str, str] = {}
        if self.codec_keys:
            environ["PATCHPILOT_CODEC_KEYS"] = self.codec_keys.get_secret_value()
        if self.codec_key_file:
            environ["PATCHPILOT_CODEC_KEY_FILE"] = str(self.codec_key_file)
        return codec_from_environment(environ)

    def ui_link(self, workflow_id: str) -> str | None:
        """The workflow's Temporal Web UI page, in the namespace clients connect to (a
        temporal.toml profile's when PatchPilot sets none), or None without a UI URL."""
        if not self.temporal_ui_url:
            return None
        # Imported here: bot.temporal_config imports this module.
        from bot.temporal_config import TemporalConfigError, namespace_for

        try:
            namespace = namespace_for(self)
        except TemporalConfigError:  # no client connects then either; the link is a nicety
            namespace = self.temporal_namespace
        base = self.temporal_ui_url.rstrip("/")
        return f"{base}/namespaces/{namespace}/workflows/{workflow_id}"


def describe_settings_error(error: Exception) -> str:
    """A settings error as people read it: one line per bad setting, never a value."""
    if isinstance(error, ValidationError):
        lines = [
            f"{'.'.join(str(part) for part in problem['loc'])}: "
            + problem["msg"].removeprefix("Value error, ")
            for problem in error.errors(include_url=False, include_input=False)
        ]
        return "invalid settings:\n  " + "\n  ".join(lines)
    return f"invalid settings: {error}"
