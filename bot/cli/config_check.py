"""`patchpilot config check`: try every configured dependency, say what is wrong and how to fix it.

Each check (`bot.cli.checks.*`) is bounded in time (``timeout`` seconds, default 5) and the checks
run concurrently, so the whole command answers in a few seconds even when everything is down. A
check reports ``ok``, ``fail`` (the exit code becomes 1), ``warn`` (worth knowing, not fatal) or
``skip`` (not configured, and that is allowed: e-mail and Slack are optional).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bot.cli.checks import CheckResult, Status, fail
from bot.cli.checks.channels import check_notifications, check_slack, check_smtp
from bot.cli.checks.codec import check_codec
from bot.cli.checks.files import check_inventory, check_known_hosts, check_policy
from bot.cli.checks.temporal import check_temporal
from bot.cli.checks.vault import check_vault
from bot.cli.common import UserError, console, run, split
from bot.settings import Settings

CHECKS = (
    "temporal",
    "vault",
    "inventory",
    "known_hosts",
    "policy",
    "smtp",
    "slack",
    "codec",
    "notifications",
)
FILE_CHECKS = {"inventory", "known_hosts", "policy", "notifications"}  # all read the inventory once
MARK = {
    Status.OK: "[green]✓[/]",
    Status.FAIL: "[bold red]✗[/]",
    Status.WARN: "[yellow]![/]",
    Status.SKIP: "[dim]-[/]",
}

config_app = typer.Typer(help="Check the configuration.", no_args_is_help=True)


@config_app.command("check")
def config_check(
    only: Annotated[
        list[str] | None,
        typer.Option(
            help="Run only these checks: temporal, vault, inventory, known_hosts, policy, smtp, "
            "slack, codec, notifications (repeatable or comma-separated)."
        ),
    ] = None,
    secret_prefix: Annotated[
        str, typer.Option(help="Vault KV path prefix of the SSH keys to probe.")
    ] = "patch-deploy",  # noqa: S107 - a path, not a password
    timeout: Annotated[float, typer.Option(help="Seconds allowed for each check.")] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Validate every setting and print a table with the fix for each problem; exit 1 on any."""
    settings = Settings()  # a bad setting: main() names it
    try:
        checks = run_checks(
            settings, only=split(only), secret_prefix=secret_prefix, timeout=timeout
        )
        results = run(checks)
    except ValueError as error:
        raise UserError(str(error)) from None
    raise typer.Exit(print_json(results) if as_json else print_report(results, console))


async def run_checks(
    settings: Settings,
    only: list[str] | None = None,
    secret_prefix: str = "patch-deploy",  # noqa: S107 - a path, not a password
    timeout: float = 5.0,
) -> list[CheckResult]:
    """Run the selected checks (all of `CHECKS` by default) at once, each bounded by ``timeout``
    (plus a little); results in the order of `CHECKS`. ValueError names unknown checks."""
    selected = [name.strip().lower().replace("-", "_") for name in only or []] or list(CHECKS)
    unknown = [name for name in selected if name not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}")
    bound = timeout + 2

    async def bounded(name: str, work: Awaitable[Any]) -> list[CheckResult]:
        try:
            result = await asyncio.wait_for(work, timeout=bound)
        except TimeoutError:
            return [fail(name, f"no answer within {bound:.0f}s")]
        return result if isinstance(result, list) else [result]

    def files() -> list[CheckResult]:
        inventory, clusters = check_inventory(settings)
        found = []
        if "inventory" in selected:
            found.append(inventory)
        if "known_hosts" in selected:
            found.append(check_known_hosts(settings, clusters))
        if "policy" in selected:
            found.append(check_policy(settings, clusters))
        if "notifications" in selected:
            found.append(check_notifications(settings, clusters))
        return found

    jobs: list[Awaitable[list[CheckResult]]] = []
    if "temporal" in selected:
        jobs.append(bounded("Temporal", check_temporal(settings, timeout)))
    if "vault" in selected:
        jobs.append(
            bounded("Vault", asyncio.to_thread(check_vault, settings, secret_prefix, timeout))
        )
    if FILE_CHECKS & set(selected):
        jobs.append(bounded("Inventory", asyncio.to_thread(files)))
    if "smtp" in selected:
        jobs.append(bounded("SMTP", asyncio.to_thread(check_smtp, settings, timeout)))
    if "slack" in selected:
        jobs.append(bounded("Slack", check_slack(settings, timeout)))
    if "codec" in selected:
        jobs.append(bounded("Payload codec", check_codec(settings)))
    groups = await asyncio.gather(*jobs)
    return [result for group in groups for result in group]


def print_json(results: list[CheckResult]) -> int:
    """One JSON document on stdout; returns the exit code (1 if any check failed)."""
    document = {
        "ok": not any(r.failed for r in results),
        "checks": [
            {"check": r.check, "status": r.status.value, "detail": r.detail, "fix": r.fix}
            for r in results
        ],
    }
    print(json.dumps(document, indent=2))
    return 0 if document["ok"] else 1


def print_report(results: list[CheckResult], console: Console) -> int:
    """The table; returns the exit code (1 if any check failed)."""
    table = Table(title="PatchPilot configuration", title_justify="left", show_lines=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("result")
    table.add_column("fix")
    for result in results:
        table.add_row(MARK[result.status], result.check, result.detail, result.fix)
    console.print(table)
    failed = [r for r in results if r.failed]
    if failed:
        console.print(
            f"[bold red]✗ {len(failed)} problem(s):[/] {', '.join(r.check for r in failed)}"
        )
        return 1
    warned = [r for r in results if r.status == Status.WARN]
    note = f" ({len(warned)} warning(s))" if warned else ""
    console.print(f"[bold green]✓ configuration OK{note}[/]")
    return 0
