"""A local stand-in for Slack: the Web API and Socket Mode side the bot talks to (``server``),
and the signed requests Slack sends to a bot in HTTP mode (``payloads``)."""

from lab.slack_standin.payloads import (
    block_action_body,
    block_action_payload,
    signed_headers,
    slash_command_body,
    slash_command_fields,
    view_submission_body,
    view_submission_payload,
)
from lab.slack_standin.server import BOT_USER_ID, TEAM_ID, Call, Failure, SlackStandIn, User

__all__ = [
    "BOT_USER_ID",
    "TEAM_ID",
    "Call",
    "Failure",
    "SlackStandIn",
    "User",
    "block_action_body",
    "block_action_payload",
    "signed_headers",
    "slash_command_body",
    "slash_command_fields",
    "view_submission_body",
    "view_submission_payload",
]
