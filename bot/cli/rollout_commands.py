"""The rollout commands: start, approve, reject, status, watch, cancel, result, and the controls
of a running rollout: pause, resume, skip, abort.

Each one validates what the user typed, then asks the rollout facade (`bot.rollouts.Rollouts`);
a `RolloutError` becomes a `UserError` (exit code 2) with the facade's sentence.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError

from bot.cli.common import (
    UserError,
    build_rollout,
    console,
    positional_clusters,
    read_json_object,
    rollouts,
    run,
    split,
)
from bot.cli.render import render_progress
from bot.rollouts import Problem, RolloutError, Rollouts, RolloutStatus
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.signing import Signer
from workflows.gate_rules import GateControl
from workflows.models import (
    ApprovalDecision,
    RolloutControl,
    RolloutInput,
    describe_validation_error,
)
from workflows.policy import PolicyError
from workflows.repair import REPAIR_SHOWN

T = TypeVar("T")

DURATION_FIELDS = (
    "approvalTimeout",
    "rebootTimeout",
    "updateTimeout",
    "windowCutoff",
    "soakTime",
    "gateTimeout",
)
As = Annotated[str, typer.Option("--as", help="Your e-mail (must be an approver).")]
Comment = Annotated[str, typer.Option(help="Why.")]


def start(
    clusters_option: Annotated[
        list[str] | None,
        typer.Option("--clusters", "--cluster", "-c", help="Cluster(s) to patch, in order."),
    ] = None,
    more_clusters: Annotated[
        list[str] | None, typer.Argument(help="More clusters (after --clusters).")
    ] = None,
    pilot: Annotated[int | None, typer.Option(help="Pilot hosts per cluster.")] = None,
    approver: Annotated[
        list[str] | None, typer.Option("--approver", "--approvers", help="Approver e-mail(s).")
    ] = None,
    requester: Annotated[str | None, typer.Option(help="Your e-mail.")] = None,
    services: Annotated[str | None, typer.Option(help="Comma-separated services.")] = None,
    update: Annotated[str | None, typer.Option(help="Update command run on each host.")] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help=(
                "Update profile (instead of --update): one of the policy's updateProfiles; "
                "without a policy PatchPilot's OS-family profiles security or full."
            )
        ),
    ] = None,
    vault_address: Annotated[str | None, typer.Option(help="Vault URL (else VAULT_ADDR).")] = None,
    secret_prefix: Annotated[str | None, typer.Option(help="Vault KV path prefix.")] = None,
    max_concurrency: Annotated[
        str | None, typer.Option(help='Hosts patched at once: a number, or "25%" of the cluster.')
    ] = None,
    max_failures: Annotated[
        str | None, typer.Option(help='Host failures tolerated: a number, or "10%" of the cluster.')
    ] = None,
    approval_timeout: Annotated[
        str | None, typer.Option(help="Seconds or ISO 8601 (default 24 h).")
    ] = None,
    pre_downtime_script: Annotated[list[str] | None, typer.Option()] = None,
    pre_update_script: Annotated[list[str] | None, typer.Option()] = None,
    post_update_script: Annotated[list[str] | None, typer.Option()] = None,
    reboot_policy: Annotated[
        str | None, typer.Option(help="if-required (default), always or never.")
    ] = None,
    reboot_timeout: Annotated[
        str | None, typer.Option(help="Seconds or ISO 8601 to wait for a rebooted host.")
    ] = None,
    update_timeout: Annotated[str | None, typer.Option(help="Seconds or ISO 8601.")] = None,
    repair_interrupted_dpkg: Annotated[
        bool,
        typer.Option(
            "--repair-interrupted-dpkg",
            help="Where dpkg was interrupted, run dpkg --configure -a first instead of refusing "
            "the host (approvers see it; the approvals cover it).",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Inspect only: pending updates, reboot need.")
    ] = False,
    window: Annotated[
        list[str] | None,
        typer.Option(
            help="Maintenance window 'CRON|DURATION[|TIMEZONE]', e.g. '0 2 * * sat|PT4H|UTC' "
            "(repeatable; default: the clusters' patchpilot_windows)."
        ),
    ] = None,
    window_cutoff: Annotated[
        str | None, typer.Option(help="Start no host with less than this left (default 15 min).")
    ] = None,
    limit: Annotated[
        str | None,
        typer.Option(
            "--limit",
            "-l",
            help="Only the clusters' hosts matching this Ansible host pattern, as "
            "ansible-playbook --limit: 'web0[12]*', 'cluster-a:&dc1', '!a3'.",
        ),
    ] = None,
    soak_time: Annotated[
        str | None,
        typer.Option(help="Wait after the pilots and each wave: seconds or ISO 8601 ('PT10M')."),
    ] = None,
    gate_timeout: Annotated[
        str | None, typer.Option(help="How long firing alerts may hold a wave (default 30 min).")
    ] = None,
    alert_matcher: Annotated[
        list[str] | None,
        typer.Option(
            help="Prometheus alert matchers holding the next wave while they fire, e.g. "
            '\'alertname=~"HighErrorRate|NodeDown", cluster="{cluster}"\' (repeatable).'
        ),
    ] = None,
    gate_query: Annotated[
        list[str] | None,
        typer.Option(
            help="Canary check after each stage: 'EXPR <= baseline * F + O min N', {hosts} in a "
            "regex matcher (repeatable)."
        ),
    ] = None,
    input_file: Annotated[
        Path | None, typer.Option("--input", help="Rollout JSON with the spec's field names.")
    ] = None,
    rollout_id: Annotated[str | None, typer.Option("--id", help="Workflow id to use.")] = None,
) -> None:
    """Start a rollout. It waits for an approver before touching any host."""
    # Long only by its signature: each parameter is one of the command's flags (the contract).
    settings = Settings()
    raw = read_json_object(input_file) if input_file is not None else {}
    flags: dict[str, Any] = {
        "targetClusters": split(clusters_option) + positional_clusters(more_clusters) or None,
        "pilotHostCount": pilot,
        "approverEmails": split(approver) or None,
        "requesterEmail": requester,
        "serviceList": split([services]) if services is not None else None,
        "updateCommand": update,
        "vaultAddress": vault_address,
        "secretPathPrefix": secret_prefix,
        "maxConcurrency": max_concurrency,
        "maxFailures": max_failures,
        "approvalTimeout": approval_timeout,
        "preDowntimeScripts": pre_downtime_script,
        "preUpdateScripts": pre_update_script,
        "postUpdateScripts": post_update_script,
        "rebootPolicy": reboot_policy,
        "rebootTimeout": reboot_timeout,
        "updateTimeout": update_timeout,
        "repairInterruptedDpkg": True if repair_interrupted_dpkg else None,
        "dryRun": True if dry_run else None,
        "maintenanceWindows": [parse_window(text) for text in window] if window else None,
        "windowCutoff": window_cutoff,
        "hostPattern": limit,
        "soakTime": soak_time,
        "gateTimeout": gate_timeout,
        "alertMatchers": alert_matcher,
        "gateQueries": gate_query,
    }
    raw.update({key: value for key, value in flags.items() if value is not None})
    for duration in DURATION_FIELDS:  # "3600" on the command line means seconds
        value = raw.get(duration)
        if isinstance(value, str) and value.isdigit():
            raw[duration] = int(value)
    rollout = build_rollout(raw, settings, profile=profile)
    workflow_id = _ask(settings, lambda facade: facade.start(rollout, rollout_id)).id
    console.print(f"Started rollout [bold]{workflow_id}[/]")
    if rollout.dry_run:
        console.print("Dry run: no approval needed, nothing will be changed.")
        console.print(f"  patchpilot result {workflow_id}")
    else:
        console.print(
            "It waits for approval by: "
            f"{', '.join(rollout.approver_emails) or 'the approvers the policy names'}"
        )
        console.print(f"  patchpilot approve {workflow_id} --as <approver e-mail>")
    console.print(f"  patchpilot status {workflow_id}")
    link = settings.ui_link(workflow_id)
    if link:
        console.print(f"  {link}")


def _ask(
    settings: Settings, request: Callable[[Rollouts], Awaitable[T]], *, refused: str = ""
) -> T:
    """Run one request on the facade; a `RolloutError` becomes a `UserError` with its sentence
    (after `refused` when the workflow's rules said no)."""

    async def main() -> T:
        facade = await rollouts(settings)
        try:
            return await request(facade)
        except RolloutError as error:
            prefix = refused if error.problem == Problem.REFUSED else ""
            raise UserError(f"{prefix}{error}") from None

    return run(main())


def parse_window(text: str) -> dict[str, Any]:
    """--window 'CRON|DURATION[|TIMEZONE]' as a maintenanceWindows entry; `UserError` if not."""
    parts = [part.strip() for part in text.split("|")]
    if len(parts) not in (2, 3) or not all(parts):
        raise UserError(f"--window {text!r}: expected 'CRON|DURATION[|TIMEZONE]'")
    duration: str | int = int(parts[1]) if parts[1].isdigit() else parts[1]
    window: dict[str, Any] = {"cron": parts[0], "duration": duration}
    if len(parts) == 3:
        window["timezone"] = parts[2]
    return window


Key = Annotated[
    Path | None,
    typer.Option(
        "--key",
        help="Your OpenSSH ed25519 private key: sign the decision (needed under a policy).",
    ),
]


def approve(rollout_id: str, as_: As, comment: Comment = "", key: Key = None) -> None:
    """Approve a rollout (you must be an approver, and not its requester). Under a policy, sign
    it with your own key (`--key`, the one the policy lists for you)."""
    _decide(rollout_id, as_, comment, approve=True, key=key)


def reject(rollout_id: str, as_: As, comment: Comment = "", key: Key = None) -> None:
    """Reject a rollout: no host is touched. Under a policy, sign it with `--key`."""
    _decide(rollout_id, as_, comment, approve=False, key=key)


def _decide(
    rollout_id: str, approver: str, comment: str, *, approve: bool, key: Path | None
) -> None:
    settings = Settings()
    try:
        decision = ApprovalDecision(approver=approver, comment=comment)
    except ValidationError as error:
        raise UserError(describe_validation_error(error).replace("approver:", "--as:")) from None
    signer = personal_signer(settings, decision.approver, key) if key else None
    from bot.signing import signed_decision  # asyncssh: loaded only when signing

    async def decide(facade: Rollouts) -> str:
        signed = decision
        if signer is not None:
            signed, rollout, digest = await signed_decision(
                facade,
                rollout_id,
                decision.approver,
                comment,
                approve=approve,
                signer=signer,
                inventory=settings.inventory,
            )
            console.print(what_is_signed(rollout, digest), highlight=False, markup=False)
        return await facade.decide(rollout_id, signed, approve=approve)

    answer = _ask(settings, decide, refused=f"{'approve' if approve else 'reject'} refused: ")
    console.print(answer)


def personal_signer(settings: Settings, approver: str, key: Path) -> Signer:
    """Your own key, under your name in the policy (PATCHPILOT_POLICY, read here)."""
    from activities.policy import load_policy
    from bot.signing import Signer

    if settings.policy is None:
        raise UserError("--key: set PATCHPILOT_POLICY, whose people list says who you are")
    try:
        policy = load_policy(settings.policy)
    except PolicyError as error:
        raise UserError(f"PATCHPILOT_POLICY: {error}") from None
    person = policy.person_by_email(approver)
    if person is None:
        raise UserError(f"--as: {approver} is not a person of the policy")
    if not key.is_file():
        raise UserError(f"--key: {key} is not a file")
    return Signer(key, person.name)


def what_is_signed(rollout: RolloutInput, digest: str) -> str:
    """The decision's subject in full, as the person signs it."""
    lines = [
        f"requested by {rollout.requester_email}",
        f"clusters: {', '.join(rollout.target_clusters)}"
        + (f" (limit {rollout.host_pattern})" if rollout.host_pattern else ""),
        f"update command: {rollout.update_command}",
        *([REPAIR_SHOWN] if rollout.repair_interrupted_dpkg else []),
    ]
    for label, scripts in (
        ("pre-downtime script", rollout.pre_downtime_scripts),
        ("pre-update script", rollout.pre_update_scripts),
        ("post-update script", rollout.post_update_scripts),
    ):
        lines += [f"{label}: {script}" for script in scripts]
    lines += [f"services: {', '.join(rollout.service_list) or 'none'}", f"signing {digest}"]
    return "\n".join(lines)


def status(
    rollout_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the progress as JSON.")] = False,
) -> None:
    """Show a rollout's phase and every host's state and step."""
    settings = Settings()

    found = _ask(settings, lambda facade: facade.status(rollout_id))
    if as_json:
        # Every field, defaults too: a stable shape for scripts (the wire form leaves them out).
        full = found.progress.model_dump(mode="json", context={"full": True})
        print(json.dumps({"status": found.status, "progress": full}, indent=2))
    else:
        console.print(render_progress(found.progress, status=found.status))


def watch(
    rollout_id: str,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
) -> None:
    """Follow a rollout live until it ends; exit 0 only if it succeeded."""
    from rich.live import Live

    settings = Settings()

    async def follow(facade: Rollouts) -> RolloutStatus:
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                found = await facade.status(rollout_id)
                live.update(render_progress(found.progress, status=found.status))
                if not found.running:
                    return found
                await asyncio.sleep(interval)

    if not _ask(settings, follow).progress.phase.ok:
        raise typer.Exit(1)


def cancel(rollout_id: str) -> None:
    """Cancel a rollout: no new host starts; hosts in progress finish their steps."""
    settings = Settings()

    _ask(settings, lambda facade: facade.cancel(rollout_id))
    console.print(f"cancellation requested for {rollout_id}")


Who = Annotated[str, typer.Option("--as", help="Your e-mail (the requester or an approver).")]


def pause(rollout_id: str, as_: Who) -> None:
    """Pause a rollout: hosts in progress finish; no new host starts until `resume`."""
    _control(rollout_id, "pause", as_)


def resume(rollout_id: str, as_: Who) -> None:
    """Resume a paused rollout."""
    _control(rollout_id, "resume", as_)


def skip(rollout_id: str, host: str, as_: Who, reason: Comment = "") -> None:
    """Skip a host that has not started: it is never touched and the summary says who and why."""
    _control(rollout_id, "skip", as_, host=host, reason=reason)


def abort(rollout_id: str, as_: Who) -> None:
    """Abort a rollout: hosts in progress finish their steps, every other host is skipped."""
    _control(rollout_id, "abort", as_)


def soak(
    rollout_id: str,
    action: Annotated[str, typer.Argument(help="cut (end the soak now) or extend.")],
    as_: Who,
    by: Annotated[
        str | None, typer.Option(help="extend by: seconds or ISO 8601 (default 10 min).")
    ] = None,
) -> None:
    """Cut the running soak (after the pilots or a wave) short, or extend it."""
    extra: dict[str, object] = {"action": action}
    if by is not None:
        extra["by"] = int(by) if by.isdigit() else by
    _control(rollout_id, "gate", as_, model=GateControl, **extra)


def _control(
    rollout_id: str,
    update: str,
    person: str,
    model: type[RolloutControl] = RolloutControl,
    **extra: object,
) -> None:
    settings = Settings()
    try:
        control = model.model_validate({"person": person, **extra})
    except ValidationError as error:
        raise UserError(describe_validation_error(error).replace("person:", "--as:")) from None
    answer = _ask(
        settings,
        lambda facade: facade.control(rollout_id, update, control),
        refused=f"{update} refused: ",
    )
    console.print(answer)


def result(rollout_id: str) -> None:
    """Wait for a rollout to end and print its summary; exit 1 unless it succeeded."""
    from activities.notify import summary_text

    settings = Settings()

    summary = _ask(settings, lambda facade: facade.result(rollout_id))
    console.print(summary_text(summary), highlight=False, markup=False)
    if not summary.phase.ok:
        raise typer.Exit(1)
