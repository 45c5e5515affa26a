"""Signing and verifying decisions as SSH signatures (OpenSSH's SSHSIG format, what
`ssh-keygen -Y sign -n patchpilot-decision@patchpilot` makes), with asyncssh's implementation.

A person signs with their own ed25519 key (the CLI's `--key`); a front end signs with its own key
for a person it verified (a Slack click, a personal link). Whoever verifies holds the public keys
that may vouch for each person: the person's own keys from the policy, and the front ends' keys
from the worker's configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import asyncssh

from workflows.proof import NAMESPACE, DecisionStatement, GrantStatement

Statement = DecisionStatement | GrantStatement


class ProofError(ValueError):
    """A signing key that cannot be used; the message says which and why."""


def sign_statement(statement: Statement, private_key: str | Path) -> str:
    """The armored SSH signature (`-----BEGIN SSH SIGNATURE-----`…) of `statement`, made with
    the OpenSSH private key in `private_key` (a path, or the key's text). Raises ProofError when
    the key cannot be read (missing, encrypted, not a private key)."""
    try:
        key = (
            asyncssh.read_private_key(private_key)
            if isinstance(private_key, Path)
            else asyncssh.import_private_key(private_key)
        )
    except (OSError, asyncssh.KeyImportError, ValueError) as error:
        raise ProofError(f"cannot use signing key {private_key}: {error}") from None
    signature = asyncssh.create_sshsig(key, statement.to_bytes(), namespace=NAMESPACE)
    return signature.decode("ascii")


def allowed_signers(vouchers: Mapping[str, Sequence[str]]) -> str:
    """An OpenSSH allowed_signers document (ssh-keygen(1), ALLOWED SIGNERS) giving each signer
    name in `vouchers` its public keys ("ssh-ed25519 AAAA…"), limited to PatchPilot's namespace."""
    lines = []
    for signer, keys in vouchers.items():
        for key in keys:
            kind, blob = key.split()[:2]
            lines.append(f'{signer} namespaces="{NAMESPACE}" {kind} {blob}')
    return "\n".join(lines) + "\n"


def verify_statement(
    statement: Statement, signature: str, vouchers: Mapping[str, Sequence[str]]
) -> bool:
    """Whether `signature` is a valid SSH signature of `statement` in PatchPilot's namespace by
    one of the keys `vouchers` lists for `statement.signer`. False for any malformed signature."""
    if not vouchers.get(statement.signer):
        return False
    try:
        signers = asyncssh.import_allowed_signers(allowed_signers(vouchers))
        return bool(
            asyncssh.validate_sshsig(
                statement.to_bytes(), signature.encode("ascii"), statement.signer, signers
            )
        )
    except (ValueError, UnicodeEncodeError, asyncssh.KeyImportError):
        return False
