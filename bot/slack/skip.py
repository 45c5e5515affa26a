"""Skipping a pending host from the rollout's card: the "Skip a host…" menu, or its modal.

The card offers the hosts not yet started (the only ones the `skip` update accepts) in one
static_select when they fit Block Kit's limits (at most 100 options, each value at most 150
characters: https://api.slack.com/reference/block-kit/block-elements#static_select); for more,
a "Skip a host…" button opens a small modal (views.open) asking for the host and why. Either way
the choice becomes `/patch skip <id> <host> [why]` for the person who chose (bot.slack.control),
answered ephemerally in the card's thread. A select has no value of its own, so the rollout id
rides in the control block's id; the modal keeps it, with the thread, in `private_metadata`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import (
    ButtonElement,
    ConfirmObject,
    InputBlock,
    Option,
    PlainTextInputElement,
    StaticSelectElement,
)
from slack_sdk.models.views import View

from workflows.models import HostState, RolloutProgress

SKIP_ACTION = "patchpilot_skip"  # the menu of pending hosts
SKIP_OPEN_ACTION = "patchpilot_skip_open"  # the button that opens the modal instead
SKIP_CALLBACK = "patchpilot_skip_modal"  # the modal's callback_id
HOST, REASON = "host", "reason"  # the modal's inputs (block_id = action_id)
CONTROL_BLOCK = "patchpilot_controls"
# Block Kit's static_select: at most 100 options, option text 75 characters, value 150
# (https://api.slack.com/reference/block-kit/composition-objects#option).
MAX_OPTIONS = 100
OPTION_TEXT = 75
OPTION_VALUE = 150
REASON_CHARS = 500  # what RolloutControl.reason takes


def control_block_id(rollout_id: str) -> str:
    """The card's control block: `patchpilot_controls:<rollout id>` (at most 255 characters, as
    Block Kit allows, since a rollout id has at most 200)."""
    return f"{CONTROL_BLOCK}:{rollout_id}"


def rollout_of_block(block_id: str) -> str:
    """The rollout id in a control block's id ("" when it is not one)."""
    prefix, _, rollout_id = block_id.partition(":")
    return rollout_id if prefix == CONTROL_BLOCK else ""


def _label(text: str) -> str:
    return text if len(text) <= OPTION_TEXT else text[: OPTION_TEXT - 1] + "…"


def skip_element(rollout_id: str, progress: RolloutProgress) -> Any | None:
    """The card's skip control: a static_select of the pending hosts (with the cluster when the
    rollout has several), the modal's button when they do not fit one, None when none is pending."""
    pending = [host for host in progress.hosts() if host.state == HostState.PENDING]
    if not pending:
        return None
    if len(pending) > MAX_OPTIONS or any(len(host.name) > OPTION_VALUE for host in pending):
        return ButtonElement(text="Skip a host…", action_id=SKIP_OPEN_ACTION, value=rollout_id)
    several = len(progress.clusters) > 1
    return StaticSelectElement(
        action_id=SKIP_ACTION,
        placeholder="Skip a host…",
        options=[
            Option(
                text=_label(f"{host.name} ({host.cluster})" if several else host.name),
                value=host.name,
            )
            for host in pending
        ],
        confirm=ConfirmObject(
            title="Skip this host?",
            text="This rollout will never touch it; the summary lists it as skipped, with your "
            "name.",
            confirm="Skip it",
            deny="Keep it",
        ),
    )


@dataclass(frozen=True)
class SkipChoice:
    """A host chosen to be skipped: in the card's menu, or typed into the modal."""

    rollout_id: str
    host: str
    reason: str
    channel_id: str
    thread_ts: str  # the card's thread, where the answer goes


def chosen(body: dict[str, Any]) -> SkipChoice:
    """A block_actions body of the card's menu (https://api.slack.com/reference/interaction-payloads/block-actions):
    the rollout from the block id, the host from the selected option; "" for what is missing."""
    action = (body.get("actions") or [{}])[0]
    container = body.get("container") or {}
    message = body.get("message") or {}
    return SkipChoice(
        rollout_id=rollout_of_block(str(action.get("block_id") or "")),
        host=str((action.get("selected_option") or {}).get("value") or ""),
        reason="",
        channel_id=str((body.get("channel") or {}).get("id") or container.get("channel_id") or ""),
        thread_ts=str(
            container.get("thread_ts")
            or message.get("thread_ts")
            or container.get("message_ts")
            or message.get("ts")
            or ""
        ),
    )


def skip_view(rollout_id: str, channel_id: str, thread_ts: str) -> dict[str, Any]:
    """The modal the "Skip a host…" button opens, as views.open takes it."""
    view = View(
        type="modal",
        callback_id=SKIP_CALLBACK,
        private_metadata=json.dumps(
            {"rollout": rollout_id, "channel": channel_id, "thread": thread_ts}
        ),
        title="Skip a host",
        submit="Skip it",
        close="Cancel",
        blocks=[
            InputBlock(
                block_id=HOST,
                label="Host (not started yet)",
                element=PlainTextInputElement(action_id=HOST, placeholder="web-0042"),
            ),
            InputBlock(
                block_id=REASON,
                label="Why",
                optional=True,
                element=PlainTextInputElement(
                    action_id=REASON, max_length=REASON_CHARS, placeholder="disk replacement"
                ),
            ),
        ],
    )
    return view.to_dict()


def submitted(view: dict[str, Any]) -> SkipChoice:
    """The skip modal's view_submission `view` as the choice it stands for (typed text arrives
    as typed: Slack escapes only message text); "" for what is missing."""
    try:
        meta = json.loads(view.get("private_metadata") or "{}")
    except json.JSONDecodeError:
        meta = {}
    values = (view.get("state") or {}).get("values") or {}

    def typed(block: str) -> str:
        return str(((values.get(block) or {}).get(block) or {}).get("value") or "").strip()

    return SkipChoice(
        rollout_id=str(meta.get("rollout") or ""),
        host=typed(HOST),
        reason=typed(REASON),
        channel_id=str(meta.get("channel") or ""),
        thread_ts=str(meta.get("thread") or ""),
    )
