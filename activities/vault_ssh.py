"""Short-lived SSH certificates signed by Vault's SSH secrets engine: an ephemeral key pair made in
worker memory, its public half signed for one login user and a short TTL, so nothing long-lived
exists to steal. The private key never leaves the worker (Vault signs the public key only).

Vault/OpenBao API docs, "SSH secrets engine": `POST <mount>/sign/<role>` with `public_key`,
`valid_principals`, `ttl` and `cert_type=user` returns `signed_key`, an OpenSSH user certificate.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field

import asyncssh
import hvac


@dataclass(frozen=True)
class SignedKey:
    """An ephemeral private key (OpenSSH text) and its certificate; in worker memory only."""

    private_key: str = field(repr=False)
    certificate: str = field(repr=False)
    principal: str
    valid_after: int  # Unix seconds
    valid_before: int


@dataclass(frozen=True)
class CertSettings:
    """Where and how to sign: the engine's mount, the role (`{host}` is replaced by the host's
    name, for a role per host), the certificate's TTL in seconds, and the login user signed for
    when the inventory names none (also the preflight's probe)."""

    mount: str = "ssh"
    role: str = "patchpilot"
    ttl_seconds: int = 600
    default_user: str = "root"

    def role_for(self, host: str | None) -> str:
        return self.role.replace("{host}", host or "default")


def sign_ephemeral_key(
    client: hvac.Client, settings: CertSettings, role: str, principal: str
) -> SignedKey:
    """Make an Ed25519 key pair and have Vault sign its public key for `principal`, valid for
    `settings.ttl_seconds`. hvac's errors propagate (403: the policy lacks `update` on
    `<mount>/sign/<role>`; 400: the role refuses the principal or the TTL)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    response = client.secrets.ssh.sign_ssh_key(
        name=role,
        public_key=key.export_public_key().decode(),
        ttl=f"{settings.ttl_seconds}s",
        valid_principals=principal,
        cert_type="user",
        mount_point=settings.mount,
    )
    signed = str(response["data"]["signed_key"]).strip()
    asyncssh.import_certificate(signed)  # refuse anything that is not a certificate
    valid_after, valid_before = validity(signed)
    return SignedKey(
        private_key=key.export_private_key().decode(),
        certificate=signed,
        principal=principal,
        valid_after=valid_after,
        valid_before=valid_before,
    )


def validity(certificate: str) -> tuple[int, int]:
    """(valid_after, valid_before) in Unix seconds of an OpenSSH Ed25519 user certificate, read
    from its wire form (OpenSSH PROTOCOL.certkeys: type, nonce, public key, serial, type, key id,
    principals, then the two uint64 times)."""
    blob = base64.b64decode(certificate.split()[1])
    offset = 0

    def string() -> bytes:
        nonlocal offset
        (length,) = struct.unpack_from(">I", blob, offset)
        offset += 4 + length
        return blob[offset - length : offset]

    string(), string(), string()  # type, nonce, Ed25519 public key
    offset += 8 + 4  # serial, certificate type
    string(), string()  # key id, principals
    return struct.unpack_from(">QQ", blob, offset)
