"""The approval policy at the edge (CLI, chat, web): a clear early answer before a rollout starts.

The workflow checks all of this again with the worker's own policy and inventory (the
`ResolveApprovalPolicyActivity`, `activities.trust.Trust.rules`); the edge exists so a person
learns at once, naming the option they typed, why a rollout would be refused. Each surface names
its own options: `Options` maps the contract's fields to what the user typed (`--update` on the
CLI, `update=` in chat).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from activities.inventory import InventoryActivities, InventoryError
from activities.trust import Trust, resolve_targets
from workflows.approval import ApprovalRulesRequest
from workflows.families import OS_UPDATE_PROFILES
from workflows.models import RolloutInput
from workflows.policy import Policy


class PolicyRefusal(ValueError):
    """The policy refuses the rollout; the message names the option and the reason."""


@dataclass(frozen=True)
class Options:
    """How a surface names the fields a person sets (defaults: the contract's names)."""

    update: str = "updateCommand"
    profile: str = "updateProfile"
    scripts: str = "preDowntimeScripts/preUpdateScripts/postUpdateScripts"
    approvers: str = "approverEmails"
    requester: str = "requesterEmail"
    limit: str = "hostPattern"


CLI_OPTIONS = Options(
    update="--update",
    profile="--profile",
    scripts="--pre-downtime-script/--pre-update-script/--post-update-script",
    approvers="--approver",
    requester="--requester",
    limit="--limit",
)


def profile_command(
    policy: Policy | None, clusters: list[str], profile: str, options: Options
) -> str:
    """The update command profile `profile` names in the rule of every cluster of `clusters`;
    without a policy, PatchPilot's own OS-family profile of that name (`security`, `full`:
    workflows/families.py). Raises PolicyRefusal naming `options.profile` for a profile that
    does not exist, the clusters without it, or, when the clusters' rules give it different
    commands, the clusters and their commands."""
    if policy is None:
        if profile not in OS_UPDATE_PROFILES:
            raise PolicyRefusal(
                f"{options.profile}: without an approval policy (PATCHPILOT_POLICY) the profiles "
                f"are PatchPilot's own: {', '.join(OS_UPDATE_PROFILES)}; {profile!r} is not one"
            )
        return OS_UPDATE_PROFILES[profile]
    commands: dict[str, list[str]] = {}
    missing = []
    for cluster in clusters:
        rule = policy.rule_for(cluster)
        if rule is None or profile not in rule.update_profiles:
            known = ", ".join(sorted(rule.update_profiles)) if rule else ""
            missing.append(f"{cluster} (its profiles: {known or 'none'})")
            continue
        commands.setdefault(rule.update_profiles[profile], []).append(cluster)
    if missing:
        raise PolicyRefusal(
            f"{options.profile}: the policy has no update profile {profile!r} for "
            f"{'; '.join(missing)}"
        )
    if len(commands) > 1:
        listed = "; ".join(f"{', '.join(names)}: {text!r}" for text, names in commands.items())
        raise PolicyRefusal(
            f"{options.profile}: profile {profile!r} is a different command in these clusters' "
            f"policy entries ({listed}); start one rollout per command"
        )
    return next(iter(commands))


def hosts_by_cluster(inventory: Path, rollout: RolloutInput) -> dict[str, int]:
    """How many hosts of each target cluster the rollout covers, as the workflow will count
    them (its `hostPattern` applied, one machine once), from `inventory`. Raises PolicyRefusal
    when the inventory cannot be read."""
    try:
        targets = resolve_targets(
            InventoryActivities(inventory), rollout.target_clusters, rollout.host_pattern
        )
    except InventoryError as error:
        raise PolicyRefusal(f"inventory {inventory}: {error}") from None
    return {cluster: len(hosts) for cluster, hosts in targets.items()}


def policy_refusal(
    policy: Policy, rollout: RolloutInput, hosts: dict[str, int], options: Options
) -> str | None:
    """Why `policy` refuses `rollout` (`hosts`: cluster -> host count), naming the option the
    person set; None when it is allowed. Checks the requester, a free-form update command or
    script where `allowCustomUpdate` is false, `maxHosts`, and approvers outside the cluster's;
    then everything else the worker will check (`Trust.rules`, without an inventory)."""
    requester = policy.person_by_email(rollout.requester_email)
    if requester is None:
        return (
            f"{options.requester}: {rollout.requester_email} is not a person of the approval "
            "policy, so they may not start rollouts"
        )
    scripts = bool(
        rollout.pre_downtime_scripts or rollout.pre_update_scripts or rollout.post_update_scripts
    )
    for cluster, count in hosts.items():
        rule = policy.rule_for(cluster)
        if rule is None:
            return f"{cluster}: no policy entry matches this cluster, so nobody may patch it"
        allowed = rule.dry_run_by if rollout.dry_run else rule.requesters
        if requester.name not in allowed:
            what = "dry-run" if rollout.dry_run else "start rollouts on"
            return (
                f"{options.requester}: {requester.name} ({rollout.requester_email}) may not "
                f"{what} {cluster} (policy entry {rule.pattern!r})"
            )
        if rule.max_hosts is not None and count > rule.max_hosts:
            return (
                f"{options.limit}: {count} hosts of {cluster} exceed the policy's maxHosts "
                f"{rule.max_hosts}; narrow the rollout with {options.limit} or split it"
            )
        if rollout.dry_run:
            continue
        if not rule.allow_custom_update:
            profiles = ", ".join(sorted(rule.update_profiles)) or "none"
            if rollout.update_command not in rule.update_profiles.values():
                return (
                    f"{options.update}: free-form update commands are not allowed on {cluster} "
                    f"(policy entry {rule.pattern!r}); choose one with {options.profile} "
                    f"(allowed: {profiles})"
                )
            if scripts:
                return (
                    f"{options.scripts}: scripts are not allowed on {cluster} (policy entry "
                    f"{rule.pattern!r}: allowCustomUpdate is false)"
                )
        approvers = {policy.people[name].email for name in policy.approvers_of(cluster)}
        outside = [email for email in rollout.approver_emails if email not in approvers]
        if outside:
            return (
                f"{options.approvers}: {', '.join(outside)} may not approve {cluster} under the "
                f"policy (its approvers: {', '.join(sorted(approvers)) or 'none'}); "
                f"{options.approvers} only narrows whom to ask"
            )
    request = ApprovalRulesRequest(
        rollout_id="(edge)",
        requester_email=rollout.requester_email,
        hosts_by_cluster=hosts,
        update_command=rollout.update_command,
        update_profile=rollout.update_profile,
        has_scripts=scripts,
        dry_run=rollout.dry_run,
        approver_emails=rollout.approver_emails,
    )
    # Everything else exactly as the worker will decide it (min approvals after narrowing, a
    # profile whose command is not the one given, …). The inventory is not read by `rules`.
    refusal = Trust(policy, InventoryActivities(None)).rules(request).refusal
    return f"refused by the approval policy: {refusal}" if refusal else None
