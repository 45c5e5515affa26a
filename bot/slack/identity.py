"""Who a Slack user is: their e-mail address, a handle's user id, and how to mention someone.

Everything here calls Slack's Web API, so it runs after the ack, never in a listener before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.client import slack_error
from bot.slack.commands import USER_ID, ApproverRef
from bot.slack.text import mrkdwn

# users.list pages of this many members, at most this many pages (a 10,000-member workspace).
MEMBERS_PER_PAGE = 200
MAX_MEMBER_PAGES = 50


def mention(user_id: str) -> str:
    """`<@U…>` for a well-formed user id, else the id escaped: IdentityError texts are mrkdwn."""
    return f"<@{user_id}>" if USER_ID.fullmatch(user_id) else mrkdwn(user_id or "(no user id)")


def account_refusal(user: dict[str, Any], home_team: str) -> str | None:
    """Why Slack user object `user` (users.info) may not act under the approval policy, or
    None: deactivated, a bot, a guest (`is_restricted`: multi-channel, `is_ultra_restricted`:
    single-channel), a member of another workspace (`team_id` not `home_team`, or
    `is_stranger`), or an e-mail Slack says is not confirmed (`is_email_confirmed` false; when
    Slack leaves the field out, nothing is concluded from it)."""
    if user.get("deleted"):
        return "is deactivated in Slack"
    if user.get("is_bot") or user.get("is_app_user"):
        return "is a bot or app user, not a person"
    if user.get("is_ultra_restricted"):
        return "is a single-channel guest; guests may not start, approve or control rollouts"
    if user.get("is_restricted"):
        return "is a multi-channel guest; guests may not start, approve or control rollouts"
    team = str(user.get("team_id") or "")
    if user.get("is_stranger") or (team and team != home_team):
        return (
            f"is a member of another workspace ({mrkdwn(team or 'unknown')}); this PatchPilot "
            f"serves {mrkdwn(home_team)} only"
        )
    if user.get("is_email_confirmed") is False:
        return "has not confirmed their e-mail address in Slack"
    return None


class IdentityError(Exception):
    """A Slack user whose e-mail cannot be read; the message says what to do, in mrkdwn (it
    mentions users as `<@U…>`; anything else in it is pattern-checked or escaped)."""


@dataclass(frozen=True)
class People:
    """The people of one request: e-mails lower-cased, approvers without repeats, in given order.

    `mentions` is how each approver is named in the channel: `<@U…>`, or the e-mail address of an
    approver who is not a member of the workspace (they are told by e-mail).
    """

    requester: str
    approver_emails: list[str]
    mentions: list[str]


class Directory:
    """Slack's users.* methods, read with the bot token of `client`."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def user(self, user_id: str) -> dict[str, Any]:
        """Slack's user object of `user_id` (https://api.slack.com/types/user); raises
        IdentityError when Slack does not know the user."""
        try:
            response = await self.client.users_info(user=user_id)
        except SlackApiError as error:
            raise IdentityError(
                f"cannot look up {mention(user_id)} in Slack ({slack_error(error)})"
            ) from None
        return dict(response.get("user") or {})

    async def email_of(self, user_id: str) -> str:
        """The lower-cased e-mail address of user `user_id` (e.g. "U0123ABCD").

        Raises IdentityError when Slack does not know the user or shows no e-mail: users.info
        includes `profile.email` only with the users:read.email scope
        (https://api.slack.com/methods/users.info).
        """
        try:
            response = await self.client.users_info(user=user_id)
        except SlackApiError as error:
            raise IdentityError(
                f"cannot look up <@{user_id}> in Slack ({slack_error(error)})"
            ) from None
        user = response.get("user") or {}
        email = (user.get("profile") or {}).get("email")
        if not email:
            raise IdentityError(
                f"<@{user_id}> has no e-mail address visible to PatchPilot (the app needs the "
                "users:read.email scope, and the profile an e-mail)"
            )
        return str(email).lower()

    async def user_id_by_handle(self, handle: str) -> str:
        """The user id of the member whose username or display name is `handle` (no "@").

        Walks users.list with cursor pagination (https://api.slack.com/apis/pagination); deleted
        members do not count. Raises IdentityError when no member has that name.
        """
        cursor: str | None = None
        wanted = handle.lower()
        for _page in range(MAX_MEMBER_PAGES):
            response = await self.client.users_list(cursor=cursor, limit=MEMBERS_PER_PAGE)
            for member in response.get("members") or []:
                profile = member.get("profile") or {}
                names = {
                    str(member.get("name", "")).lower(),
                    str(profile.get("display_name", "")).lower(),
                }
                if wanted in names and not member.get("deleted"):
                    return str(member["id"])
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor:
                break
        raise IdentityError(
            f"no Slack user @{handle}: pick them from the @-mention menu, or give an e-mail"
        )

    async def mention_by_email(self, email: str) -> str:
        """`<@U…>` for the workspace member with this e-mail (users.lookupByEmail), else the
        e-mail itself; never raises for an unknown address."""
        try:
            response = await self.client.users_lookupByEmail(email=email)
        except SlackApiError:
            return mrkdwn(email)  # users_not_found: an approver outside Slack, told by e-mail
        user_id = (response.get("user") or {}).get("id")
        return f"<@{user_id}>" if user_id else mrkdwn(email)

    async def resolve(self, ref: ApproverRef) -> tuple[str, str]:
        """(e-mail, how to mention them in Slack) of an approver as typed; raises IdentityError."""
        if ref.email:
            return ref.email, await self.mention_by_email(ref.email)
        user_id = ref.user_id or await self.user_id_by_handle(ref.handle or "")
        return await self.email_of(user_id), f"<@{user_id}>"

    async def people(self, requester_id: str, approvers: Sequence[ApproverRef]) -> People:
        """The requester's e-mail and the approvers' e-mails and mentions, looked up one after
        another in the order given; raises IdentityError for the first one that cannot be read."""
        requester = await self.email_of(requester_id)
        resolved = [await self.resolve(ref) for ref in approvers]
        return People(
            requester=requester,
            approver_emails=list(dict.fromkeys(email for email, _ in resolved)),
            mentions=list(dict.fromkeys(mention for _, mention in resolved)),
        )
