"""Vault (or OpenBao): reachable and unsealed, the worker's credentials valid, and an SSH key
readable where rollouts will look for it."""

from __future__ import annotations

import time
from typing import Any

from bot.cli.checks import CheckResult, fail, ok, short, skip, warn
from bot.settings import Settings

AUTH = "Vault auth"
KV = "Vault KV mount"
SSH_CA = "Vault SSH CA"
BAD_CREDENTIALS = "needs valid Vault credentials"


def _auth_failed(detail: str, fix: str, kv_needs: str) -> list[CheckResult]:
    """The auth check failed, so the KV check cannot run: say what it needs."""
    return [fail(AUTH, detail, fix), skip(KV, kv_needs)]


def check_vault(settings: Settings, secret_prefix: str, timeout: float) -> list[CheckResult]:
    """The auth result, then the KV result (skipped when auth failed); blocking, `timeout` s
    per request."""
    import hvac
    import hvac.exceptions
    import requests

    if not settings.vault_addr:
        return _auth_failed(
            "VAULT_ADDR is not set: the worker cannot fetch SSH keys",
            "Set VAULT_ADDR=https://vault.example.com:8200 (Vault or OpenBao)",
            "needs VAULT_ADDR",
        )
    address = settings.vault_addr
    token = settings.vault_token.get_secret_value() if settings.vault_token else None
    client = hvac.Client(url=address, token=token, timeout=timeout)
    try:
        health = client.sys.read_health_status(method="GET")
        if not isinstance(health, dict):
            health = health.json()
    except (requests.exceptions.RequestException, hvac.exceptions.VaultError, ValueError) as error:
        return _auth_failed(
            f"cannot reach Vault at {address}: {short(error)}",
            "Check VAULT_ADDR (scheme, host, port) and that Vault is running",
            "needs a reachable Vault",
        )
    if health.get("sealed"):
        return _auth_failed(
            f"Vault at {address} is sealed",
            "Unseal it (`vault operator unseal` / `bao operator unseal`)",
            "needs an unsealed Vault",
        )
    try:
        auth = _authenticate(client, settings, address, token)
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest) as error:
        what = "token" if token else "AppRole login"
        return _auth_failed(
            f"Vault at {address} refused the {what}: {short(error, 120)}",
            "Set VAULT_TOKEN to a valid, unexpired token (check with `vault token lookup`), "
            "or VAULT_ROLE_ID + VAULT_SECRET_ID for AppRole",
            BAD_CREDENTIALS,
        )
    except (requests.exceptions.RequestException, hvac.exceptions.VaultError) as error:
        return _auth_failed(
            f"Vault at {address}: authentication failed: {short(error)}",
            "Check VAULT_ADDR and the Vault server's logs",
            BAD_CREDENTIALS,
        )
    if auth is None:
        return _auth_failed(
            "no Vault credentials for the worker",
            "Set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID (AppRole)",
            "needs Vault credentials",
        )
    auth = _with_token_rights(client, auth, settings)
    if settings.ssh_auth == "certificate":
        return [auth, _check_ssh_ca(client, settings)]
    return [auth, _check_kv(client, settings.vault_kv_mount, secret_prefix)]


def _check_ssh_ca(client: Any, settings: Settings) -> CheckResult:
    """Certificate mode: Vault signs a throwaway key for the default user, as a host step would."""
    import hvac.exceptions
    import requests

    from activities.vault_ssh import sign_ephemeral_key
    from bot.worker import certificate_settings

    certs = certificate_settings(settings)
    assert certs is not None  # certificate mode
    role = certs.role_for(None)
    shown = f"{certs.mount}/sign/{role}"
    fix = (
        f"Enable the SSH secrets engine at {certs.mount}/ with a CA (`bao write "
        f"{certs.mount}/config/ca generate_signing_key=true`), a role {role!r} with "
        "key_type=ca and allow_user_certificates=true, and `update` on "
        f'{certs.mount}/sign/* in the worker\'s policy (README "Vault layout")'
    )
    try:
        signed = sign_ephemeral_key(client, certs, role, certs.default_user)
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as error:
        return fail(SSH_CA, f"signing at {shown} failed: {short(error)}", fix)
    left = signed.valid_before - int(time.time())
    return ok(
        SSH_CA,
        f"{shown} signs a certificate for {signed.principal}, valid for {left} s more "
        f"(PATCHPILOT_VAULT_SSH_CERT_TTL {certs.ttl_seconds} s)",
    )


# What the worker does with tokens (activities/vault_auth.py); with the rollouts' entries, and the
# capabilities each needs, in `_token_rights`.
TOKEN_RIGHTS = {
    "auth/token/create": "create rollout tokens (auth/token/create)",
    "auth/token/revoke-accessor": "revoke them (auth/token/revoke-accessor)",
}


def _token_rights(settings: Settings) -> dict[str, tuple[str, set[str]]]:
    """Path -> (what the worker does there, the capabilities it needs, all of them)."""
    entries = f"{settings.vault_kv_mount}/data/{settings.vault_rollout_token_path.strip('/')}"
    rights = {path: (what, {"update"}) for path, what in TOKEN_RIGHTS.items()}
    rights[f"{entries}/check"] = (
        f"keep them where every worker finds them ({entries}/*: read, create, update)",
        {"read", "create", "update"},
    )
    return rights


def _with_token_rights(client: Any, auth: CheckResult, settings: Settings) -> CheckResult:
    """`auth`, failed when the worker's token may not make, record or revoke rollout tokens."""
    missing = _missing_token_rights(client, _token_rights(settings))
    if not missing:
        return auth
    entries = f"{settings.vault_kv_mount}/data/{settings.vault_rollout_token_path.strip('/')}"
    return fail(
        AUTH,
        f"{auth.detail}; but it may not {missing}, which each rollout's token needs",
        'Add to the worker\'s policy: path "auth/token/create" { capabilities = '
        '["create", "update"] }, path "auth/token/revoke-accessor" { capabilities = '
        f'["update"] }} and path "{entries}/*" {{ capabilities = ["create", "read", "update"] }} '
        '(README "Vault layout")',
    )


def _missing_token_rights(client: Any, rights: dict[str, tuple[str, set[str]]]) -> str | None:
    """What the worker's token may not do with rollout tokens, by Vault's own answer
    (`sys/capabilities-self`, Vault API docs); None when it may do all of it or Vault won't say."""
    import hvac.exceptions
    import requests

    try:
        answer = client.adapter.post("/v1/sys/capabilities-self", json={"paths": list(rights)})
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException):
        return None  # the preflight will say it precisely
    data = answer.get("data", answer) if isinstance(answer, dict) else {}
    missing = []
    for path, (what, needed) in rights.items():
        held = set(data.get(path) or [])
        if "create" in held and path.startswith("auth/"):
            held.add("update")  # Vault's token endpoints accept either
        if "root" not in held and not needed <= held:
            missing.append(what)
    return " or ".join(missing) or None


def _authenticate(
    client: Any, settings: Settings, address: str, token: str | None
) -> CheckResult | None:
    """The token's lookup or an AppRole login; None without credentials. hvac errors propagate."""
    if token:
        info = client.auth.token.lookup_self()["data"]
        ttl = int(info.get("ttl") or 0)
        expires = (
            "never expires" if ttl == 0 else f"expires in {ttl // 3600}h{ttl % 3600 // 60:02d}m"
        )
        detail = (
            f"{address}: token valid (policies {', '.join(info.get('policies') or [])}; {expires})"
        )
        if 0 < ttl < 24 * 3600:
            return warn(AUTH, detail, "The token expires within a day: renew it or use AppRole")
        return ok(AUTH, detail)
    if settings.vault_role_id and settings.vault_secret_id:
        client.auth.approle.login(
            role_id=settings.vault_role_id,
            secret_id=settings.vault_secret_id.get_secret_value(),
        )
        return ok(AUTH, f"{address}: AppRole login succeeded")
    return None


def _check_kv(client: Any, mount: str, prefix: str) -> CheckResult:
    import hvac.exceptions
    import requests

    path = f"{prefix}/default"
    shown = f"{mount}/{path}"
    policy_fix = (
        f"Check PATCHPILOT_VAULT_KV_MOUNT (now {mount!r}) names a KV v2 mount, and that the "
        f"worker's policy allows read on {mount}/data/{prefix}/*"
    )
    mount_known = False
    try:
        info = client.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}")
        data = info.get("data", {}) if isinstance(info, dict) else {}
        kind, version = data.get("type"), str((data.get("options") or {}).get("version", "1"))
        if kind != "kv" or version != "2":
            return fail(
                KV,
                f"{mount}/ is a {kind or 'unknown'} mount (version {version}), not KV v2",
                f"Enable KV v2 there (`vault secrets enable -path={mount} kv-v2`) or set "
                "PATCHPILOT_VAULT_KV_MOUNT to your KV v2 mount",
            )
        mount_known = True
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException):
        pass  # policies often hide mount metadata; reading the key below says enough
    try:
        secret = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True
        )
    except hvac.exceptions.InvalidPath:
        if mount_known:
            return warn(
                KV,
                f"KV v2 mount {mount}/ readable, but there is no key at {shown}; rollouts need "
                f"{mount}/{prefix}/<host> for every host then",
                f"Store the SSH key: `vault kv put -mount={mount} {path} "
                "private_key=@id_ed25519 username=<user>`",
            )
        return fail(
            KV, f"nothing at {shown}: the mount {mount!r} or the key does not exist", policy_fix
        )
    except hvac.exceptions.Forbidden:
        return fail(KV, f"permission denied reading {shown}", policy_fix)
    except (hvac.exceptions.VaultError, requests.exceptions.RequestException) as error:
        return fail(KV, f"reading {shown} failed: {short(error)}", policy_fix)
    fields = (secret.get("data") or {}).get("data") or {}
    if not fields.get("private_key"):
        return fail(
            KV,
            f"{shown} exists but has no 'private_key' field",
            "Store the key under the field name private_key (and optionally username)",
        )
    return ok(KV, f"SSH key readable at {shown}")
