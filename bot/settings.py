"""One settings model for every PatchPilot process: environment first, then `patchpilot.toml`.

The TOML file is `$PATCHPILOT_CONFIG`, else `./patchpilot.toml` when it exists; its keys are the
field names below (e.g. `temporal_address = "temporal:7233"`). Environment variables win.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if TYPE_CHECKING:
    from bot.codec import EncryptionCodec

from workflows.models import DEFAULT_TASK_QUEUE


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


def config_file() -> Path | None:
    named = os.environ.get("PATCHPILOT_CONFIG")
    if named:
        return Path(named).expanduser()
    default = Path("patchpilot.toml")
    return default if default.is_file() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

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
            raise FileNotFoundError(f"PATCHPILOT_CONFIG names {path}, which does not exist")
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path))

    temporal_address: str = Field("localhost:7233", validation_alias=_env("TEMPORAL_ADDRESS"))
    temporal_namespace: str = Field("default", validation_alias=_env("TEMPORAL_NAMESPACE"))
    task_queue: str = Field(DEFAULT_TASK_QUEUE, validation_alias=_env("PATCHPILOT_TASK_QUEUE"))
    temporal_ui_url: str | None = Field(None, validation_alias=_env("PATCHPILOT_TEMPORAL_UI_URL"))

    inventory: Path | None = Field(None, validation_alias=_env("PATCHPILOT_INVENTORY"))
    known_hosts: Path = Field(
        Path("~/.ssh/known_hosts").expanduser(), validation_alias=_env("PATCHPILOT_KNOWN_HOSTS")
    )
    ssh_connect_timeout: float = Field(
        15.0, validation_alias=_env("PATCHPILOT_SSH_CONNECT_TIMEOUT")
    )

    vault_addr: str | None = Field(None, validation_alias=_env("VAULT_ADDR"))
    vault_token: SecretStr | None = Field(None, validation_alias=_env("VAULT_TOKEN"))
    vault_role_id: str | None = Field(None, validation_alias=_env("VAULT_ROLE_ID"))
    vault_secret_id: SecretStr | None = Field(None, validation_alias=_env("VAULT_SECRET_ID"))
    vault_kv_mount: str = Field("secret", validation_alias=_env("PATCHPILOT_VAULT_KV_MOUNT"))
    vault_cache_ttl: float = Field(300.0, validation_alias=_env("PATCHPILOT_VAULT_CACHE_TTL"))

    smtp_host: str | None = Field(None, validation_alias=_env("PATCHPILOT_SMTP_HOST"))
    smtp_port: int = Field(25, validation_alias=_env("PATCHPILOT_SMTP_PORT"))
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

    # Teams (Workflows webhook) and signed Approve / Reject links (bot/approval_links.py).
    teams_webhook_url: SecretStr | None = Field(
        None, validation_alias=_env("PATCHPILOT_TEAMS_WEBHOOK_URL")
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

    def payload_codec(self) -> EncryptionCodec | None:
        from bot.codec import codec_from_environment

        environ: dict[str, str] = {}
        if self.codec_keys:
            environ["PATCHPILOT_CODEC_KEYS"] = self.codec_keys.get_secret_value()
        if self.codec_key_file:
            environ["PATCHPILOT_CODEC_KEY_FILE"] = str(self.codec_key_file)
        return codec_from_environment(environ)

    def ui_link(self, workflow_id: str) -> str | None:
        if not self.temporal_ui_url:
            return None
        base = self.temporal_ui_url.rstrip("/")
        return f"{base}/namespaces/{self.temporal_namespace}/workflows/{workflow_id}"
