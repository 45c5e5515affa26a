"""Which Vault addresses a rollout may name (`vaultAddress`): pure rules shared by the edge, the
model and the worker's Vault activities.

The worker sends its own Vault token (or its AppRole credentials) to whatever address a rollout
names, so the address is a trust decision, not a preference: it must be one the worker is
configured to trust (`VAULT_ADDR`, plus `PATCHPILOT_VAULT_TRUSTED_ADDRESSES`), and it must use
https unless it is on loopback, where no network can read the token.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# scheme://host[:port][/]: no user info, path, query or fragment (no place to hide another host).
URL_PATTERN = r"https?://[A-Za-z0-9.\-\[\]:]+(:\d+)?/?"
DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize(address: str) -> str:
    """`address` in one canonical form, `scheme://host:port` (lower case, explicit port), so that
    `https://Vault.example.com` and `https://vault.example.com:443/` compare equal.

    Raises ValueError when `address` is not an http(s) URL of a host and optional port.
    """
    text = address.strip()
    if not re.fullmatch(URL_PATTERN, text):
        raise ValueError(
            f"{address[:80]!r} is not an http(s) URL like https://vault.example.com:8200"
        )
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{address[:80]!r} has an invalid port") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"{address[:80]!r} names no host")
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}:{port or DEFAULT_PORTS[parts.scheme]}"


def is_loopback(address: str) -> bool:
    """True when `address` (normalized or not) names this machine: localhost, 127.0.0.0/8, ::1."""
    host = (urlsplit(address.strip()).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(address: str) -> str:
    """The normalized `address` when it uses https, or http on loopback; else ValueError."""
    canonical = normalize(address)
    if canonical.startswith("http://") and not is_loopback(canonical):
        raise ValueError(
            f"{address[:80]!r} must use https: the worker's Vault token would cross the network "
            "in clear text (plain http is accepted on loopback only)"
        )
    return canonical


def check_trusted(address: str, trusted: Iterable[str]) -> str:
    """`address`, normalized, when it passes `check_transport` and equals one of `trusted`.

    Raises ValueError saying which addresses are trusted and how to trust another one; `trusted`
    entries that are not URLs are ignored (the settings validate them where they are read).
    """
    canonical = check_transport(address)
    allowed: list[str] = []
    for entry in trusted:
        try:
            allowed.append(normalize(entry))
        except ValueError:
            continue
    if canonical in allowed:
        return canonical
    known = ", ".join(dict.fromkeys(allowed)) or "none configured"
    raise ValueError(
        f"{canonical} is not a Vault address this worker trusts (trusted: {known}); leave "
        "vaultAddress out to use VAULT_ADDR, or add the address to "
        "PATCHPILOT_VAULT_TRUSTED_ADDRESSES"
    )
