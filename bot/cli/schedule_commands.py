"""`patchpilot schedule create|list|pause|unpause|trigger|delete`: recurring rollouts.

The schedules themselves are `bot.schedules`; this module validates what the user typed and
words Temporal's answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from temporalio.service import RPCError, RPCStatusCode

from bot import schedules
from bot.cli.common import UserError, build_rollout, connect, console, read_json_object, run
from bot.settings import Settings

schedule_app = typer.Typer(help="Recurring rollouts (Temporal Schedules, overlap: skip).")
LIST_COLUMNS = ("id", "cron", "time zone", "state", "next runs", "recent runs", "note")


@schedule_app.command("create")
def schedule_create(
    schedule_id: Annotated[str, typer.Argument(help="Schedule id, e.g. weekly-cluster-a.")],
    input_file: Annotated[
        Path, typer.Option("--input", help="Rollout JSON (the spec's field names).")
    ],
    cron: Annotated[str, typer.Option(help="When to start a rollout, e.g. '0 1 * * sat'.")],
    timezone: Annotated[str, typer.Option(help="IANA time zone of the cron.")] = "UTC",
    pre_approved_by: Annotated[
        str | None,
        typer.Option(help="Standing approval by this approver (recorded in each run's history)."),
    ] = None,
    note: Annotated[str, typer.Option(help="Why this schedule exists.")] = "",
) -> None:
    """Create a schedule that starts SystemPatchWorkflow with a stored input."""
    settings = Settings()
    raw = read_json_object(input_file)
    if pre_approved_by:
        raw["preApprovedBy"] = {"approver": pre_approved_by, "comment": note}
    rollout = build_rollout(raw, settings)
    if rollout.pre_approved_by and settings.policy is not None:
        raise UserError(
            "--pre-approved-by: under a policy a standing approval is signed by each approver "
            f"themselves: create the schedule, then `patchpilot schedule grant {schedule_id} "
            "--as EMAIL --key PATH`"
        )
    if rollout.pre_approved_by:
        who = rollout.pre_approved_by.approver
        if who == rollout.requester_email:
            raise UserError(f"--pre-approved-by: {who} is the requester and cannot approve")
        if who not in rollout.approver_emails:
            raise UserError(f"--pre-approved-by: {who} is not in approverEmails")
    try:
        schedules.check_cron(cron, timezone)
    except ValueError as error:
        raise UserError(f"--cron/--timezone: {error}") from None

    async def main() -> None:
        client = await connect(settings)
        try:
            await schedules.create(
                client,
                schedule_id,
                rollout,
                cron=cron,
                timezone=timezone,
                task_queue=settings.task_queue,
                note=note,
            )
        except schedules.ScheduleExists:
            raise UserError(
                f"schedule {schedule_id} already exists; `patchpilot schedule list` shows it, "
                f"`patchpilot schedule delete {schedule_id}` removes it"
            ) from None
        except RPCError as error:
            raise UserError(f"cannot create schedule {schedule_id}: {error.message}") from None

    run(main())
    approval = (
        f"pre-approved by {pre_approved_by}" if pre_approved_by else "each run needs approval"
    )
    console.print(f"Schedule [bold]{schedule_id}[/]: '{cron}' ({timezone}), {approval}")


@schedule_app.command("grant")
def schedule_grant(
    schedule_id: Annotated[str, typer.Argument(help="The schedule to pre-approve.")],
    as_: Annotated[str, typer.Option("--as", help="Your e-mail (an approver in the policy).")],
    key: Annotated[Path, typer.Option("--key", help="Your OpenSSH ed25519 private key.")],
    valid_for: Annotated[
        int, typer.Option("--days", min=1, max=366, help="Days the grant holds.")
    ] = 30,
    comment: Annotated[str, typer.Option(help="Why, recorded with the grant.")] = "",
) -> None:
    """Pre-approve a schedule's runs with your own signature: they go ahead without asking while
    what they run (clusters, hosts, commands) is exactly what you are shown now, until the
    grant expires. Each approver the policy requires grants for themselves."""
    from datetime import UTC, datetime, timedelta

    from bot.cli.rollout_commands import personal_signer, what_is_signed
    from bot.rollouts import RolloutError
    from bot.signing import digest_here

    settings = Settings()
    signer = personal_signer(settings, as_, key)
    expires = datetime.now(UTC) + timedelta(days=valid_for)

    async def main() -> str:
        client = await connect(settings)
        try:
            rollout = await schedules.stored_rollout(client, schedule_id)
            digest = digest_here(rollout, settings.inventory)
            grant = signer.grant(schedule_id, as_, digest, expires, comment)
            await schedules.add_grant(client, schedule_id, grant)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise UserError(f"no schedule with id {schedule_id}") from None
            raise UserError(f"grant {schedule_id}: {error.message}") from None
        except (RolloutError, ValueError) as error:
            raise UserError(f"grant {schedule_id}: {error}") from None
        return what_is_signed(rollout, digest)

    shown = run(main())
    console.print(shown, highlight=False, markup=False)
    console.print(f"schedule {schedule_id}: granted by {as_} until {expires:%Y-%m-%d %H:%M} UTC")


@schedule_app.command("list")
def schedule_list() -> None:
    """List schedules with their next runs."""
    settings = Settings()

    async def main() -> list[schedules.ScheduleRow]:
        return await schedules.list_rows(await connect(settings))

    table = Table(title="PatchPilot schedules")
    for column in LIST_COLUMNS:
        table.add_column(column)
    for found in run(main()):
        table.add_row(
            found.schedule_id,
            found.cron,
            found.timezone,
            "paused" if found.paused else "active",
            "\n".join(f"{moment:%a %Y-%m-%d %H:%M} UTC" for moment in found.next_runs),
            "\n".join(found.recent_runs),
            found.note,
        )
    console.print(table)


def _act(schedule_id: str, action: str, note: str = "") -> None:
    settings = Settings()

    async def main() -> None:
        client = await connect(settings)
        try:
            await schedules.act(client, schedule_id, action, note)
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                raise UserError(f"no schedule with id {schedule_id}") from None
            raise UserError(f"{action} {schedule_id}: {error.message}") from None

    run(main())
    console.print(
        f"schedule {schedule_id}: {action}d"
        if action != "trigger"
        else f"schedule {schedule_id}: a run was started now"
    )


@schedule_app.command("pause")
def schedule_pause(schedule_id: str, note: str = "") -> None:
    """Pause a schedule (no new runs until unpaused)."""
    _act(schedule_id, "pause", note)


@schedule_app.command("unpause")
def schedule_unpause(schedule_id: str, note: str = "") -> None:
    """Resume a paused schedule."""
    _act(schedule_id, "unpause", note)


@schedule_app.command("trigger")
def schedule_trigger(schedule_id: str) -> None:
    """Start one run now (still skipped if a run is in progress)."""
    _act(schedule_id, "trigger")


@schedule_app.command("delete")
def schedule_delete(schedule_id: str) -> None:
    """Delete a schedule; runs already started go on."""
    _act(schedule_id, "delete")
