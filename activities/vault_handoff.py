"""Where every worker finds a rollout's one Vault token: a KV v2 entry per rollout.

The entry is `<kv mount>/<path>/<sha256 of the rollout id, 32 hex digits>` (`path` is
PATCHPILOT_VAULT_ROLLOUT_TOKEN_PATH), read and written with the worker's own token:
- while the rollout runs: `{"rollout": id, "accessor": A, "token": T}`;
- after its cleanup: `{"rollout": id, "accessor": A, "ended": "<UTC time>"}` (no token), so a step
  that runs late finds the rollout ended instead of making a new token, and a retried cleanup still
  knows the accessor to revoke.
The token is a secret and stays in Vault and in worker memory; only the accessor (which can look a
token up, renew or revoke it but never authenticate: Vault/OpenBao docs, "Token auth method (API)")
reaches Temporal. Writes use KV v2's check-and-set (`options.cas`: 0 writes only a key that does
not exist, n only over version n; Vault/OpenBao docs, "KV secrets engine - version 2 (API)"), so two
workers that replace the same dead token at once record one, and the other revokes its own.
Superseded versions (which held revoked or expired tokens) are destroyed at the cleanup.

Every function blocks on HTTP: callers run them in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import hvac
import hvac.exceptions

# PATCHPILOT_VAULT_ROLLOUT_TOKEN_PATH's default, under the KV mount.
DEFAULT_PATH = "patchpilot-rollout-tokens"
# KV v2 keeps 10 versions per key by default; older ones are gone already.
VERSIONS_KEPT = 10


@dataclass(frozen=True)
class Entry:
    """A rollout's entry as read: its KV version (for check-and-set), the token (None once the
    rollout ended, or never recorded), its accessor, and whether the rollout's cleanup ran."""

    version: int
    token: str | None = field(repr=False)
    accessor: str | None
    ended: bool


class Handoff:
    """The rollout entries under `<mount>/<path>/` (KV v2)."""

    def __init__(self, mount: str, path: str) -> None:
        self._mount = mount
        self._path = path.strip("/")

    @property
    def shown(self) -> str:
        """Where the entries are, for messages: `<mount>/<path>/*`."""
        return f"{self._mount}/{self._path}/*"

    def key(self, rollout_id: str) -> str:
        # Hashed: a workflow id may hold any character; KV paths may not.
        return f"{self._path}/{hashlib.sha256(rollout_id.encode()).hexdigest()[:32]}"

    def read(self, client: hvac.Client, rollout_id: str) -> Entry | None:
        """The rollout's entry, None when there is none (or its latest version was deleted and
        carries no data: then the version still counts for check-and-set)."""
        try:
            response = client.secrets.kv.v2.read_secret_version(
                path=self.key(rollout_id), mount_point=self._mount, raise_on_deleted_version=False
            )
        except hvac.exceptions.InvalidPath:
            return None
        body = response.get("data") or {}
        version = int((body.get("metadata") or {}).get("version") or 0)
        data = body.get("data") or {}
        if data.get("rollout") != rollout_id:
            # Deleted, or not this rollout's: nothing to use, but its version guards the write.
            return Entry(version, None, None, False)
        return Entry(
            version=version,
            token=data.get("token") or None,
            accessor=data.get("accessor") or None,
            ended=bool(data.get("ended")),
        )

    def record(
        self, client: hvac.Client, rollout_id: str, token: str, accessor: str, cas: int
    ) -> bool:
        """Record the rollout's token over version `cas` (0: no entry yet); False when another
        worker wrote first (check-and-set refused)."""
        data = {"rollout": rollout_id, "accessor": accessor, "token": token}
        return self._write(client, rollout_id, data, cas) is not None

    def end(
        self, client: hvac.Client, rollout_id: str, accessor: str | None, cas: int
    ) -> int | None:
        """Mark the rollout ended over version `cas`, keeping `accessor` but no token; the new
        version, or None when another worker wrote first."""
        ended = datetime.now(UTC).isoformat(timespec="seconds")
        data = {"rollout": rollout_id, "accessor": accessor or "", "ended": ended}
        return self._write(client, rollout_id, data, cas)

    def destroy_before(self, client: hvac.Client, rollout_id: str, version: int) -> None:
        """Destroy the versions before `version` (they held the rollout's tokens, revoked or
        expired by now). Best effort: a policy without `update` on `<mount>/destroy/<path>/*`
        leaves them, which exposes nothing that still authenticates."""
        versions = list(range(max(1, version - VERSIONS_KEPT), version))
        if not versions:
            return
        with contextlib.suppress(hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
            client.secrets.kv.v2.destroy_secret_versions(
                path=self.key(rollout_id), versions=versions, mount_point=self._mount
            )

    def _write(self, client: hvac.Client, rollout_id: str, data: dict, cas: int) -> int | None:
        try:
            response = client.secrets.kv.v2.create_or_update_secret(
                path=self.key(rollout_id), secret=data, cas=cas, mount_point=self._mount
            )
        except hvac.exceptions.InvalidRequest as error:
            if "check-and-set" in str(error):
                return None
            raise
        return int(((response or {}).get("data") or {}).get("version") or cas + 1)
