"""The approval policy in Slack (README "Trust model"): who a Slack user is, what they may start,
see and control.

Under a policy (`SlackBot.policy`) a person is identified by stable ids only: the request's team
id must be the workspace this installation serves (auth.test), the user id must be a person's
`slack:` id in the policy, and Slack's user object must show a member in good standing
(`identity.account_refusal`: not deactivated, not a guest, not another workspace's, e-mail not
unconfirmed). What a person is called in Slack (display name, `@alice` typed as text, the e-mail
in their profile) never names anyone. The e-mail the workflow gets is the policy's.

Without a policy (development, `--no-policy`) everything stays as `identity.Directory` does it.
Every refusal says why, naming the field of the command it concerns.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from bot.policy_edge import (
    Options,
    PolicyRefusal,
    hosts_by_cluster,
    policy_refusal,
    profile_command,
)
from bot.slack.commands import (
    ApproverRef,
    CommandError,
    PatchCommand,
    PatchPlan,
    apply_defaults,
)
from bot.slack.context import SlackBot
from bot.slack.identity import IdentityError, People, account_refusal, mention
from bot.slack.text import mrkdwn
from workflows.models import RolloutInput
from workflows.policy import Person, Policy

# How `/patch` names the fields the policy judges (bot.policy_edge.Options).
SLACK_OPTIONS = Options(
    update="update=",
    profile="profile=",
    scripts="scripts",
    approvers="approvers=",
    requester="requester",
    limit="limit=",
)


def plan_of(bot: SlackBot, command: PatchCommand, channel_id: str | None) -> PatchPlan:
    """`command` with the defaults applied and, with `profile=`, the update command of that
    profile in the policy entry of every target cluster (`bot.policy_edge.profile_command`).
    Pure: runs in the ack. Without a policy the profiles are PatchPilot's OS-family ones
    (`security`, `full`), as on the CLI. Raises CommandError naming the field: `profile=` and
    `update=` together, a profile that does not exist, that the clusters lack or that differs
    between them, and under a policy an approver typed as `@name` or not in the policy."""
    policy = bot.policy
    if command.profile is not None:
        if command.update is not None:
            raise CommandError("profile= and update= both name the update command; give one")
        try:
            update = profile_command(policy, command.clusters, command.profile, SLACK_OPTIONS)
        except PolicyRefusal as error:
            raise CommandError(str(error)) from None
        command = replace(command, update=update)
    if policy is not None and command.approvers is not None:
        for ref in command.approvers:
            approver_person(policy, ref)  # refuses what names no one
    return apply_defaults(command, bot.defaults, channel_id, under_policy=policy is not None)


def approver_person(policy: Policy, ref: ApproverRef) -> Person:
    """The policy person an approver as typed names: a real mention `<@U…>` (or the user id)
    by the policy's `slack:` ids, or one of the policy's e-mails. Raises CommandError for
    `@name` typed as text (anyone can be called "alice" in Slack) and for whom the policy does
    not know."""
    if ref.handle is not None:
        raise CommandError(
            f"approvers=: @{ref.handle} is text, not a Slack mention; under the approval policy "
            "only a person picked from Slack's @-menu (or their policy e-mail) names an approver"
        )
    if ref.user_id is not None:
        person = policy.person_by_slack(ref.user_id)
        if person is None:
            raise CommandError(
                f"approvers=: Slack user {ref.user_id} is not a person of the approval policy"
            )
        return person
    person = policy.person_by_email(ref.email or "")
    if person is None:
        raise CommandError(f"approvers=: {ref.email} is not a person of the approval policy")
    return person


async def verified_person(bot: SlackBot, user_id: str, team_id: str | None) -> Person:
    """The policy person Slack user `user_id` of workspace `team_id` is. Raises IdentityError
    (mrkdwn) saying why not: another workspace, a user id the policy does not list, or an
    account `identity.account_refusal` refuses (users.info)."""
    policy = bot.policy
    assert policy is not None, "only under a policy"
    home = await bot.home_team()
    if team_id != home:
        raise IdentityError(
            f"this PatchPilot serves Slack workspace {mrkdwn(home)} only; a request from "
            f"{mrkdwn(team_id or 'an unknown workspace')} is refused"
        )
    person = policy.person_by_slack(user_id)
    if person is None:
        raise IdentityError(
            f"{mention(user_id)} is not a person of the approval policy (no one there has "
            f"Slack id {mrkdwn(user_id)}); ask whoever keeps PATCHPILOT_POLICY to add you"
        )
    refused = account_refusal(await bot.directory.user(user_id), home)
    if refused:
        raise IdentityError(f"{mention(user_id)} {refused}")
    return person


def how_to_mention(policy: Policy, email: str) -> str:
    """`<@U…>` of the policy person with `email` who has a Slack id, else the e-mail."""
    person = policy.person_by_email(email)
    return f"<@{person.slack}>" if person and person.slack else mrkdwn(email)


async def people(bot: SlackBot, plan: PatchPlan, user_id: str, team_id: str | None) -> People:
    """The requester and approvers of `plan`: by the policy when there is one (the requester
    verified, e-mails the policy's; no approvers named: the policy's approvers of the target
    clusters are asked), else by their Slack e-mails (`Directory.people`). Raises
    IdentityError or CommandError."""
    policy = bot.policy
    if policy is None:
        return await bot.directory.people(user_id, plan.approvers)
    requester = await verified_person(bot, user_id, team_id)
    named = [approver_person(policy, ref) for ref in plan.approvers]
    emails = list(dict.fromkeys(person.email for person in named))
    if not emails:
        asked = set().union(*(policy.approvers_of(c, requester.name) for c in plan.clusters))
        mentions = [how_to_mention(policy, policy.people[name].email) for name in sorted(asked)]
    else:
        mentions = [how_to_mention(policy, email) for email in emails]
    return People(requester=requester.email, approver_emails=emails, mentions=mentions)


async def refusal(bot: SlackBot, rollout: RolloutInput) -> str | None:
    """Why the policy refuses `rollout`, naming the field (`bot.policy_edge.policy_refusal`:
    requester, a free-form `update=` or scripts, maxHosts counted from the inventory, approvers
    outside the cluster's), or None; None also without a policy. Reads the inventory off the
    event loop."""
    policy, inventory = bot.policy, bot.settings.inventory
    if policy is None:
        return None
    if inventory is None:
        return (
            "PATCHPILOT_INVENTORY is not set: under the approval policy the hosts of a rollout "
            "are counted from the inventory (maxHosts) before it starts"
        )
    try:
        hosts = await asyncio.to_thread(hosts_by_cluster, inventory, rollout)
    except PolicyRefusal as error:
        return str(error)
    return policy_refusal(policy, rollout, hosts, SLACK_OPTIONS)


def participants(policy: Policy, request: RolloutInput) -> set[str]:
    """The e-mails of the people who take part in `request`: its requester and its approvers
    (the ones it names, else the policy's approvers of its clusters)."""
    emails = {request.requester_email, *request.approver_emails}
    if not request.approver_emails:
        requester = policy.person_by_email(request.requester_email)
        for cluster in request.target_clusters:
            names = policy.approvers_of(cluster, requester.name if requester else None)
            emails |= {policy.people[name].email for name in names}
    return emails


def visible(policy: Policy, person: Person, channel_id: str, request: RolloutInput) -> bool:
    """Whether `person`, asking in `channel_id`, may see rollout `request`: it was started in
    that channel, or they take part in it."""
    return request.slack_channel == channel_id or person.email in participants(policy, request)


def control_refusal(policy: Policy, person: Person, request: RolloutInput, what: str) -> str | None:
    """Why `person` may not `what` (cancel, pause, …) rollout `request`, or None: only its
    requester, its clusters' approvers and the policy's operators may (`Policy.may_control`,
    for every target cluster)."""
    requester = policy.person_by_email(request.requester_email)
    requester_name = requester.name if requester else ""
    for cluster in request.target_clusters:
        if not policy.may_control(person.name, cluster, requester_name):
            return (
                f"{person.name} may not {what} this rollout: only its requester, the approvers "
                f"of {cluster} and the policy's operators may"
            )
    return None


async def visible_requests(
    bot: SlackBot, ids: list[str], person: Person, channel_id: str
) -> dict[str, RolloutInput]:
    """The requests of the rollouts `ids` that `person` may see in `channel_id`, in order; a
    rollout whose request cannot be read is left out. Reads at most 10 at once."""
    policy = bot.policy
    assert policy is not None
    gate = asyncio.Semaphore(10)

    async def read(rollout_id: str) -> Any:
        async with gate:
            try:
                return await bot.rollouts.request(rollout_id)
            except Exception:  # a rollout that cannot be read is not shown
                return None

    found = await asyncio.gather(*(read(one) for one in ids))
    return {
        one: request
        for one, request in zip(ids, found, strict=True)
        if request is not None and visible(policy, person, channel_id, request)
    }
