"""The Bolt AsyncApp: `/patch`, the Approve / Reject buttons, and the HTTP / Socket Mode runners.

Every listener acks first (Slack wants an answer within 3 s); anything slow (users.info, Temporal)
runs after the ack. What can be checked without Slack or Temporal (the command's syntax, the
clusters against the inventory, the service names and update command through RolloutInput) is
checked before the ack, so a malformed `/patch` is answered in the ack itself, ephemerally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.inventory import InventoryError, load_inventory
from bot.progress import query_progress
from bot.settings import Settings
from bot.slack import blocks
from bot.slack.commands import (
    USAGE,
    ApproverRef,
    CancelCommand,
    CommandError,
    HelpCommand,
    ListCommand,
    PatchCommand,
    PatchPlan,
    ScheduleCommand,
    StatusCommand,
    apply_defaults,
    parse_command,
    precheck,
    rollout_input,
)
from bot.slack.config import SlackDefaults, load_defaults
from bot.slack.notifier import slack_error, web_client
from workflows.host_patch import failure_reason
from workflows.models import WORKFLOW_NAME, ApprovalDecision, RolloutInput, RolloutProgress

log = logging.getLogger("patchpilot.slack")

Respond = Callable[..., Awaitable[Any]]
Ack = Callable[..., Awaitable[Any]]


def new_rollout_id(clusters: list[str]) -> str:
    """Like the CLI's ids, with more randomness: a busy channel may start many per second."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"patch-{'-'.join(clusters)[:40]}-{stamp}-{secrets.token_hex(4)}"


class IdentityError(Exception):
    """A Slack user whose e-mail cannot be read; the message says what to do."""


@dataclass
class SlackBot:
    """The listeners' dependencies; `build_app` wires them into an AsyncApp."""

    settings: Settings
    temporal: Client
    client: AsyncWebClient
    defaults: SlackDefaults = field(default_factory=SlackDefaults)
    # Background work started after an ack; kept so it is not garbage-collected mid-flight.
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # The workspace this installation serves (from auth.test); requests from others are refused.
    team_id: str | None = None
    _clusters: tuple[tuple[str, int, int], frozenset[str]] | None = None

    def foreign_team(self, team_id: str | None) -> str | None:
        """Why a request from `team_id` is refused, or None when it is ours."""
        if self.team_id is None or team_id == self.team_id:
            return None
        return (
            f"this PatchPilot serves Slack workspace {self.team_id} only; a request from "
            f"{team_id or 'an unknown workspace'} is refused"
        )

    # ---- identities -------------------------------------------------------------------------

    async def email_of(self, user_id: str) -> str:
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
        cursor: str | None = None
        wanted = handle.lower()
        for _page in range(50):
            response = await self.client.users_list(cursor=cursor, limit=200)
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
        """`<@U…>` for a workspace member with this e-mail, else the e-mail itself."""
        try:
            response = await self.client.users_lookupByEmail(email=email)
        except SlackApiError:
            return email  # users_not_found: an approver outside Slack, told by e-mail
        user_id = (response.get("user") or {}).get("id")
        return f"<@{user_id}>" if user_id else email

    async def resolve(self, ref: ApproverRef) -> tuple[str, str]:
        """(e-mail, how to mention them in Slack)."""
        if ref.email:
            return ref.email, await self.mention_by_email(ref.email)
        user_id = ref.user_id or await self.user_id_by_handle(ref.handle or "")
        return await self.email_of(user_id), f"<@{user_id}>"

    # ---- /patch -----------------------------------------------------------------------------

    def known_clusters(self) -> set[str] | None:
        """The inventory's clusters, re-read only when the file changes (runs before the ack)."""
        path = self.settings.inventory
        if path is None:
            return None
        try:
            stat = path.stat()
        except OSError as error:
            raise InventoryError(f"cannot read inventory {path}: {error.strerror}") from None
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        if self._clusters is None or self._clusters[0] != key:
            self._clusters = (key, frozenset(load_inventory(path)))
        return set(self._clusters[1])

    def spawn(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            await work

        task = asyncio.get_running_loop().create_task(run())
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Slack background work failed", exc_info=task.exception())

    async def on_patch(self, ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        refused = self.foreign_team(body.get("team_id"))
        if refused:
            await ack(text=f":no_entry: {refused}", response_type="ephemeral")
            return
        text = str(body.get("text") or "")
        user_id = str(body.get("user_id") or "")
        channel_id = str(body.get("channel_id") or "")
        try:
            command = parse_command(text)
            if isinstance(command, PatchCommand):
                plan = apply_defaults(command, self.defaults, channel_id)
                precheck(plan, self.known_clusters())
        except (CommandError, InventoryError) as error:
            await ack(text=f":warning: {error}\n\n{USAGE}", response_type="ephemeral")
            return
        if isinstance(command, HelpCommand):
            await ack(text=USAGE, response_type="ephemeral")
            return
        await ack()
        if isinstance(command, PatchCommand):
            self.spawn(self._guard(respond, self.start_rollout(plan, user_id, channel_id, respond)))
        elif isinstance(command, StatusCommand):
            self.spawn(self._guard(respond, self.status(command.rollout_id, respond)))
        elif isinstance(command, ListCommand):
            self.spawn(self._guard(respond, self.list_rollouts(respond)))
        elif isinstance(command, CancelCommand):
            self.spawn(self._guard(respond, self.cancel(command.rollout_id, user_id, respond)))
        elif isinstance(command, ScheduleCommand):
            self.spawn(self._guard(respond, self.schedule(command, user_id, channel_id, respond)))

    async def _guard(self, respond: Respond, work: Awaitable[None]) -> None:
        """Tell the user, not just the log, when something after the ack goes wrong."""
        try:
            await work
        except (CommandError, IdentityError) as error:
            await respond(text=f":warning: {error}\n\n{USAGE}", response_type="ephemeral")
        except Exception as error:
            log.exception("/patch failed after the ack")
            await respond(
                text=f":x: PatchPilot could not do that: {error}", response_type="ephemeral"
            )

    async def start_rollout(
        self, plan: PatchPlan, user_id: str, channel_id: str, respond: Respond
    ) -> None:
        requester = await self.email_of(user_id)
        resolved = [await self.resolve(ref) for ref in plan.approvers]
        emails = list(dict.fromkeys(email for email, _ in resolved))
        mentions = list(dict.fromkeys(mention for _, mention in resolved))
        rollout = rollout_input(plan, requester, emails, slack_channel=channel_id)
        rollout_id = new_rollout_id(rollout.target_clusters)
        link = self.settings.ui_link(rollout_id)
        card = blocks.CardInfo.from_input(rollout_id, rollout, link)
        try:
            posted = await self.client.chat_postMessage(
                channel=channel_id,
                text=blocks.card_text(card),
                blocks=blocks.as_dicts(blocks.status_card(card)),
            )
        except SlackApiError as error:
            code = slack_error(error)
            hint = (
                " — invite the bot first: `/invite @PatchPilot`"
                if code in ("not_in_channel", "channel_not_found")
                else ""
            )
            await respond(
                text=f":x: cannot post the rollout in this channel ({code}){hint}. Nothing was "
                "started.",
                response_type="ephemeral",
            )
            return
        thread_ts = str(posted["ts"])
        rollout = rollout_input(
            plan, requester, emails, slack_channel=channel_id, slack_thread_ts=thread_ts
        )
        try:
            await self.temporal.start_workflow(
                WORKFLOW_NAME, rollout, id=rollout_id, task_queue=self.settings.task_queue
            )
        except Exception as error:
            note = f":x: the rollout could not be started: {error}"
            await self.client.chat_update(
                channel=channel_id,
                ts=thread_ts,
                text=note,
                blocks=blocks.as_dicts(
                    blocks.status_card(blocks.CardInfo.from_input(rollout_id, rollout, note=note))
                ),
            )
            raise
        if rollout.dry_run:
            return  # no approval: the thread gets the per-host table when the dry run ends
        try:
            await self.client.chat_postMessage(
                channel=channel_id,
                thread_ts=thread_ts,
                text=f"Approval needed for rollout {rollout_id}: {' '.join(mentions)}",
                blocks=blocks.as_dicts(
                    blocks.approval_request(rollout_id, f"<@{user_id}>", mentions, plan.clusters)
                ),
            )
        except SlackApiError as error:
            await respond(
                text=f":warning: rollout `{rollout_id}` started, but its Approve / Reject buttons "
                f"could not be posted ({slack_error(error)}). Approvers can use "
                f"`patchpilot approve {rollout_id} --as <e-mail>`.",
                response_type="ephemeral",
            )

    # ---- schedules --------------------------------------------------------------------------

    async def schedule(
        self, command: ScheduleCommand, user_id: str, channel_id: str, respond: Respond
    ) -> None:
        from bot import schedules

        if command.action == "list":
            rows = await schedules.list_rows(self.temporal)
            lines = [
                f"• `{row.schedule_id}` `{row.cron}` ({row.timezone}), "
                f"{'paused' if row.paused else 'active'}"
                + (f", next {row.next_runs[0]:%a %Y-%m-%d %H:%M} UTC" if row.next_runs else "")
                for row in rows
            ]
            await respond(text="\n".join(lines) or "No schedules.", response_type="ephemeral")
            return
        schedule_id = str(command.schedule_id)
        if command.action == "create":
            assert command.patch is not None and command.cron is not None
            plan = apply_defaults(command.patch, self.defaults, channel_id)
            precheck(plan, self.known_clusters())
            try:
                schedules.check_cron(command.cron, command.timezone)
            except ValueError as error:
                raise CommandError(str(error)) from None
            requester = await self.email_of(user_id)
            resolved = [await self.resolve(ref) for ref in plan.approvers]
            emails = list(dict.fromkeys(email for email, _ in resolved))
            rollout = rollout_input(plan, requester, emails)
            try:
                await schedules.create(
                    self.temporal,
                    schedule_id,
                    rollout,
                    cron=command.cron,
                    timezone=command.timezone,
                    task_queue=self.settings.task_queue,
                    note=f"created in Slack by {requester}",
                )
            except RPCError as error:
                raise CommandError(
                    f"cannot create schedule {schedule_id}: {error.message}"
                ) from None
            await respond(
                text=f":calendar: <@{user_id}> created schedule `{schedule_id}`: "
                f"`{command.cron}` ({command.timezone}) patches {', '.join(plan.clusters)}; "
                "every run asks its approvers.",
                response_type="in_channel",
            )
            return
        email = await self.email_of(user_id)
        handle = self.temporal.get_schedule_handle(schedule_id)
        try:
            description = await handle.describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise CommandError(f"no schedule with id {schedule_id}") from None
            raise
        action = description.schedule.action
        stored = await self.temporal.data_converter.decode(
            list(getattr(action, "args", [])), [RolloutInput]
        )
        allowed: set[str] = set()
        if stored and isinstance(stored[0], RolloutInput):
            allowed = {stored[0].requester_email, *stored[0].approver_emails}
        if email not in allowed:
            await respond(
                text=f":no_entry: only the schedule's requester or approvers may "
                f"{command.action} `{schedule_id}`",
                response_type="ephemeral",
            )
            return
        if command.action == "pause":
            await handle.pause(note=f"paused in Slack by {email}")
        elif command.action == "unpause":
            await handle.unpause(note=f"unpaused in Slack by {email}")
        elif command.action == "trigger":
            await handle.trigger()
        else:
            await handle.delete()
        await respond(
            text=f":calendar: <@{user_id}>: {command.action} `{schedule_id}` done",
            response_type="in_channel",
        )

    # ---- buttons ----------------------------------------------------------------------------

    async def on_decision(self, kind: str, ack: Ack, body: dict[str, Any]) -> None:
        await ack()
        refused = self.foreign_team((body.get("team") or {}).get("id"))
        if refused:
            user_id = str((body.get("user") or {}).get("id") or "")
            channel_id = str((body.get("channel") or {}).get("id") or "")
            log.warning("refused a %s click from another workspace: %s", kind, refused)
            self.spawn(
                self.client.chat_postEphemeral(
                    channel=channel_id, user=user_id, text=f":no_entry: {refused}"
                )
            )
            return
        self.spawn(self.decide(kind, body))

    async def decide(self, kind: str, body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        rollout_id = str(action.get("value") or "")
        user_id = str((body.get("user") or {}).get("id") or "")
        channel_id = str(
            (body.get("channel") or {}).get("id")
            or (body.get("container") or {}).get("channel_id")
            or ""
        )
        message_ts = str(
            (body.get("message") or {}).get("ts")
            or (body.get("container") or {}).get("message_ts")
            or ""
        )

        async def tell(text: str) -> None:
            try:
                await self.client.chat_postEphemeral(channel=channel_id, user=user_id, text=text)
            except SlackApiError as error:
                log.warning("cannot tell %s: %s (%s)", user_id, text, slack_error(error))

        try:
            email = await self.email_of(user_id)
        except IdentityError as error:
            await tell(f":warning: {error}")
            return
        handle = self.temporal.get_workflow_handle(rollout_id)
        try:
            await handle.execute_update(
                kind,
                ApprovalDecision(approver=email, comment=f"via Slack by <@{user_id}>"),
                result_type=str,
            )
        except WorkflowUpdateFailedError as error:
            await tell(f":no_entry: {kind} refused: {failure_reason(error)}")
            return
        except RPCError as error:
            await tell(f":no_entry: {kind} refused: {await self.why_not(rollout_id, error)}")
            return
        except Exception as error:
            log.exception("%s of %s by %s failed", kind, rollout_id, email)
            await tell(f":x: could not {kind} `{rollout_id}`: {error}")
            return
        verdict = "Approved" if kind == "approve" else "Rejected"
        try:
            await self.client.chat_update(
                channel=channel_id,
                ts=message_ts,
                text=f"{verdict} by <@{user_id}>",
                blocks=blocks.as_dicts(blocks.decided(verdict, f"<@{user_id}>", rollout_id)),
            )
        except SlackApiError as error:
            # The decision stands (Temporal has it); only its echo in Slack is missing.
            log.warning("cannot mark %s as %s: %s", rollout_id, verdict, slack_error(error))
            await tell(f"{verdict} `{rollout_id}`.")

    async def why_not(self, rollout_id: str, error: RPCError) -> str:
        """Temporal says NOT_FOUND for an update to a finished workflow: tell which it is."""
        if error.status == RPCStatusCode.NOT_FOUND:
            try:
                description = await self.temporal.get_workflow_handle(rollout_id).describe()
            except RPCError:
                return f"no rollout with id {rollout_id}"
            if description.status != WorkflowExecutionStatus.RUNNING:
                state = description.status.name.lower() if description.status else "ended"
                return f"rollout {rollout_id} has already finished ({state}); nothing to decide"
        return rpc_message(rollout_id, error)

    # ---- status, list, cancel ---------------------------------------------------------------

    async def status(self, rollout_id: str | None, respond: Respond) -> None:
        if rollout_id is None:
            running = await self._recent("ExecutionStatus='Running'", limit=5)
            if not running:
                await respond(text="No rollout is running.", response_type="ephemeral")
                return
            ids = [execution_id for execution_id, _, _ in running]
        else:
            ids = [rollout_id]
        cards: list[dict[str, Any]] = []
        texts: list[str] = []
        for one in ids:
            try:
                progress = await query_progress(self.temporal, one)
            except RPCError as error:
                texts.append(rpc_message(one, error))
                continue
            info = progress_card(one, progress, self.settings.ui_link(one))
            cards.extend(blocks.as_dicts(blocks.status_card(info)))
            texts.append(blocks.card_text(info))
        await respond(text="\n".join(texts), blocks=cards[:50] or None, response_type="ephemeral")

    async def _recent(self, condition: str = "", limit: int = 10) -> list[tuple[str, str, str]]:
        query = f"WorkflowType='{WORKFLOW_NAME}'" + (f" AND {condition}" if condition else "")
        found: list[tuple[str, str, str]] = []
        async for execution in self.temporal.list_workflows(query=query, limit=limit):
            status = execution.status.name.lower() if execution.status else "unknown"
            started = execution.start_time.strftime("%Y-%m-%d %H:%M UTC")
            found.append((execution.id, status, started))
        return found

    async def list_rollouts(self, respond: Respond) -> None:
        since = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        recent = await self._recent(f"StartTime > '{since}'", limit=15)
        if not recent:
            await respond(text="No rollout in the last 30 days.", response_type="ephemeral")
            return
        lines = [f"• `{rid}` — {status}, started {started}" for rid, status, started in recent]
        await respond(
            text=blocks.cut("*Recent rollouts*\n" + "\n".join(lines), 3000),
            response_type="ephemeral",
        )

    async def cancel(self, rollout_id: str, user_id: str, respond: Respond) -> None:
        email = await self.email_of(user_id)
        handle = self.temporal.get_workflow_handle(rollout_id)
        try:
            progress = await handle.query("progress", result_type=RolloutProgress)
            description = await handle.describe()
        except RPCError as error:
            await respond(text=rpc_message(rollout_id, error), response_type="ephemeral")
            return
        allowed = {progress.requester_email, *progress.approver_emails}
        if email not in allowed:
            await respond(
                text=f":no_entry: only the requester or an approver of `{rollout_id}` may cancel "
                f"it; {email} is neither",
                response_type="ephemeral",
            )
            return
        if description.status != WorkflowExecutionStatus.RUNNING:
            await respond(
                text=f"`{rollout_id}` has already ended ({progress.phase.value})",
                response_type="ephemeral",
            )
            return
        await handle.cancel()
        await respond(
            text=f":octagonal_sign: cancellation of `{rollout_id}` requested: no new host starts; "
            "hosts in progress finish their steps",
            response_type="ephemeral",
        )


def progress_card(rollout_id: str, progress: RolloutProgress, link: str | None) -> blocks.CardInfo:
    return blocks.CardInfo(
        rollout_id=rollout_id,
        clusters=[cluster.name for cluster in progress.clusters],
        pilot=None,
        services=None,
        update_command=None,
        requester=progress.requester_email,
        approvers=progress.approver_emails,
        ui_link=link,
        progress=progress,
    )


def rpc_message(rollout_id: str, error: RPCError) -> str:
    if error.status == RPCStatusCode.NOT_FOUND:
        return f"no rollout with id {rollout_id}"
    if "completed" in error.message.lower():
        return f"rollout {rollout_id} has already finished"
    return f"Temporal refused the request for {rollout_id}: {error.message}"


def _client_given_filter(record: logging.LogRecord) -> bool:
    # Bolt reads SLACK_BOT_TOKEN itself and warns that our client (which has that very token and
    # the SLACK_API_URL base) wins over it; that is intended, so the warning is noise.
    return "`token` will be unused" not in record.getMessage()


def build_app(
    settings: Settings,
    temporal: Client,
    *,
    client: AsyncWebClient | None = None,
    defaults: SlackDefaults | None = None,
) -> tuple[AsyncApp, SlackBot]:
    """The AsyncApp with PatchPilot's listeners; signatures are verified in HTTP mode."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    client = client or web_client(token, settings.slack_api_url)
    secret = (
        settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    )
    logging.getLogger("slack_bolt.AsyncApp").addFilter(_client_given_filter)
    app = AsyncApp(
        client=client,
        signing_secret=secret,
        request_verification_enabled=True,
        # Every listener acks and hands the slow part to SlackBot.spawn before it returns, so the
        # response can go out when the listener returns: no polling for the ack (bench/slack_ack.py:
        # p50 25 -> 15 ms). Listeners must keep it that way.
        process_before_response=True,
    )
    bot = SlackBot(
        settings=settings,
        temporal=temporal,
        client=client,
        defaults=defaults if defaults is not None else load_defaults(settings.slack_defaults),
    )

    @app.command("/patch")
    async def patch(ack: Ack, body: dict[str, Any], respond: Respond) -> None:
        await bot.on_patch(ack, body, respond)

    @app.action(blocks.APPROVE_ACTION)
    async def approve(ack: Ack, body: dict[str, Any]) -> None:
        await bot.on_decision("approve", ack, body)

    @app.action(blocks.REJECT_ACTION)
    async def reject(ack: Ack, body: dict[str, Any]) -> None:
        await bot.on_decision("reject", ack, body)

    return app, bot


REPLAY_WINDOW_SECONDS = 300  # Slack's own limit on a request's age


def http_app(app: AsyncApp, path: str = "/slack/events") -> web.Application:
    """An aiohttp application serving Slack's events, commands and interactivity at `path`.

    A correctly signed request is accepted once: the same signature again within the five minutes
    it could still verify is a replay (someone resending a captured request) and gets 401.
    """
    seen: dict[str, float] = {}

    async def events(request: web.Request) -> web.Response:
        signature = request.headers.get("X-Slack-Signature", "")
        now = time.monotonic()
        for old, expires in list(seen.items()):
            if expires < now:
                del seen[old]
        if signature and signature in seen:
            log.warning("refused a replayed Slack request")
            return web.Response(status=401, text="replayed request")
        bolt_response = await app.async_dispatch(await to_bolt_request(request))
        if signature and bolt_response.status < 400:
            seen[signature] = now + REPLAY_WINDOW_SECONDS
        return await to_aiohttp_response(bolt_response)

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    server = web.Application()
    server.router.add_post(path, events)
    server.router.add_get("/healthz", health)
    return server


async def serve_http(app: AsyncApp, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(http_app(app), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def run_bot(
    settings: Settings, host: str = "0.0.0.0", worker_options: dict[str, Any] | None = None
) -> None:
    """`patchpilot bot`: the Bolt app (Socket Mode or HTTP) and an embedded worker, until stopped"""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    from activities.notify import EmailNotifier
    from bot.slack.notifier import SlackNotifier
    from bot.worker import WorkerParts, build_worker, connect

    if settings.slack_bot_token is None:
        raise RuntimeError("SLACK_BOT_TOKEN is not set (the bot token, xoxb-…)")
    if settings.slack_app_token is None and settings.slack_signing_secret is None:
        raise RuntimeError(
            "set SLACK_APP_TOKEN (Socket Mode) or SLACK_SIGNING_SECRET (HTTP mode at /slack/events)"
        )
    temporal = await connect(settings)
    app, bot = build_app(settings, temporal)
    identity = await bot.client.auth_test()  # fail fast on a wrong token or SLACK_API_URL
    bot.team_id = identity.get("team_id")
    fallback = None
    if settings.smtp_host:
        fallback = EmailNotifier(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=settings.smtp_from,
            starttls=settings.smtp_starttls,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        )
    notifier = SlackNotifier(bot.client, temporal, settings.ui_link, fallback=fallback)
    worker = build_worker(
        temporal,
        settings,
        WorkerParts(settings, extra_notifiers=[notifier]),
        **(worker_options or {}),
    )
    async with contextlib.AsyncExitStack() as stack:
        # The front door first: a command that arrives while the worker starts is simply queued.
        if settings.slack_app_token is not None:
            handler = AsyncSocketModeHandler(app, settings.slack_app_token.get_secret_value())
            await handler.connect_async()
            stack.push_async_callback(handler.close_async)
            log.info("Socket Mode connected")
        else:
            runner = await serve_http(app, host, settings.http_port)
            stack.push_async_callback(runner.cleanup)
            log.info("HTTP mode: POST http://%s:%d/slack/events", host, settings.http_port)
        # The e-mail/Teams approval-link pages, when links are configured.
        from bot.web.approvals import start_link_server

        link_pages = await start_link_server(temporal, settings, host)
        if link_pages is not None:
            stack.push_async_callback(link_pages.cleanup)
            log.info("approval link pages on port %d", settings.approval_port)
        stack.push_async_callback(drain, bot)
        log.info("worker polling task queue %s", settings.task_queue)
        await worker.run()  # until interrupted; a worker failure ends the bot too


async def drain(bot: SlackBot, timeout: float = 10.0) -> None:
    """Let acknowledged work (a rollout being started, a decision) finish before exiting."""
    if bot.tasks:
        await asyncio.wait(list(bot.tasks), timeout=timeout)
