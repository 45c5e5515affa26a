"""SSH credentials from Vault (KV v2), fetched with the worker's own auth, kept in memory only."""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field

import hvac
import hvac.exceptions
import requests
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows import names
from workflows.models import StepResult, VaultPreflightInput

# A sealed, restarting or unreachable Vault: worth a retry, unlike a 403.
VAULT_UNAVAILABLE = (
    hvac.exceptions.VaultDown,
    hvac.exceptions.InternalServerError,
    hvac.exceptions.BadGateway,
    requests.exceptions.RequestException,
)


@dataclass(frozen=True)
class SshCredentials:
    """Never serialised, never logged: lives only in worker memory."""

    private_key: str = field(repr=False)
    username: str | None
    source_path: str


class VaultError(ApplicationError):
    pass


def _forbidden(path: str) -> ApplicationError:
    return ApplicationError(
        f"Vault refused access to {path} (403 permission denied): the worker's token or AppRole "
        "is invalid, revoked or lacks read permission",
        type="VaultForbidden",
        non_retryable=True,
    )


def _unavailable(address: str, error: Exception) -> ApplicationError:
    # Retryable: a sealed or restarting Vault usually comes back.
    return ApplicationError(
        f"Vault at {address} is unavailable ({type(error).__name__}: {str(error)[:200]})",
        type="VaultUnavailable",
        non_retryable=False,
    )


class VaultCredentialSource:
    def __init__(
        self,
        default_address: str | None,
        *,
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        kv_mount: str = "secret",
        cache_ttl_seconds: float = 300.0,
        request_timeout_seconds: float = 10.0,
    ) -> None:
        self._default_address = default_address
        self._token = token
        self._role_id = role_id
        self._secret_id = secret_id
        self._kv_mount = kv_mount
        self._cache_ttl = cache_ttl_seconds
        self._timeout = request_timeout_seconds
        self._clients: dict[str, hvac.Client] = {}
        self._cache: dict[tuple[str, str, str, str], tuple[float, SshCredentials]] = {}
        self._path_cache: dict[tuple[str, str, str], tuple[float, dict[str, str] | None]] = {}
        self.reads = 0  # KV reads actually sent to Vault (benchmarks count them)

    @property
    def kv_mount(self) -> str:
        return self._kv_mount

    def address(self, requested: str | None) -> str:
        address = requested or self._default_address
        if not address:
            raise ApplicationError(
                "no Vault address: set vaultAddress in the rollout or VAULT_ADDR for the worker",
                type="VaultNotConfigured",
                non_retryable=True,
            )
        return address

    def _client(self, address: str, token: str | None = None) -> hvac.Client:
        if token:
            # A rollout's own token (only accepted when payloads are encrypted): no sharing.
            return hvac.Client(url=address, token=token, timeout=self._timeout)
        client = self._clients.get(address)
        if client is None:
            if not self._token and not (self._role_id and self._secret_id):
                raise ApplicationError(
                    "the worker has no Vault credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and "
                    "VAULT_SECRET_ID",
                    type="VaultNotConfigured",
                    non_retryable=True,
                )
            client = hvac.Client(url=address, token=self._token, timeout=self._timeout)
            if not self._token:
                client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id)
            self._clients[address] = client
        return client

    def _read(self, address: str, path: str, token: str | None) -> dict[str, str] | None:
        """A KV v2 read, cached per path (a missing path too) so that the shared
        `<prefix>/default` is read once per TTL, not once per host."""
        digest = hashlib.sha256(token.encode()).hexdigest() if token else ""
        key = (address, path, digest)
        cached = self._path_cache.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        data = self._read_uncached(address, path, token)
        self._path_cache[key] = (time.monotonic() + self._cache_ttl, data)
        return data

    def _read_uncached(self, address: str, path: str, token: str | None) -> dict[str, str] | None:
        shown = f"{self._kv_mount}/{path}"
        try:
            client = self._client(address, token)
            self.reads += 1
            response = client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self._kv_mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None
        except hvac.exceptions.Forbidden:
            self._clients.pop(address, None)
            raise _forbidden(shown) from None
        except VAULT_UNAVAILABLE as error:
            self._clients.pop(address, None)
            raise _unavailable(address, error) from None
        except hvac.exceptions.VaultError as error:
            raise ApplicationError(
                f"Vault error reading {shown}: {str(error)[:200]}",
                type="VaultError",
                non_retryable=True,
            ) from None
        data = response.get("data", {}).get("data", {})
        return {str(key): str(value) for key, value in data.items()}

    def _lookup(
        self, address: str, prefix: str, hostname: str | None, token: str | None = None
    ) -> SshCredentials:
        candidates = [f"{prefix}/{hostname}"] if hostname else []
        candidates.append(f"{prefix}/default")
        for path in candidates:
            data = self._read(address, path, token)
            if data is None:
                continue
            private_key = data.get("private_key")
            if not private_key:
                raise ApplicationError(
                    f"Vault secret {self._kv_mount}/{path} has no 'private_key' field",
                    type="VaultSecretInvalid",
                    non_retryable=True,
                )
            return SshCredentials(
                private_key=private_key,
                username=data.get("username") or None,
                source_path=f"{self._kv_mount}/{path}",
            )
        tried = " or ".join(f"{self._kv_mount}/{path}" for path in candidates)
        raise ApplicationError(
            f"no SSH key in Vault at {tried}", type="VaultSecretMissing", non_retryable=True
        )

    async def credentials(
        self,
        requested_address: str | None,
        prefix: str,
        hostname: str | None,
        *,
        token: str | None = None,
    ) -> SshCredentials:
        address = self.address(requested_address)
        # The cache key carries a digest of a rollout's own token, never the token itself.
        token_digest = hashlib.sha256(token.encode()).hexdigest() if token else ""
        key = (address, prefix, hostname or "", token_digest)
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        credentials = await asyncio.to_thread(self._lookup, address, prefix, hostname, token)
        self._cache[key] = (now + self._cache_ttl, credentials)
        return credentials

    def forget(self) -> None:
        self._cache.clear()
        self._path_cache.clear()

    @activity.defn(name=names.VAULT_CLIENT)
    async def vault_preflight(self, request: VaultPreflightInput) -> StepResult:
        """Vault reachable, auth valid, a key readable: fail before any host is touched."""
        address = self.address(request.vault_address)

        def check() -> SshCredentials:
            client = self._client(address, request.vault_token)
            try:
                client.sys.read_health_status(method="GET")
                if self._token or request.vault_token:
                    client.auth.token.lookup_self()
            except hvac.exceptions.Forbidden:
                self._clients.pop(address, None)
                raise _forbidden("auth/token/lookup-self") from None
            except VAULT_UNAVAILABLE as error:
                self._clients.pop(address, None)
                raise _unavailable(address, error) from None
            return self._lookup(
                address, request.secret_path_prefix, request.probe_host, request.vault_token
            )

        credentials = await asyncio.to_thread(check)
        return StepResult(
            ok=True, detail=f"Vault at {address} OK; key readable at {credentials.source_path}"
        )
