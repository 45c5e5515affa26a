"""The worker's side of the trust model (README "Trust model"): its own policy and its own keys
decide, never what arrives through Temporal.

- `ResolveApprovalPolicyActivity`: may this requester start this rollout here, and who must
  approve it (`ApprovalRules`); the workflow's validators and its wait use the answer.
- `VerifyDecisionActivity`, `VerifyStandingGrantsActivity`: a decision's or a schedule grant's
  SSH signature, checked against the policy's keys, for the rollout's digest.
- `HostGate.admit`: before any host activity connects, the rollout's approvals are verified
  again here, for a digest this worker computes from its own inventory (so a forged host list,
  a forged `continued` input, or a fake worker answering `GetClusterHostsActivity` gets nothing
  run), and the host's address, user and commands must be the inventory's.

Without a policy (`--no-policy`, development) everything is allowed, as before policies existed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.inventory import InventoryActivities, InventoryError
from activities.lineage import Lineages, approvals_problem, decision_problem
from activities.proof import verify_statement
from workflows import names
from workflows.approval import (
    NO_APPROVERS,
    ApprovalRules,
    ApprovalRulesRequest,
    ClusterApprovers,
    DecisionCheck,
    GrantCheck,
)
from workflows.models import ApprovalDecision, HostJob, HostStepInput, HostTarget
from workflows.planning import once_per_machine
from workflows.policy import Person, Policy
from workflows.proof import DecisionStatement, StandingGrant, rollout_digest

# A signer's clock may run ahead of the worker's by this much.
CLOCK_SKEW = timedelta(minutes=5)
# How long one host gate verdict is reused for the same job (every step of every host asks).
VERDICT_SECONDS = 30.0


class TrustError(ValueError):
    """A decision, grant or host step the policy does not allow; the message says why."""


def profile_of(rule_profiles: dict[str, str], command: str, named: str | None) -> str | None:
    """The update profile `command` is: `named` when it is that profile's command, else the
    first profile with exactly this command; None: a free-form command. Raises TrustError when
    `named` is not a profile or its command is not `command`."""
    if named is not None:
        if named not in rule_profiles:
            known = ", ".join(sorted(rule_profiles)) or "none"
            raise TrustError(f"update profile {named!r} is not allowed here (allowed: {known})")
        if rule_profiles[named] != command:
            raise TrustError(f"the update command is not profile {named!r}'s command")
        return named
    return next((name for name, text in rule_profiles.items() if text == command), None)


@dataclass
class _Verdict:
    at: float
    problem: str | None
    targets: dict[str, HostTarget]


def resolve_targets(
    inventory: InventoryActivities, clusters: list[str], host_pattern: str | None
) -> dict[str, list[HostTarget]]:
    """Cluster -> hosts as the rollout resolves them (the `hostPattern` applied, one machine
    once), from this process's own inventory: what a digest is computed over by the worker's
    host gate and by every front end that signs. Raises InventoryError."""
    listed = inventory.clusters(host_pattern)
    machines: dict[tuple[str, int], str] = {}
    targets = {}
    for name in clusters:
        hosts = listed.get(name, ([],))[0]
        targets[name], _ = once_per_machine(hosts, machines)
    return targets


class Trust:
    """The policy (None: development mode, everything allowed) and the checks that use it."""

    def __init__(
        self,
        policy: Policy | None,
        inventory: InventoryActivities,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lineages: Lineages | None = None,
    ) -> None:
        self.policy = policy
        self._inventory = inventory
        self._clock = clock
        self._verdicts: dict[str, _Verdict] = {}
        self._lineages = lineages or Lineages()

    # ---- who may ask, who must approve -------------------------------------------------------

    def rules(self, request: ApprovalRulesRequest) -> ApprovalRules:
        """The approval rules of `request` under the policy (see ApprovalRules)."""
        policy = self.policy
        if policy is None:
            approvers = [e for e in request.approver_emails if e != request.requester_email]
            if not approvers and not request.dry_run:
                return ApprovalRules(enforced=False, refusal=NO_APPROVERS)
            return ApprovalRules(
                enforced=False,
                clusters=[
                    ClusterApprovers(cluster=c, approvers=approvers)
                    for c in request.hosts_by_cluster
                ],
            )
        try:
            requester = self._person(request.requester_email, "requester")
            clusters = [
                self._cluster_rules(policy, requester, cluster, hosts, request)
                for cluster, hosts in request.hosts_by_cluster.items()
            ]
        except TrustError as refused:
            return ApprovalRules(enforced=True, refusal=str(refused))
        rules = [policy.rule_for(cluster) for cluster in request.hosts_by_cluster]
        operators = {policy.people[name].email for rule in rules if rule for name in rule.operators}
        return ApprovalRules(enforced=True, clusters=clusters, operators=sorted(operators))

    def _cluster_rules(
        self,
        policy: Policy,
        requester: Person,
        cluster: str,
        hosts: int,
        request: ApprovalRulesRequest,
    ) -> ClusterApprovers:
        rule = policy.rule_for(cluster)
        if rule is None:
            raise TrustError(f"no policy entry matches cluster {cluster}: nobody may patch it")
        profile = None
        if not request.dry_run:
            profile = profile_of(
                dict(rule.update_profiles), request.update_command, request.update_profile
            )
        reason = policy.may_request(
            requester.name,
            cluster,
            hosts=hosts,
            profile=profile,
            custom_update=profile is None or request.has_scripts,
            dry_run=request.dry_run,
        )
        if reason:
            raise TrustError(reason)
        approvers = [
            policy.people[name].email
            for name in sorted(policy.approvers_of(cluster, requester.name))
        ]
        if request.approver_emails:
            outside = [e for e in request.approver_emails if e not in approvers]
            if outside:
                raise TrustError(
                    f"{', '.join(outside)} may not approve {cluster} under the policy (its "
                    f"approvers: {', '.join(approvers)}); approvers= only narrows whom to ask"
                )
            approvers = [e for e in approvers if e in request.approver_emails]
            if len(approvers) < rule.min_approvals:
                raise TrustError(
                    f"{cluster} needs {rule.min_approvals} approvals, but approvers= names only "
                    f"{len(approvers)} of its approvers"
                )
        return ClusterApprovers(
            cluster=cluster, approvers=approvers, min_approvals=rule.min_approvals
        )

    def _person(self, email: str, role: str) -> Person:
        assert self.policy is not None
        person = self.policy.person_by_email(email)
        if person is None:
            raise TrustError(f"{role} {email} is not a person of the policy")
        return person

    # ---- signatures --------------------------------------------------------------------------

    def check_decision(self, check: DecisionCheck) -> str:
        """The policy name of the person whose signed decision `check` carries; TrustError when
        the proof is missing, signed by a key the policy does not give that person or a front
        end, dated in the future, or covers another rollout, decision or digest."""
        if self.policy is None:
            return check.approval.approver
        return self._verified(check.rollout_id, check.decision, check.approval, check.digest).name

    def _verified(
        self, rollout_id: str, decision: str, approval: ApprovalDecision, digest: str
    ) -> Person:
        assert self.policy is not None
        person = self._person(approval.approver, "approver")
        proof = approval.proof
        if proof is None:
            raise TrustError(f"the decision of {approval.approver} carries no signature")
        if proof.digest != digest:
            raise TrustError(
                f"{approval.approver}'s signature covers {proof.digest}, not what runs ({digest})"
            )
        if (
            proof.decided_at.replace(tzinfo=proof.decided_at.tzinfo or UTC)
            > self._clock() + CLOCK_SKEW
        ):
            raise TrustError(f"{approval.approver}'s decision is dated in the future")
        vouchers = self.policy.vouchers(person)
        if proof.signer not in vouchers:
            raise TrustError(
                f"{approval.approver}'s decision is signed by {proof.signer!r}, who may not vouch "
                f"for them (the policy trusts: {', '.join(sorted(vouchers))})"
            )
        statement = DecisionStatement.of(rollout_id, decision, approval.approver, proof)  # type: ignore[arg-type]
        if not verify_statement(statement, proof.signature, {proof.signer: vouchers[proof.signer]}):
            raise TrustError(
                f"{approval.approver}'s signature does not verify with {proof.signer}'s keys"
            )
        return person

    def check_grants(self, check: GrantCheck) -> list[str]:
        """The e-mails of the approvers whose standing grants in `check` hold for this run: for
        this schedule's runs (`rollout_id` `<schedule id>-run-…`), this digest, not expired,
        signed with the approver's own key. Grants that do not hold are left out."""
        if self.policy is None:
            return []
        return [
            g.approver.lower()
            for g in check.grants
            if self._grant_problem(g, check.rollout_id, check.digest) is None
        ]

    def _grant_problem(self, grant: StandingGrant, rollout_id: str, digest: str) -> str | None:
        assert self.policy is not None
        person = self.policy.person_by_email(grant.approver)
        if person is None or grant.signer != person.name:
            return f"grant of {grant.approver} is not signed with their own key"
        if not rollout_id.startswith(f"{grant.schedule_id}-run-"):
            return f"grant of {grant.approver} is for schedule {grant.schedule_id}, not this run"
        if grant.digest != digest:
            return f"grant of {grant.approver} covers {grant.digest}, not what runs ({digest})"
        if grant.expires_at.replace(tzinfo=grant.expires_at.tzinfo or UTC) <= self._clock():
            return f"grant of {grant.approver} expired at {grant.expires_at}"
        if not verify_statement(grant.statement(), grant.signature, {person.name: person.keys}):
            return f"grant of {grant.approver} does not verify with their keys"
        return None

    # ---- the host gate -----------------------------------------------------------------------

    async def admit(self, step: HostStepInput, *, approval_needed: bool = True) -> None:
        """Raise a non-retryable ApplicationError (type NotApproved) unless this worker's policy
        lets `step` run on its host: the host, with its address, port, user and commands, is
        what this worker's inventory says for the rollout's clusters; the step runs the job's
        own update command and scripts; and (when `approval_needed`) the job holds
        `minApprovals` verified approvals of each cluster's approvers for the digest of what
        this worker would run."""
        if self.policy is None:
            return
        job = step.job
        key = job.model_dump_json(exclude={"slack_channel", "slack_thread_ts", "vault_token"})
        key += f"|{approval_needed}"
        verdict = self._verdicts.get(key)
        if verdict is None or time.monotonic() - verdict.at > VERDICT_SECONDS:
            verdict = await asyncio.to_thread(self._judge, job, approval_needed)
            if len(self._verdicts) > 1000:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        problem = verdict.problem or self._step_problem(step, verdict.targets)
        if not problem and approval_needed:
            problem = await approvals_problem(self._lineages, job)
        if problem:
            raise ApplicationError(
                f"refused to run anything on {step.host.name}: {problem}",
                type="NotApproved",
                non_retryable=True,
            )

    def _step_problem(self, step: HostStepInput, targets: dict[str, HostTarget]) -> str | None:
        own = targets.get(step.host.name)
        if own is None:
            return "the host is not one of the rollout's hosts in this worker's inventory"
        if own != step.host:
            return "the host's address, user or commands differ from this worker's inventory"
        job = step.job
        if step.command not in (None, job.update_command):
            return "the step's command is not the rollout's update command"
        allowed: tuple[list[str], ...] = (
            [],
            job.pre_downtime_scripts,
            job.pre_update_scripts,
            job.post_update_scripts,
        )
        if step.scripts not in allowed:
            return "the step's scripts are not the rollout's scripts"
        return None

    def _judge(self, job: HostJob, approval_needed: bool) -> _Verdict:
        assert self.policy is not None
        try:
            targets = self._targets(job)
        except (InventoryError, TrustError) as error:
            return _Verdict(time.monotonic(), str(error), {})
        hosts = {host.name: host for cluster in targets.values() for host in cluster}
        problem = None
        try:
            self._requested(job, targets, dry_run=not approval_needed)
            if approval_needed:
                self._approved(job, rollout_digest(job, targets))
        except TrustError as refused:
            problem = str(refused)
        return _Verdict(time.monotonic(), problem, hosts)

    def _targets(self, job: HostJob) -> dict[str, list[HostTarget]]:
        return resolve_targets(self._inventory, job.target_clusters, job.host_pattern)

    def _requested(
        self, job: HostJob, targets: dict[str, list[HostTarget]], *, dry_run: bool
    ) -> None:
        assert self.policy is not None
        requester = self._person(job.requester_email, "requester")
        for cluster, hosts in targets.items():
            rule = self.policy.rule_for(cluster)
            if rule is None:
                raise TrustError(f"no policy entry matches cluster {cluster}")
            profile = (
                None
                if dry_run
                else profile_of(dict(rule.update_profiles), job.update_command, None)
            )
            scripts = job.pre_downtime_scripts or job.pre_update_scripts or job.post_update_scripts
            reason = self.policy.may_request(
                requester.name,
                cluster,
                hosts=len(hosts),
                profile=profile,
                custom_update=profile is None or bool(scripts),
                dry_run=dry_run,
            )
            if reason:
                raise TrustError(reason)

    def _approved(self, job: HostJob, digest: str) -> None:
        assert self.policy is not None
        requester = self._person(job.requester_email, "requester")
        approved: set[str] = set()
        problems: list[str] = []
        for approval in job.approvals:
            try:
                approved.add(self._verified(job.rollout_id, "approve", approval, digest).name)
            except TrustError as error:
                problems.append(str(error))
        for grant in job.grants:
            problem = self._grant_problem(grant, job.rollout_id, digest)
            person = self.policy.person_by_email(grant.approver)
            if problem is None and person is not None:
                approved.add(person.name)
            elif problem:
                problems.append(problem)
        for cluster in job.target_clusters:
            rule = self.policy.rule_for(cluster)
            if rule is None:
                raise TrustError(f"no policy entry matches cluster {cluster}")
            valid = sorted((approved & rule.approvers) - {requester.name})
            if len(valid) < rule.min_approvals:
                said = f" ({'; '.join(problems)})" if problems else ""
                raise TrustError(
                    f"{cluster} needs {rule.min_approvals} verified approval(s) of {digest} by "
                    f"its approvers, and has {len(valid)}{': ' + ', '.join(valid) if valid else ''}"
                    f"{said}"
                )

    # ---- activities --------------------------------------------------------------------------

    @activity.defn(name=names.RESOLVE_APPROVAL_POLICY)
    async def resolve_approval_policy(self, request: ApprovalRulesRequest) -> ApprovalRules:
        """See `rules`."""
        return self.rules(request)

    @activity.defn(name=names.VERIFY_DECISION)
    async def verify_decision(self, check: DecisionCheck) -> str:
        """See `check_decision`; a refusal is a non-retryable ApplicationError (type
        DecisionRefused) whose message the update's caller sees."""
        try:
            name = await asyncio.to_thread(self.check_decision, check)
        except TrustError as refused:
            raise ApplicationError(
                str(refused), type="DecisionRefused", non_retryable=True
            ) from None
        if self.policy is not None and check.decision == "approve":  # a reject only stops
            late = await decision_problem(self._lineages, check.approval, check.rollout_id)
            if late:
                raise ApplicationError(late, type="DecisionRefused", non_retryable=True)
        return name

    @activity.defn(name=names.VERIFY_STANDING_GRANTS)
    async def verify_standing_grants(self, check: GrantCheck) -> list[str]:
        """See `check_grants`."""
        return await asyncio.to_thread(self.check_grants, check)

    def all(self) -> list[Callable[..., Any]]:
        return [self.resolve_approval_policy, self.verify_decision, self.verify_standing_grants]
