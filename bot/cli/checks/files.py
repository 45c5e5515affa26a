"""The worker's files: the Ansible inventory (clusters and hosts) and the known_hosts file that
must hold a key for every inventory host (host keys are always verified)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.cli.checks import CheckResult, fail, ok, short, warn
from bot.settings import Settings

INVENTORY = "Inventory"
KNOWN_HOSTS = "known_hosts"
SHOWN_MISSING = 5  # hosts named in the message; the rest are counted


def check_inventory(settings: Settings) -> tuple[CheckResult, dict[str, list[Any]] | None]:
    """The result, and the clusters (name -> hosts) when the inventory could be read."""
    from activities.inventory import InventoryError, load_inventory

    if settings.inventory is None:
        return fail(
            INVENTORY,
            "PATCHPILOT_INVENTORY is not set: no cluster can be resolved",
            "Set PATCHPILOT_INVENTORY to any source `ansible-inventory -i` reads (INI, YAML, a "
            "directory, a plugin config; comma-separated for several); groups are clusters",
        ), None
    try:
        clusters = load_inventory(settings.inventory)
    except InventoryError as error:
        return fail(
            INVENTORY,
            short(error, 300),
            f"Make PATCHPILOT_INVENTORY ({settings.inventory}) an inventory Ansible reads: "
            f"`ansible-inventory -i {settings.inventory} --list` shows what Ansible says",
        ), None
    with_hosts = {name: hosts for name, hosts in clusters.items() if hosts}
    if not with_hosts:
        return fail(
            INVENTORY,
            f"{settings.inventory} names no cluster with hosts",
            "Add groups with hosts (INI: [cluster-a] then one host per line)",
        ), clusters
    listed = ", ".join(f"{name} ({len(hosts)} hosts)" for name, hosts in with_hosts.items())
    detail = f"{settings.inventory}: {len(with_hosts)} clusters: {listed}"
    return ok(INVENTORY, detail), clusters


def check_known_hosts(settings: Settings, clusters: dict[str, list[Any]] | None) -> CheckResult:
    """The file parses and, when the inventory was read, matches every host (address and port)."""
    import asyncssh

    path: Path = settings.known_hosts
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return fail(
            KNOWN_HOSTS,
            f"{path} does not exist: no host key can be verified, so no SSH connection is made",
            "Set PATCHPILOT_KNOWN_HOSTS to a known_hosts file with every host's key "
            "(e.g. `ssh-keyscan -p PORT HOST >> FILE`, then verify the fingerprints)",
        )
    except (OSError, UnicodeDecodeError) as error:
        return fail(
            KNOWN_HOSTS,
            f"cannot read {path}: {short(error)}",
            "Make the file readable by the worker's user, or set PATCHPILOT_KNOWN_HOSTS",
        )
    try:
        known = asyncssh.import_known_hosts(text)
    except (ValueError, asyncssh.Error) as error:
        return fail(
            KNOWN_HOSTS,
            f"{path} is not a valid known_hosts file: {short(error)}",
            "Regenerate it with ssh-keyscan or fix the broken line",
        )
    entries = sum(1 for line in text.splitlines() if line.strip() and not line.startswith("#"))
    if clusters is None:
        return ok(KNOWN_HOSTS, f"{path}: {entries} entries (inventory not checked)")
    hosts = [host for members in clusters.values() for host in members]
    missing = []
    for host in hosts:
        port = None if host.port == 22 else host.port
        host_keys, ca_keys, *_ = known.match(host.address, host.address, port)
        if not host_keys and not ca_keys:
            missing.append(host)
    if missing:
        shown = ", ".join(f"{h.name} ({h.address}:{h.port})" for h in missing[:SHOWN_MISSING])
        more = f" and {len(missing) - SHOWN_MISSING} more" if len(missing) > SHOWN_MISSING else ""
        first = missing[0]
        return fail(
            KNOWN_HOSTS,
            f"{path} has no key for {len(missing)} of {len(hosts)} inventory hosts: {shown}{more}",
            f"Add them, e.g. `ssh-keyscan -p {first.port} {first.address} >> {path}` and verify "
            "the fingerprints out of band (host keys are always checked)",
        )
    return ok(KNOWN_HOSTS, f"{path}: keys for all {len(hosts)} inventory hosts")


POLICY = "Policy"


def check_policy(settings: Settings, clusters: dict[str, list[Any]] | None) -> CheckResult:
    """The approval policy reads; every inventory cluster has a rule; a front end's signing key
    (PATCHPILOT_SIGNING_KEY) is one the policy lists for PATCHPILOT_SIGNER."""
    import asyncssh

    from activities.policy import load_policy
    from workflows.policy import PolicyError

    if settings.policy is None:
        return warn(
            POLICY,
            "PATCHPILOT_POLICY is not set: `patchpilot worker`, `bot` and `approval-server` "
            "refuse to start without one (development: --no-policy)",
            'Write a policy (README "Trust model") and set PATCHPILOT_POLICY to its path',
        )
    try:
        policy = load_policy(settings.policy)
    except PolicyError as error:
        return fail(POLICY, short(error, 300), 'Fix the key named; README "Trust model"')
    detail = (
        f"{settings.policy}: {len(policy.people)} people, {len(policy.clusters)} cluster "
        f"rule(s), front ends: {', '.join(policy.frontends) or 'none'}"
    )
    if settings.signing_key is not None:
        signer = settings.signer or "?"
        try:
            key = asyncssh.read_private_key(settings.signing_key)
        except (OSError, asyncssh.KeyImportError, ValueError) as error:
            return fail(POLICY, f"PATCHPILOT_SIGNING_KEY: {error}", "An OpenSSH ed25519 key file")
        public = key.export_public_key().decode().split()[:2]
        listed = [line.split()[:2] for line in policy.frontends.get(signer, ())]
        if public not in listed:
            return fail(
                POLICY,
                f"the signing key is not one the policy lists for front end {signer!r}",
                "Add its public key to frontends.<PATCHPILOT_SIGNER>.keys or set the signer",
            )
        detail += f"; signing as {signer}"
    bare = [name for name in clusters or {} if policy.rule_for(name) is None]
    if bare:
        return warn(
            POLICY,
            detail + f"; no rule for cluster(s) {', '.join(sorted(bare))}: nobody may patch them",
            "Add a clusters entry (a name or a glob) if they should be patched",
        )
    return ok(POLICY, detail)
