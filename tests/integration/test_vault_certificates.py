"""Certificate mode on real OpenBao and real sshd: the worker makes an ephemeral key, OpenBao's SSH
secrets engine signs it for the host's login user with a short TTL, and the lab hosts accept
certificates of that CA only (the lab's static key is no longer authorized, and KV holds none)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import asyncssh
import hvac
import pytest
from temporalio.client import Client

from activities.vault_ssh import validity
from bot.settings import Settings
from lab import Lab, OpenBaoProcess
from tests.integration.test_rollout import approve, rollout, start
from tests.support import running_worker
from workflows.models import Phase

TTL = 120


def ssh_ca(openbao: OpenBaoProcess) -> tuple[str, str]:
    """A fresh SSH secrets engine with a CA and a role `patchpilot`; returns (mount, CA key)."""
    root = hvac.Client(url=openbao.address, token=openbao.root_token)
    mount = f"ssh-{uuid.uuid4().hex[:8]}"
    root.sys.enable_secrets_engine("ssh", path=mount)
    root.secrets.ssh.submit_ca_information(
        generate_signing_key=True, key_type="ssh-ed25519", mount_point=mount
    )
    root.secrets.ssh.create_role(
        "patchpilot",
        key_type="ca",
        allow_user_certificates=True,
        allowed_users="*",
        ttl="1h",
        max_ttl="1h",
        mount_point=mount,
    )
    ca = root.secrets.ssh.read_public_key(mount_point=mount)["data"]["public_key"].strip()
    return mount, ca


async def test_certificates_only_patch_every_host_with_the_configured_ttl(
    lab_factory: Callable[..., Lab],
    temporal_client: Client,
    worker_settings: Settings,
    openbao: OpenBaoProcess,
) -> None:
    lab = lab_factory({"cluster-c": ["c1", "c2"]}, services=("nginx",))
    mount, ca = ssh_ca(openbao)
    # The hosts trust the CA, and nothing else: the lab's own key is no longer authorized.
    lab.authorized_keys_path.write_text(f"cert-authority {ca}\n")
    with pytest.raises(asyncssh.PermissionDenied):
        async with asyncssh.connect(**lab.ssh_options("c1"), agent_path=None, config=None):
            pass
    settings = worker_settings.model_copy(
        update={
            "inventory": lab.inventory_path,
            "known_hosts": lab.known_hosts_path,
            "ssh_auth": "certificate",
            "vault_ssh_mount": mount,
            "vault_ssh_cert_ttl": TTL,
        }
    )
    began = int(time.time())
    async with running_worker(temporal_client, settings) as parts:
        handle = await start(
            temporal_client,
            settings,
            # No SSH key is stored under this prefix: only certificates can log in.
            rollout(["cluster-c"], serviceList=["nginx"], secretPathPrefix="no-keys-here"),
        )
        await approve(handle)
        summary = await handle.result()
    ended = int(time.time())
    assert summary.phase == Phase.SUCCEEDED and summary.patched == 2
    assert lab.update_count("c1") == 1 and lab.update_count("c2") == 1
    assert parts.vault.reads == 0, "certificate mode reads no key from KV"
    signed = parts.vault.signed
    assert len(signed) >= 3  # the preflight's probe and at least one per host
    for principal, _valid_after, valid_before in signed:
        assert principal == lab.user
        assert began + TTL - 2 <= valid_before <= ended + TTL + 2, (valid_before, began, ended)


def test_validity_reads_the_times_openssh_would_check() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    certificate = key.generate_user_certificate(
        key, "test", principals=["root"], valid_after=1000, valid_before=5000
    )
    text = certificate.export_certificate().decode()
    assert validity(text) == (1000, 5000)


def test_config_check_verifies_certificate_mode(
    worker_settings: Settings, openbao: OpenBaoProcess
) -> None:
    from bot.cli.checks.vault import check_vault

    mount, _ = ssh_ca(openbao)
    settings = worker_settings.model_copy(
        update={"ssh_auth": "certificate", "vault_ssh_mount": mount, "vault_ssh_cert_ttl": TTL}
    )
    auth, ca = check_vault(settings, "no-keys-here", timeout=5)
    assert auth.status == "ok" and ca.status == "ok", (auth, ca)
    assert ca.check == "Vault SSH CA"
    assert f"{mount}/sign/patchpilot signs a certificate for root" in ca.detail
    wrong = settings.model_copy(update={"vault_ssh_role": "no-such-role"})
    auth, ca = check_vault(wrong, "no-keys-here", timeout=5)
    assert ca.status == "fail" and f"{mount}/sign/no-such-role" in ca.detail, ca
    assert "allow_user_certificates=true" in ca.fix
