"""One settings model for every PatchPilot process, read from the environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from workflows.models import DEFAULT_TASK_QUEUE


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

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

    def ui_link(self, workflow_id: str) -> str | None:
        if not self.temporal_ui_url:
            return None
        base = self.temporal_ui_url.rstrip("/")
        return f"{base}/namespaces/{self.temporal_namespace}/workflows/{workflow_id}"
