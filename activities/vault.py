"""SSH credentials from Vault (KV v2) and the rollout's Vault activities: the preflight, which makes
the rollout's one token (or finds it, when it reruns), and the cleanup, which revokes it.
Credentials stay in worker memory, the rollout's token in worker memory and its KV entry; the
worker's own auth and the rollout tokens are `activities.vault_auth`, the entries
`activities.vault_handoff`."""

from __future__ import annotations

import asyncio
import hashlib
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import hvac
import hvac.exceptions
import requests
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.vault_auth import NoCredentials, WorkerVaultAuth, alive
from activities.vault_handoff import DEFAULT_PATH
from activities.vault_ssh import CertSettings, sign_ephemeral_key
from workflows import names
from workflows.models import (
    StepResult,
    VaultCleanupInput,
    VaultPreflightInput,
    VaultPreflightResult,
)
from workflows.vault_address import check_trusted

T = TypeVar("T")

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
    # An OpenSSH user certificate of `private_key`, signed by Vault's SSH engine (certificate mode).
    certificate: str | None = field(default=None, repr=False)


class VaultError(ApplicationError):
    pass


def _forbidden(path: str) -> ApplicationError:
    return ApplicationError(
        f"Vault refused access to {path} (403 permission denied): the worker's token or AppRole "
        "is invalid, revoked or lacks permission there",
        type="VaultForbidden",
        non_retryable=True,
    )


def _refused(error: hvac.exceptions.VaultError, shown: str) -> str:
    """The path Vault refused, read from hvac's error URL (after `/v1/`), else `shown`: of the
    paths a rollout token needs, say the one that is missing from the policy."""
    path = urllib.parse.urlsplit(getattr(error, "url", None) or "").path
    return path.split("/v1/", 1)[1] if "/v1/" in path else shown


def _unavailable(address: str, error: Exception) -> ApplicationError:
    # Retryable: a sealed or restarting Vault usually comes back.
    return ApplicationError(
        f"Vault at {address} is unavailable ({type(error).__name__}: {str(error)[:200]})",
        type="VaultUnavailable",
        non_retryable=False,
    )


def _not_configured() -> ApplicationError:
    return ApplicationError(
        "the worker has no Vault credentials: set VAULT_TOKEN, or VAULT_ROLE_ID and "
        "VAULT_SECRET_ID",
        type="VaultNotConfigured",
        non_retryable=True,
    )


class VaultCredentialSource:
    """SSH keys from KV v2 at `<kv_mount>/<prefix>/<host>` (else `<prefix>/default`), read with
    the rollout's child token (else the worker's own auth), cached `cache_ttl_seconds`."""

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
        trusted_addresses: Sequence[str] = (),
        rollout_policies: Sequence[str] = (),
        rollout_ttl_seconds: int = 1800,
        rollout_token_role: str | None = None,
        handoff_path: str = DEFAULT_PATH,
        certificates: CertSettings | None = None,
    ) -> None:
        self._default_address = default_address
        # VAULT_ADDR is always trusted; `trusted_addresses` adds more a rollout may name.
        self._trusted = [*([default_address] if default_address else []), *trusted_addresses]
        self._kv_mount = kv_mount
        self._cache_ttl = cache_ttl_seconds
        self._timeout = request_timeout_seconds
        self.auth = WorkerVaultAuth(
            token=token,
            role_id=role_id,
            secret_id=secret_id,
            timeout_seconds=request_timeout_seconds,
            rollout_policies=rollout_policies,
            rollout_ttl_seconds=rollout_ttl_seconds,
            rollout_token_role=rollout_token_role,
            kv_mount=kv_mount,
            handoff_path=handoff_path,
        )
        # What a 403 while getting the rollout's token refers to.
        self._token_paths = f"auth/token/create or {kv_mount}/{handoff_path.strip('/')}/*"
        self._cache: dict[tuple[str, str, str, str], tuple[float, SshCredentials]] = {}
        self._path_cache: dict[tuple[str, str, str], tuple[float, dict[str, str] | None]] = {}
        self._certs = certificates  # None: static keys from KV
        self.reads = 0  # KV reads actually sent to Vault (benchmarks count them)
        # (principal, valid_after, valid_before) of every certificate signed (tests check TTLs).
        self.signed: list[tuple[str, int, int]] = []

    @property
    def kv_mount(self) -> str:
        return self._kv_mount

    def address(self, requested: str | None) -> str:
        """The address to send this worker's credentials to: VAULT_ADDR, or the rollout's
        `vaultAddress` when it is one of the trusted addresses (https unless loopback).

        Raises a non-retryable ApplicationError naming `vaultAddress` for any other address, so
        the worker's token or AppRole credentials never reach a listener it does not trust.
        """
        if requested:
            try:
                check_trusted(requested, self._trusted)
            except ValueError as refused:
                raise ApplicationError(
                    f"vaultAddress: {refused}", type="VaultAddressUntrusted", non_retryable=True
                ) from None
            return requested.rstrip("/")
        if not self._default_address:
            raise ApplicationError(
                "no Vault address: set vaultAddress in the rollout or VAULT_ADDR for the worker",
                type="VaultNotConfigured",
                non_retryable=True,
            )
        return self._default_address

    def _call(
        self, address: str, token: str | None, rollout_id: str | None, call: Callable[..., T]
    ) -> T:
        """`call(client)` with the rollout's own token, else the rollout's token (shared by
        every worker), else the worker's. A rollout token Vault refused because it no longer
        exists (revoked, or expired with its parent) is looked up again once: the entry names
        another worker's replacement, or this worker records one."""
        if token:
            # A rollout's own token (only accepted when payloads are encrypted): no sharing.
            return call(hvac.Client(url=address, token=token, timeout=self._timeout))
        if rollout_id:
            child = self._rollout_client(address, rollout_id)
            if child is not None:
                try:
                    return call(child)
                except hvac.exceptions.Forbidden:
                    if alive(child):
                        raise
                self.auth.drop_child(address, rollout_id)
                child = self._rollout_client(address, rollout_id)
                if child is not None:
                    return call(child)
        return self.auth.with_worker_client(address, call)

    def _rollout_client(self, address: str, rollout_id: str) -> hvac.Client | None:
        try:
            return self.auth.rollout_client(address, rollout_id)
        except hvac.exceptions.Forbidden as error:
            refused = _refused(error, self._token_paths)
            raise _forbidden(f"{refused} (the rollout's token)") from None

    def _guarded(self, address: str, shown: str, run: Callable[[], T]) -> T:
        """`run()` with Vault's errors as ApplicationErrors: 403 final, unavailable retryable."""
        try:
            return run()
        except NoCredentials:
            raise _not_configured() from None
        except hvac.exceptions.Forbidden as error:
            # A refusal, not an expiry: `_call` already answered an expired login or child.
            if self._token_paths in shown:  # which of the token's paths, exactly
                shown = shown.replace(self._token_paths, _refused(error, self._token_paths))
            raise _forbidden(shown) from None
        except VAULT_UNAVAILABLE as error:
            self.auth.drop_worker_client(address)
            raise _unavailable(address, error) from None
        except hvac.exceptions.VaultError as error:
            raise ApplicationError(
                f"Vault error at {shown}: {str(error)[:200]}", type="VaultError", non_retryable=True
            ) from None

    def _read(
        self, address: str, path: str, token: str | None, rollout_id: str | None
    ) -> dict[str, str] | None:
        """A KV v2 read, cached per path (a missing path too) so that the shared
        `<prefix>/default` is read once per TTL, not once per host."""
        digest = hashlib.sha256(token.encode()).hexdigest() if token else ""
        key = (address, path, digest)
        cached = self._path_cache.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]

        def read(client: hvac.Client) -> dict | None:
            self.reads += 1
            try:
                return dict(
                    client.secrets.kv.v2.read_secret_version(
                        path=path, mount_point=self._kv_mount, raise_on_deleted_version=True
                    )
                )
            except hvac.exceptions.InvalidPath:
                return None

        shown = f"{self._kv_mount}/{path}"
        response = self._guarded(
            address, shown, lambda: self._call(address, token, rollout_id, read)
        )
        data = None
        if response is not None:
            found = response.get("data", {}).get("data", {})
            data = {str(name): str(value) for name, value in found.items()}
        self._path_cache[key] = (time.monotonic() + self._cache_ttl, data)
        return data

    def _lookup(
        self,
        address: str,
        prefix: str,
        hostname: str | None,
        token: str | None = None,
        rollout_id: str | None = None,
    ) -> SshCredentials:
        candidates = [f"{prefix}/{hostname}"] if hostname else []
        candidates.append(f"{prefix}/default")
        for path in candidates:
            data = self._read(address, path, token, rollout_id)
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
        rollout_id: str | None = None,
        user: str | None = None,
    ) -> SshCredentials:
        """The SSH key for `hostname`, read with `token` (a rollout's own), else the child token
        of `rollout_id`, else the worker's auth; in certificate mode an ephemeral key with a
        certificate for `user` instead. Raises non-retryable ApplicationErrors for an untrusted
        address, a 403 or a missing key; a retryable one while Vault is unavailable."""
        address = self.address(requested_address)
        self.auth.ensure_renewer()
        # The cache key carries a digest of a rollout's own token, never the token itself.
        token_digest = hashlib.sha256(token.encode()).hexdigest() if token else ""
        key = (address, prefix, hostname or "", token_digest)
        if self._certs is not None:
            key = (address, "certificate", hostname or "", user or "")
        cached = self._cache.get(key)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        if self._certs is not None:
            credentials = await asyncio.to_thread(
                self._sign, address, self._certs, hostname, user, token, rollout_id
            )
            # A certificate is only checked at login: reuse it for half its life at most.
            lifetime = min(self._cache_ttl, self._certs.ttl_seconds / 2)
        else:
            credentials = await asyncio.to_thread(
                self._lookup, address, prefix, hostname, token, rollout_id
            )
            lifetime = self._cache_ttl
        self._cache[key] = (now + lifetime, credentials)
        return credentials

    def _sign(
        self,
        address: str,
        certs: CertSettings,
        hostname: str | None,
        user: str | None,
        token: str | None,
        rollout_id: str | None,
    ) -> SshCredentials:
        role = certs.role_for(hostname)
        principal = user or certs.default_user
        shown = f"{certs.mount}/sign/{role}"
        signed = self._guarded(
            address,
            shown,
            lambda: self._call(
                address,
                token,
                rollout_id,
                partial(sign_ephemeral_key, settings=certs, role=role, principal=principal),
            ),
        )
        self.signed.append((signed.principal, signed.valid_after, signed.valid_before))
        return SshCredentials(
            private_key=signed.private_key,
            username=principal,
            source_path=f"{shown} (certificate for {principal})",
            certificate=signed.certificate,
        )

    def forget(self) -> None:
        self._cache.clear()
        self._path_cache.clear()

    async def close(self) -> None:
        """At worker shutdown: stop renewing and revoke the worker's own AppRole token
        (`WorkerVaultAuth.aclose`); rollout tokens are their rollouts', ended by their cleanups."""
        await self.auth.aclose()

    # ---- activities --------------------------------------------------------------------------

    @activity.defn(name=names.VAULT_CLIENT)
    async def vault_preflight(self, request: VaultPreflightInput) -> VaultPreflightResult:
        """Vault reachable, auth valid, the rollout's token made and recorded in its entry (or,
        when this reruns, found there), a key readable with it: fail before any host is
        touched. The rollout is the calling workflow."""
        address = self.address(request.vault_address)
        self.auth.ensure_renewer()
        rollout_id = activity.info().workflow_id or ""
        own = request.vault_token

        def check() -> VaultPreflightResult:
            def probe(client: hvac.Client) -> None:
                client.sys.read_health_status(method="GET")
                client.auth.token.lookup_self()

            self._guarded(
                address, "auth/token/lookup-self", lambda: self._call(address, own, None, probe)
            )
            accessor = None
            if rollout_id and not own:
                accessor = self._guarded(
                    address,
                    f"{self._token_paths} (the rollout's token)",
                    lambda: self.auth.rollout_accessor(address, rollout_id),
                )
            if self._certs is not None:
                found = self._sign(
                    address, self._certs, request.probe_host, None, own, rollout_id or None
                )
            else:
                found = self._lookup(
                    address, request.secret_path_prefix, request.probe_host, own, rollout_id or None
                )
            detail = f"Vault at {address} OK; key readable at {found.source_path}"
            return VaultPreflightResult(ok=True, detail=detail, token_accessor=accessor)

        return await asyncio.to_thread(check)

    @activity.defn(name=names.VAULT_CLEANUP)
    async def vault_cleanup(self, request: VaultCleanupInput) -> StepResult:
        """Revoke the rollout's token, by accessor, on whichever worker: the one its entry
        names (the preflight's, or a replacement another worker made), the preflight's from
        history, any held here; the entry is marked ended first, so no step makes another.
        Idempotent; retried while Vault is unavailable."""
        address = self.address(request.vault_address)
        if not self.auth.has_credentials:
            return StepResult(detail="the worker has no Vault credentials: nothing to revoke")

        def revoke() -> int:
            return self.auth.revoke_rollout(address, request.rollout_id, request.token_accessor)

        shown = f"auth/token/revoke-accessor or {self._token_paths}"
        count = await asyncio.to_thread(self._guarded, address, shown, revoke)
        return StepResult(detail=f"revoked {count} rollout token(s) at {address}")
