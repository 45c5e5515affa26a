"""SlackBot: what every listener and handler shares, and the work it runs after an ack.

Slack wants every command and button click acknowledged within 3 seconds
(https://api.slack.com/interactivity/handling#acknowledgment_response). Listeners therefore ack
first and hand anything slow (Slack's users.* methods, Temporal) to `SlackBot.after_ack` /
`SlackBot.spawn`, which run it in the background and keep it until it has finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import Client

from activities.inventory import limit_refusal, load_inventory
from activities.policy import load_policy
from bot.rollouts import Rollouts
from bot.settings import Settings
from bot.slack.commands import USAGE, CommandError
from bot.slack.config import SlackDefaults
from bot.slack.identity import Directory, IdentityError
from bot.slack.text import mrkdwn
from workflows.policy import Policy

log = logging.getLogger("patchpilot.slack")

# Bolt's `respond` (posts to the command's response_url) and `ack`; both take Slack's message
# arguments as keywords (text=, blocks=, response_type="ephemeral" | "in_channel").
Respond = Callable[..., Awaitable[Any]]
Ack = Callable[..., Awaitable[Any]]


def error_mrkdwn(error: Exception) -> str:
    """An error's message for a mrkdwn text: escaped once, except IdentityError's, which is
    written in mrkdwn (mentions of pattern-checked user ids) by construction."""
    return str(error) if isinstance(error, IdentityError) else mrkdwn(str(error))


def problem_reply(error: Exception) -> str:
    """The ephemeral answer to a `/patch` the bot cannot act on: the problem, then the usage; both
    may quote what the user typed, so both are escaped once for mrkdwn."""
    return f":warning: {error_mrkdwn(error)}\n\n{mrkdwn(USAGE)}"


@dataclass
class SlackBot:
    """The listeners' dependencies; `bot.slack.app.build_app` wires them into an AsyncApp.

    `rollouts` (the client facade on `temporal` and the settings' task queue) is the only way the
    Slack code starts, decides, cancels or reads rollouts; `temporal` itself serves schedules.
    """

    settings: Settings
    temporal: Client
    client: AsyncWebClient
    defaults: SlackDefaults = field(default_factory=SlackDefaults)
    # Background work started after an ack; kept so it is not garbage-collected mid-flight.
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # The workspace this installation serves (from auth.test); requests from others are refused.
    team_id: str | None = None
    rollouts: Rollouts = field(init=False)
    directory: Directory = field(init=False)
    # The approval policy (PATCHPILOT_POLICY, README "Trust model"); None: development mode,
    # people are who their Slack e-mail says (bot.slack.trust has the rules under a policy).
    policy: Policy | None = field(init=False)

    def __post_init__(self) -> None:
        self.rollouts = Rollouts(self.temporal, self.settings.task_queue)
        self.directory = Directory(self.client)
        # Raises PolicyError naming the key when the file is not a valid policy.
        self.policy = load_policy(self.settings.policy) if self.settings.policy else None

    async def home_team(self) -> str:
        """The id of the workspace this installation serves: auth.test's `team_id`
        (https://api.slack.com/methods/auth.test), asked once. Raises SlackApiError."""
        if self.team_id is None:
            identity = await self.client.auth_test()
            self.team_id = str(identity.get("team_id") or "")
        return self.team_id

    def foreign_team(self, team_id: str | None) -> str | None:
        """Why a request from workspace `team_id` is refused, or None when it is ours (or when
        auth.test has not said which workspace is ours)."""
        if self.team_id is None or team_id == self.team_id:
            return None
        return (
            f"this PatchPilot serves Slack workspace {self.team_id} only; a request from "
            f"{team_id or 'an unknown workspace'} is refused"
        )

    def known_clusters(self) -> set[str] | None:
        """The inventory's cluster names, or None when no inventory is configured.

        Runs before the ack: Ansible reads the inventory again only when a source changed
        (`activities.inventory.load_inventory` keeps it). Raises InventoryError with Ansible's
        message when a source cannot be read.
        """
        source = self.settings.inventory
        if source is None:
            return None
        return set(load_inventory(source))

    def limit_refusal(self, clusters: list[str], limit: str) -> str | None:
        """Why `limit=` cannot start a rollout of `clusters` ("limit=web0 selects no host of
        cluster-a in the inventory (Ansible: …)"), or None when it selects a host of each or no
        inventory is configured (the worker then judges). Reads the inventory through Ansible
        (about half a second for a new pattern): call it off the event loop. Raises InventoryError.
        """
        source = self.settings.inventory
        if source is None:
            return None
        refused = limit_refusal(source, clusters, limit)
        return None if refused is None else f"limit={limit} {refused}; nothing was started"

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run `work` in the background; a failure is logged, never raised to the listener."""

        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def after_ack(self, respond: Respond, work: Awaitable[None]) -> None:
        """Spawn the slow part of a `/patch` command; what goes wrong is told to the user who
        typed it, ephemerally, not only logged."""
        self.spawn(self._guard(respond, work))

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait up to `timeout` seconds for acknowledged work (a rollout being started, a
        decision) to finish, so that stopping the bot does not drop what a user was told."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Slack background work failed", exc_info=task.exception())

    async def _guard(self, respond: Respond, work: Awaitable[None]) -> None:
        try:
            await work
        except (CommandError, IdentityError) as error:
            await respond(text=problem_reply(error), response_type="ephemeral")
        except Exception as error:
            log.exception("/patch failed after the ack")
            await respond(
                text=f":x: PatchPilot could not do that: {error_mrkdwn(error)}",
                response_type="ephemeral",
            )
