"""The worker's own Vault auth and each rollout's child token, kept in worker memory only.

- The worker's token is `VAULT_TOKEN`, or an AppRole login (`VAULT_ROLE_ID` + `VAULT_SECRET_ID`)
  that is renewed at half its lease and redone when renewal no longer extends it (the role's
  `token_max_ttl`) or once when Vault answers 403 because it expired.
- A rollout's child token is made with `auth/token/create` (or `auth/token/create/<role>`), with
  the configured policies and TTL, at the rollout's Vault preflight, or on first use on a worker
  that did not make it. It is renewed while the rollout uses it and revoked when the rollout ends
  (`revoke_rollout`); one not used for a whole TTL is left to expire.
- At shutdown the worker revokes every child it holds and, when it logged in itself, its own token.

Vault's token rules (Vault/OpenBao API docs, "Token auth method"): a child token is revoked when its
parent is revoked or expires; an accessor can look a token up, renew or revoke it but cannot
authenticate, which is why the accessor, never the token, may leave the worker.
Every method but `ensure_renewer` and `aclose` blocks on HTTP: callers run them in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import hvac
import hvac.exceptions

log = logging.getLogger(__name__)
T = TypeVar("T")
# Ended rollouts remembered, so a late step makes no new token for them; older ones are forgotten.
ENDED_KEPT = 10_000
# How often the renewer looks for tokens due (seconds); tokens are renewed at half their lease.
RENEW_CHECK_SECONDS = 1.0


@dataclass
class _Lease:
    """A token this worker holds: its client, accessor, and when to renew it (monotonic s)."""

    client: hvac.Client = field(repr=False)
    accessor: str
    lease_seconds: float
    renew_at: float
    last_used: float = field(default_factory=time.monotonic)


def _lease(client: hvac.Client, auth: dict, now: float) -> _Lease:
    seconds = float(auth.get("lease_duration") or 0)
    # 0 means the token never expires: nothing to renew.
    renew_at = now + seconds / 2 if seconds else float("inf")
    return _Lease(client, str(auth.get("accessor") or ""), seconds, renew_at, now)


class NoCredentials(Exception):
    """The worker has neither VAULT_TOKEN nor VAULT_ROLE_ID + VAULT_SECRET_ID."""


class WorkerVaultAuth:
    """The worker's login per Vault address and the child tokens of running rollouts."""

    def __init__(
        self,
        *,
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        timeout_seconds: float = 10.0,
        rollout_policies: Sequence[str] = (),
        rollout_ttl_seconds: int = 1800,
        rollout_token_role: str | None = None,
    ) -> None:
        self._token = token
        self._role_id = role_id
        self._secret_id = secret_id
        self._timeout = timeout_seconds
        self._policies = list(rollout_policies)
        self._ttl = rollout_ttl_seconds
        self._role = rollout_token_role
        self._lock = threading.RLock()
        self._logins: dict[str, _Lease] = {}
        self._retired: list[_Lease] = []  # AppRole logins replaced by a new login
        self._children: dict[tuple[str, str], _Lease] = {}  # (address, rollout id) -> lease
        # Rollouts whose tokens were revoked here, oldest first: none is made for them again.
        self._ended: dict[str, None] = {}
        self.created: list[str] = []  # accessors of every child made (tests and benches count)
        self._renewer: asyncio.Task[None] | None = None
        self.login_accessors: list[str] = []  # of every AppRole login (tests count them)

    @property
    def uses_approle(self) -> bool:
        return not self._token and bool(self._role_id and self._secret_id)

    @property
    def has_credentials(self) -> bool:
        return bool(self._token) or self.uses_approle

    # ---- the worker's own token --------------------------------------------------------------

    def worker_client(self, address: str) -> hvac.Client:
        """The worker's client for `address` (a trusted address: the caller checked it); logs in
        with AppRole on first use. Raises NoCredentials, or hvac errors of the login."""
        with self._lock:
            held = self._logins.get(address)
            if held is not None:
                return held.client
            if not self.has_credentials:
                raise NoCredentials()
            client = hvac.Client(url=address, token=self._token, timeout=self._timeout)
            now = time.monotonic()
            if self._token:
                lease = _Lease(client, "", 0.0, float("inf"), now)
            else:
                lease = _lease(client, self._login(client), now)
            self._logins[address] = lease
            return client

    def _login(self, client: hvac.Client) -> dict:
        response = client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id)
        auth = dict(response["auth"])
        self.login_accessors.append(str(auth.get("accessor") or ""))
        return auth

    def drop_worker_client(self, address: str) -> None:
        """Stop using the worker's client for `address` (Vault went away, or the login expired);
        an AppRole login is kept aside to be revoked at shutdown if it still lives then."""
        with self._lock:
            dropped = self._logins.pop(address, None)
            if dropped is not None and self.uses_approle:
                self._retired.append(dropped)

    def with_worker_client(self, address: str, call: Callable[[hvac.Client], T]) -> T:
        """`call(client)` with the worker's client; with AppRole, a 403 because the login token
        expired is answered by one new login and one more try. Other errors propagate."""
        client = self.worker_client(address)
        try:
            return call(client)
        except hvac.exceptions.Forbidden:
            if not self.uses_approle or alive(client):
                raise
        log.info("Vault AppRole token at %s expired: logging in again", address)
        self.drop_worker_client(address)
        return call(self.worker_client(address))

    # ---- each rollout's child token ----------------------------------------------------------

    def rollout_accessor(self, address: str, rollout_id: str) -> str:
        """At the rollout's preflight: the accessor of its child token, made now when this
        worker holds none. A rollout id used again after its rollout ended starts afresh."""
        with self._lock:
            self._ended.pop(rollout_id, None)
        lease = self._child(address, rollout_id)
        assert lease is not None  # not ended: `_child` made one or raised
        return lease.accessor

    def rollout_client(self, address: str, rollout_id: str) -> hvac.Client | None:
        """The rollout's child token's client, made now when this worker holds none; None once
        the rollout has ended here (the worker's own token serves then)."""
        lease = self._child(address, rollout_id)
        return lease.client if lease else None

    def _child(self, address: str, rollout_id: str) -> _Lease | None:
        with self._lock:
            if rollout_id in self._ended:
                return None
            held = self._children.get((address, rollout_id))
            if held is not None:
                held.last_used = time.monotonic()
                return held
            auth = self.with_worker_client(address, partial(self._create, rollout_id=rollout_id))
            client = hvac.Client(url=address, token=auth["client_token"], timeout=self._timeout)
            lease = _lease(client, auth, time.monotonic())
            self._children[(address, rollout_id)] = lease
            self.created.append(lease.accessor)
            return lease

    def _create(self, parent: hvac.Client, *, rollout_id: str) -> dict:
        response = parent.auth.token.create(
            role_name=self._role,
            policies=self._policies or None,  # None: the worker token's own policies
            ttl=f"{self._ttl}s",
            renewable=True,
            display_name="patchpilot-rollout",
            meta={"rollout": rollout_id[:200]},
        )
        return dict(response["auth"])

    def drop_child(self, address: str, rollout_id: str) -> None:
        """Forget a child Vault refused (expired with its parent): the next use makes another."""
        with self._lock:
            self._children.pop((address, rollout_id), None)

    def revoke_rollout(self, address: str, rollout_id: str, accessor: str | None) -> int:
        """Revoke the rollout's child held here and, by `accessor`, the one its preflight made
        (on whichever worker). Idempotent: revoking a gone token is not an error. Returns how
        many revocations Vault accepted."""
        with self._lock:
            self._ended[rollout_id] = None
            while len(self._ended) > ENDED_KEPT:
                del self._ended[next(iter(self._ended))]
            held = [self._children.pop(key) for key in list(self._children) if key[1] == rollout_id]
        accessors = {lease.accessor for lease in held}
        if accessor:
            accessors.add(accessor)
        for found in accessors:
            self.with_worker_client(address, partial(_revoke_accessor, accessor=found))
        return len(accessors)

    # ---- renewal and shutdown ----------------------------------------------------------------

    def renew_due(self) -> None:
        """Renew every token past half its lease: the logins, and the children used within their
        TTL (an unused child is left to expire). A login renewal that no longer extends the
        lease (the role's max TTL is near) is replaced by a new login."""
        now = time.monotonic()
        with self._lock:
            logins = [(a, lease) for a, lease in self._logins.items() if lease.renew_at <= now]
            children = [(k, lease) for k, lease in self._children.items() if lease.renew_at <= now]
            # A replaced login that has expired needs no revocation: forget it.
            self._retired = [old for old in self._retired if old.renew_at + old.lease_seconds > now]
        for address, lease in logins:
            self._renew_login(address, lease)
        for key, lease in children:
            if now - lease.last_used > lease.lease_seconds:
                with self._lock:
                    self._children.pop(key, None)
                continue
            self._renew(lease, key)

    def _renew_login(self, address: str, lease: _Lease) -> None:
        try:
            auth = lease.client.auth.token.renew_self()["auth"]
            seconds = float(auth.get("lease_duration") or 0)
        except hvac.exceptions.VaultError:
            seconds = 0.0
        if seconds >= lease.lease_seconds / 2:
            lease.renew_at = time.monotonic() + seconds / 2
            return
        # Renewal is capped by the role's max TTL now: log in again before the token expires.
        client = hvac.Client(url=address, timeout=self._timeout)
        try:
            fresh = _lease(client, self._login(client), time.monotonic())
        except hvac.exceptions.VaultError as error:
            log.warning("Vault AppRole login at %s failed: %s", address, str(error)[:200])
            return
        with self._lock:
            self._logins[address] = fresh
            self._retired.append(lease)  # expires soon; revoked at shutdown if it has not

    def _renew(self, lease: _Lease, key: tuple[str, str]) -> None:
        try:
            auth = lease.client.auth.token.renew_self(increment=f"{self._ttl}s")["auth"]
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
            self.drop_child(
                *key
            )  # revoked elsewhere (the cleanup ran on another worker) or expired
            return
        except hvac.exceptions.VaultError as error:
            log.warning("renewing a rollout's Vault token failed: %s", str(error)[:200])
            return
        seconds = float(auth.get("lease_duration") or 0)
        lease.lease_seconds = seconds or lease.lease_seconds
        lease.renew_at = time.monotonic() + (seconds / 2 if seconds else lease.lease_seconds)

    def next_renewal_in(self, ceiling: float) -> float:
        """Seconds until the next token is due for renewal, at most `ceiling`, at least 0.2."""
        with self._lock:
            due = [lease.renew_at for lease in [*self._logins.values(), *self._children.values()]]
        soonest = min(due, default=float("inf")) - time.monotonic()
        return max(0.2, min(ceiling, soonest))

    def ensure_renewer(self) -> None:
        """Start the renewal loop on the running event loop, unless it runs (activities call
        this, so it starts with the first Vault use)."""
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.next_renewal_in(RENEW_CHECK_SECONDS))
            try:
                await asyncio.to_thread(self.renew_due)
            except Exception as error:  # keep renewing: the next round may work
                log.warning("Vault token renewal failed: %s", str(error)[:200])

    async def aclose(self) -> None:
        """Stop the renewal loop, then `close` (in a thread)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Revoke every child held here and the worker's own AppRole token (never a
        VAULT_TOKEN given to the worker: it belongs to the operator). Errors are logged."""
        with self._lock:
            children, self._children = list(self._children.values()), {}
            logins, self._logins = list(self._logins.values()), {}
            retired, self._retired = self._retired, []
        for lease in children:
            _quietly(lease.client.auth.token.revoke_self)
        if self.uses_approle:
            for lease in logins:
                _quietly(lease.client.auth.token.revoke_self)
        for lease in retired:
            # Most have expired by now (403): nothing left to revoke, nothing worth a warning.
            with contextlib.suppress(hvac.exceptions.VaultError, OSError):
                lease.client.auth.token.revoke_self()


def alive(client: hvac.Client) -> bool:
    """Whether Vault still knows `client`'s token (a 403 then means "not allowed", not expiry)."""
    try:
        client.auth.token.lookup_self()
    except hvac.exceptions.Forbidden:
        return False
    return True


def _revoke_accessor(client: hvac.Client, *, accessor: str) -> None:
    # "invalid accessor": already revoked or expired.
    with contextlib.suppress(hvac.exceptions.InvalidRequest):
        client.auth.token.revoke_accessor(accessor)


def _quietly(call: Callable[[], object]) -> None:
    try:
        call()
    except Exception as error:  # shutdown goes on: the token expires at its TTL
        log.warning("revoking a Vault token at shutdown failed: %s", str(error)[:200])
