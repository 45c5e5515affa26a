"""Defaults for `/patch` per channel and per cluster, read from a YAML file.

```yaml
defaults:            # for every rollout
  pilot: 1
  update: "apt-get update && apt-get -y upgrade"
clusters:            # when the rollout targets this cluster (the first listed cluster wins)
  cluster-a:
    services: [nginx, postgresql]
channels:            # when /patch is typed in this channel (Slack channel id)
  C0123456789:
    approvers: [alice@example.com, "<@U0123ABCD>"]
```

Precedence: what the command says, then the channel, then the first target cluster that sets the
value, then `defaults`. Approvers may be e-mail addresses or Slack user ids (`<@U…>` or `U…`).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class DefaultsError(ValueError):
    """The defaults file cannot be used; the message says where and why."""


def _as_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class RolloutDefaults(BaseModel):
    """One layer of defaults; a field left None leaves the choice to the next layer."""

    model_config = ConfigDict(extra="forbid")

    pilot: int | None = Field(default=None, ge=0)
    services: list[str] | None = None
    update: str | None = None
    approvers: list[str] | None = None

    _split = field_validator("services", "approvers", mode="before")(_as_list)


class SlackDefaults(BaseModel):
    """The whole defaults file: global `defaults`, per cluster name, per Slack channel id."""

    model_config = ConfigDict(extra="forbid")

    defaults: RolloutDefaults = Field(default_factory=RolloutDefaults)
    clusters: dict[str, RolloutDefaults] = Field(default_factory=dict)
    channels: dict[str, RolloutDefaults] = Field(default_factory=dict)

    def layers(self, channel_id: str | None, clusters: list[str]) -> list[RolloutDefaults]:
        """The defaults that apply, most specific first."""
        found: list[RolloutDefaults] = []
        if channel_id and channel_id in self.channels:
            found.append(self.channels[channel_id])
        found.extend(self.clusters[name] for name in clusters if name in self.clusters)
        found.append(self.defaults)
        return found


def load_defaults(path: Path | None) -> SlackDefaults:
    """The defaults in YAML file `path` (none when `path` is None); raises DefaultsError naming
    the file and what is wrong (unreadable, not YAML, an unknown or invalid field)."""
    if path is None:
        return SlackDefaults()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise DefaultsError(
            f"cannot read Slack defaults {path}: {error.strerror or error}"
        ) from None
    except yaml.YAMLError as error:
        raise DefaultsError(f"Slack defaults {path} is not valid YAML: {error}") from None
    try:
        return SlackDefaults.model_validate(document)
    except ValidationError as error:
        raise DefaultsError(f"Slack defaults {path}: {error}") from None
