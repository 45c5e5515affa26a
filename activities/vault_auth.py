"""The worker's own Vault auth and each rollout's one token, kept in worker memory (and, for the
rollout's token, in its KV entry: `activities.vault_handoff`).

- The worker's token is `VAULT_TOKEN`, or an AppRole login (`VAULT_ROLE_ID` + `VAULT_SECRET_ID`)
  that is renewed at half its lease and redone when renewal no longer extends it (the role's
  `token_max_ttl`) or once when Vault answers 403 because it expired.
- A rollout has one token for all workers: a child of the worker's token made with
  `auth/token/create` (or `auth/token/create/<role>`), with the configured policies and TTL, at the
  rollout's Vault preflight and recorded in the rollout's KV entry; a worker that does not hold it
  reads it from there. Only when Vault no longer knows it (revoked, or expired, e.g. with the
  AppRole login of a worker that died) does a worker make a replacement and record it in its place.
  Every worker that uses it renews it at half its lease; the rollout's cleanup marks the entry
  ended and revokes by accessor every token the entry and the history named (`revoke_rollout`).
- At shutdown the worker revokes its own AppRole token, and with it (Vault's token hierarchy) the
  rollout tokens it made.

Vault's token rules relied on (Vault/OpenBao docs, "Tokens" and "Token auth method (API)"): a
child token is revoked when its parent is revoked or expires ("token revoke": revoking a token
revokes its children); `renew-self` with an `increment` extends a renewable token beyond the TTL
it was made with, up to its max TTL; an accessor can look a token up, renew or revoke it
(`revoke-accessor`) but cannot authenticate, which is why the accessor, never the token, may enter
Temporal history.
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

from activities.vault_handoff import DEFAULT_PATH, Handoff

log = logging.getLogger(__name__)
T = TypeVar("T")
# How often the renewer looks for tokens due (seconds); tokens are renewed at half their lease.
RENEW_CHECK_SECONDS = 1.0
# A new rollout token lives this long (s) until its entry records it: a worker killed in between
# leaves a token that expires within a minute, unrenewed, instead of within its whole TTL.
CLAIM_SECONDS = 60
# Times a worker tries to record a token while other workers record theirs (check-and-set).
CLAIM_ATTEMPTS = 5
# A worker renews a rollout's token while it used it within this long (s), or its TTL if longer.
# Not the TTL alone: a step that runs longer than the TTL without reading Vault (an update) must
# find the same token after it. A rollout idle on every worker for longer (a maintenance-window
# wait) gets a replacement when it resumes, the old one having expired unrenewed; an ended
# rollout's token stops being renewed at once, since its cleanup revoked it.
RENEW_IDLE_SECONDS = 3600.0


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
    """The worker's login per Vault address and the tokens of running rollouts (their entries
    under `<kv_mount>/<rollout_token_path>/`)."""

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
        kv_mount: str = "secret",
        handoff_path: str = DEFAULT_PATH,
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
        self._claims: dict[tuple[str, str], threading.Lock] = {}  # one lookup per rollout
        self._handoff = Handoff(kv_mount, handoff_path)
        self.created: list[str] = []  # accessors of every rollout token made here (tests count)
        self.adopted: list[str] = []  # ... and of those found in an entry, made elsewhere
        self._renewer: threading.Thread | None = None
        self._stop = threading.Event()
        self._closed = False
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

    # ---- each rollout's one token ------------------------------------------------------------

    def rollout_accessor(self, address: str, rollout_id: str) -> str:
        """At the rollout's preflight: the accessor of its token. A rerun of the preflight (here
        or on another worker, after a lost workflow task) finds the token its entry names and
        makes none; a rollout id used again after its rollout ended gets a new one."""
        self.drop_child(address, rollout_id)  # the entry decides, not what this worker held
        lease = self._rollout_lease(address, rollout_id, preflight=True)
        assert lease is not None  # the preflight makes one when the entry names none
        return lease.accessor

    def rollout_client(self, address: str, rollout_id: str) -> hvac.Client | None:
        """A client with the rollout's token: the one held here, else the one its entry names,
        else (the entry names none alive) a new one recorded there. None once the rollout has
        ended (its cleanup ran): the worker's own token serves a step that runs that late."""
        lease = self._rollout_lease(address, rollout_id, preflight=False)
        return lease.client if lease else None

    def _rollout_lease(self, address: str, rollout_id: str, *, preflight: bool) -> _Lease | None:
        key = (address, rollout_id)
        with self._lock:
            claim = self._claims.setdefault(key, threading.Lock())
        # One lookup per rollout at a time on this worker: the steps waiting find it held.
        with claim:
            with self._lock:
                held = self._children.get(key)
                if held is not None:
                    held.last_used = time.monotonic()
                    return held
            lease = self.with_worker_client(
                address,
                partial(self._obtain, address=address, rollout_id=rollout_id, preflight=preflight),
            )
            if lease is not None:
                with self._lock:
                    self._children[key] = lease
            return lease

    def _obtain(
        self, worker: hvac.Client, *, address: str, rollout_id: str, preflight: bool
    ) -> _Lease | None:
        """The rollout's token from its entry, or a new one recorded there (check-and-set: when
        another worker records one first, this one's is revoked and theirs used)."""
        for _ in range(CLAIM_ATTEMPTS):
            entry = self._handoff.read(worker, rollout_id)
            if entry is not None and entry.ended and not preflight:
                return None
            if entry is not None and entry.token and not entry.ended:
                adopted = self._adopt(address, entry.token, rollout_id)
                if adopted is not None:
                    return adopted
            lease = self._make(worker, address, rollout_id)
            cas = entry.version if entry is not None else 0
            if not self._handoff.record(
                worker, rollout_id, lease.client.token, lease.accessor, cas
            ):
                _quietly(lease.client.auth.token.revoke_self)
                continue
            # Recorded: from now on the cleanup finds it, so it may live its whole TTL.
            self._renew(lease, (address, rollout_id))
            return lease
        raise hvac.exceptions.VaultError(
            f"the rollout's token entry at {self._handoff.shown} changed {CLAIM_ATTEMPTS} times "
            "while this worker tried to record one"
        )

    def _adopt(self, address: str, token: str, rollout_id: str) -> _Lease | None:
        """A lease on the token an entry names; None when Vault no longer knows it (revoked, or
        expired, perhaps with its parent) or it is not this rollout's."""
        client = hvac.Client(url=address, token=token, timeout=self._timeout)
        try:
            data = client.auth.token.lookup_self()["data"]
        except hvac.exceptions.Forbidden:
            return None
        if (data.get("meta") or {}).get("rollout") != rollout_id[:200]:
            return None
        left = float(data.get("ttl") or 0)
        now = time.monotonic()
        renew_at = now + left / 2 if left else float("inf")
        self.adopted.append(str(data.get("accessor") or ""))
        return _Lease(client, self.adopted[-1], float(self._ttl), renew_at, now)

    def _make(self, worker: hvac.Client, address: str, rollout_id: str) -> _Lease:
        """A new child of the worker's token with the rollout's policies, living CLAIM_SECONDS
        until it is recorded: a worker killed before recording it leaves no long-lived token."""
        response = worker.auth.token.create(
            role_name=self._role,
            policies=self._policies or None,  # None: the worker token's own policies
            ttl=f"{min(self._ttl, CLAIM_SECONDS)}s",
            renewable=True,
            display_name="patchpilot-rollout",
            meta={"rollout": rollout_id[:200]},
        )
        auth = dict(response["auth"])
        client = hvac.Client(url=address, token=auth["client_token"], timeout=self._timeout)
        lease = _lease(client, auth, time.monotonic())
        self.created.append(lease.accessor)
        return lease

    def drop_child(self, address: str, rollout_id: str) -> None:
        """Forget the rollout's token held here (Vault refused it: revoked, or expired with its
        parent): the next use looks at the entry again."""
        with self._lock:
            self._children.pop((address, rollout_id), None)

    def revoke_rollout(self, address: str, rollout_id: str, accessor: str | None) -> int:
        """At the rollout's end, on whichever worker: mark its entry ended, then revoke by
        accessor the token the entry named, `accessor` (the preflight's, from history) and any
        held here. Idempotent (a gone token is not an error; a retried cleanup finds the
        accessor in the ended entry). Returns how many accessors were revoked."""
        with self._lock:
            held = [self._children.pop(key) for key in list(self._children) if key[1] == rollout_id]
            for key in [key for key in self._claims if key[1] == rollout_id]:
                del self._claims[key]
        accessors = {lease.accessor for lease in held} | ({accessor} if accessor else set())

        def end(worker: hvac.Client) -> int:
            for _ in range(CLAIM_ATTEMPTS):
                entry = self._handoff.read(worker, rollout_id)
                version = None
                if entry is None or not entry.ended:
                    cas = entry.version if entry is not None else 0
                    named = entry.accessor if entry is not None else None
                    version = self._handoff.end(worker, rollout_id, named or accessor, cas)
                    if version is None:
                        continue  # a worker recorded a replacement meanwhile: end that one
                if entry is not None and entry.accessor:
                    accessors.add(entry.accessor)
                for found in accessors:
                    _revoke_accessor(worker, accessor=found)
                if version is not None:
                    self._handoff.destroy_before(worker, rollout_id, version)
                return len(accessors)
            raise hvac.exceptions.VaultError(
                f"the rollout's token entry at {self._handoff.shown} kept changing"
            )

        return self.with_worker_client(address, end)

    # ---- renewal and shutdown ----------------------------------------------------------------

    def renew_due(self) -> None:
        """Renew every token past half its lease: the logins, and the rollout tokens used here
        within RENEW_IDLE_SECONDS (or their TTL, if longer). A login renewal that no longer
        extends the lease (the role's max TTL is near) is replaced by a new login."""
        now = time.monotonic()
        with self._lock:
            logins = [(a, lease) for a, lease in self._logins.items() if lease.renew_at <= now]
            children = [(k, lease) for k, lease in self._children.items() if lease.renew_at <= now]
            # A replaced login that has expired needs no revocation: forget it.
            self._retired = [old for old in self._retired if old.renew_at + old.lease_seconds > now]
        for address, lease in logins:
            self._renew_login(address, lease)
        for key, lease in children:
            if now - lease.last_used > max(RENEW_IDLE_SECONDS, lease.lease_seconds):
                # Not revoked: it is the rollout's, other workers may use it, its cleanup ends it.
                self.drop_child(*key)
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
            # Revoked (the rollout's cleanup ran, here or elsewhere) or expired.
            self.drop_child(*key)
            return
        except hvac.exceptions.VaultError as error:
            log.warning("renewing a rollout's Vault token failed: %s", str(error)[:200])
            lease.renew_at = time.monotonic() + RENEW_CHECK_SECONDS
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
        """Start the renewal thread unless it runs (activities call this, so it starts with the
        first Vault use). A thread of its own: neither blocking work on the worker's event loop
        nor a full thread pool delays a renewal."""
        with self._lock:
            if self._closed or (self._renewer is not None and self._renewer.is_alive()):
                return
            self._renewer = threading.Thread(
                target=self._renew_forever, name="vault-token-renewer", daemon=True
            )
            self._renewer.start()

    def _renew_forever(self) -> None:
        while not self._stop.wait(self.next_renewal_in(RENEW_CHECK_SECONDS)):
            try:
                self.renew_due()
            except Exception as error:  # keep renewing: the next round may work
                log.warning("Vault token renewal failed: %s", str(error)[:200])

    async def aclose(self) -> None:
        """Stop the renewal thread, then `close` (in a thread)."""
        with self._lock:
            self._closed = True
            renewer = self._renewer
        self._stop.set()
        if renewer is not None:
            await asyncio.to_thread(renewer.join, self._timeout * 2)
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Revoke the worker's own AppRole token (never a VAULT_TOKEN given to the worker: it
        belongs to the operator). The rollout tokens held here are the rollouts', ended by their
        cleanups, and are only forgotten; those this worker made are children of its login, so
        Vault revokes them with it (another worker still using one makes a replacement). Errors
        are logged."""
        with self._lock:
            self._children = {}
            logins, self._logins = list(self._logins.values()), {}
            retired, self._retired = self._retired, []
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
