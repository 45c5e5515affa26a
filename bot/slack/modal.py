"""`/patch` without arguments: a modal to start a rollout (https://api.slack.com/surfaces/modals).

The modal asks for what the command line takes (clusters from the inventory, pilot count,
services, update command, approvers); its submission goes through the same parser rules,
defaults and checks as `/patch <cluster> …` and is refused field by field with
`response_action: errors` (https://api.slack.com/surfaces/modals#displaying_errors). Text typed
into a modal's inputs arrives as typed: Slack escapes only message text, not view state values.
"""

from __future__ import annotations

import json
from typing import Any

from slack_sdk.models.blocks import (
    InputBlock,
    Option,
    PlainTextInputElement,
    StaticMultiSelectElement,
    StaticSelectElement,
    UserMultiSelectElement,
)
from slack_sdk.models.views import View

from bot.slack import commands
from bot.slack.commands import ApproverRef, CommandError, PatchCommand, PatchPlan
from bot.slack.context import SlackBot
from bot.slack.trust import plan_of as trusted_plan

CALLBACK_ID = "patchpilot_start"
# One input block per field; an error is shown under the block of the field it names.
CLUSTERS, PILOT, SERVICES, UPDATE, APPROVERS, PROFILE = (
    "clusters",
    "pilot",
    "services",
    "update",
    "approvers",
    "profile",
)
# Words in a refusal that name its field (the parser's and RolloutInput's own words).
FIELD_WORDS = (
    (PROFILE, ("profile",)),
    (PILOT, ("pilot",)),
    (SERVICES, ("service",)),
    (UPDATE, ("update",)),
    (APPROVERS, ("approver", "requester", "e-mail", "<@")),
    (CLUSTERS, ("cluster",)),
)
MAX_OPTIONS = 100  # a static select's options (Block Kit limit)


def profiles(bot: SlackBot) -> list[str]:
    """The update profiles of the bot's approval policy, by name (every cluster entry's)."""
    if bot.policy is None:
        return []
    return sorted({name for rule in bot.policy.clusters for name in rule.update_profiles})


def start_view(
    channel_id: str, clusters: list[str] | None, update_profiles: list[str] | None = None
) -> dict[str, Any]:
    """The modal as views.open takes it; `clusters` None (no inventory) asks for names as text;
    `update_profiles` (the policy's) are offered in a menu before the free-form command."""
    profile_blocks = []
    if update_profiles:
        profile_blocks.append(
            InputBlock(
                block_id=PROFILE,
                label="Update profile (approval policy)",
                optional=True,
                element=StaticSelectElement(
                    action_id=PROFILE,
                    options=[
                        Option(text=name[:75], value=name) for name in update_profiles[:MAX_OPTIONS]
                    ],
                ),
            )
        )
    if clusters:
        options = [Option(text=name[:75], value=name) for name in sorted(clusters)[:MAX_OPTIONS]]
        cluster_input: Any = StaticMultiSelectElement(action_id=CLUSTERS, options=options)
    else:
        cluster_input = PlainTextInputElement(action_id=CLUSTERS, placeholder="cluster-a cluster-b")
    view = View(
        type="modal",
        callback_id=CALLBACK_ID,
        private_metadata=json.dumps({"channel": channel_id}),
        title="Patch rollout",
        submit="Ask approvers",
        close="Cancel",
        blocks=[
            InputBlock(block_id=CLUSTERS, label="Clusters", element=cluster_input),
            InputBlock(
                block_id=PILOT,
                label="Pilot hosts per cluster",
                optional=True,
                element=PlainTextInputElement(action_id=PILOT, placeholder="1"),
            ),
            InputBlock(
                block_id=SERVICES,
                label="Services to stop and start",
                optional=True,
                element=PlainTextInputElement(action_id=SERVICES, placeholder="nginx,postgresql"),
            ),
            *profile_blocks,
            InputBlock(
                block_id=UPDATE,
                label="Update command",
                optional=True,
                element=PlainTextInputElement(
                    action_id=UPDATE, placeholder="apt-get update && apt-get -y upgrade"
                ),
            ),
            InputBlock(
                block_id=APPROVERS,
                label="Approvers",
                optional=True,
                element=UserMultiSelectElement(action_id=APPROVERS),
            ),
        ],
    )
    return view.to_dict()


def _value(values: dict[str, Any], block: str) -> Any:
    """The submitted state of `block`'s one input (its value, options or users)."""
    state = (values.get(block) or {}).get(block) or {}
    if state.get("type") == "multi_static_select":
        return [option["value"] for option in state.get("selected_options") or []]
    if state.get("type") == "multi_users_select":
        return list(state.get("selected_users") or [])
    if state.get("type") == "static_select":
        return (state.get("selected_option") or {}).get("value")
    return state.get("value")


def submitted_command(values: dict[str, Any]) -> PatchCommand:
    """A view_submission's `view.state.values` as the command it stands for; raises CommandError
    naming the field."""
    clusters = _value(values, CLUSTERS)
    if isinstance(clusters, str):
        clusters = clusters.replace(",", " ").split()
    pilot = (_value(values, PILOT) or "").strip()
    services = _value(values, SERVICES)
    users = _value(values, APPROVERS) or []
    return PatchCommand(
        clusters=list(clusters or []),
        pilot=commands.parse_pilot(pilot) if pilot else None,
        services=None if services is None else commands.split_list(services),
        update=_value(values, UPDATE) or None,
        approvers=[ApproverRef(user_id=user) for user in users] or None,
        profile=_value(values, PROFILE) or None,
    )


def plan_of(
    values: dict[str, Any],
    bot: SlackBot,
    channel_id: str,
    known_clusters: set[str] | None,
) -> PatchPlan:
    """The submission through the command line's own rules: parsed, defaults (and the policy's
    profile) applied, checked against the inventory and RolloutInput. Raises CommandError."""
    command = submitted_command(values)
    if not command.clusters:
        raise CommandError("clusters: pick at least one cluster")
    plan = trusted_plan(bot, command, channel_id)
    commands.precheck(plan, known_clusters)
    return plan


def field_errors(error: Exception) -> dict[str, str]:
    """`response_action: errors` for a refusal: its text under the field it names (the clusters
    when it names none); Slack shows plain text there, so nothing is escaped."""
    message = str(error)
    lowered = message.lower()
    for block, words in FIELD_WORDS:
        if any(word in lowered for word in words):
            return {block: message[:3000]}
    return {CLUSTERS: message[:3000]}


def channel_of(view: dict[str, Any]) -> str:
    """The channel the modal was opened from (its private_metadata)."""
    try:
        return str(json.loads(view.get("private_metadata") or "{}").get("channel") or "")
    except json.JSONDecodeError:
        return ""
