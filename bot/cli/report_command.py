"""`patchpilot report <rollout-id> [--format text|json|csv]`: what the update did to each host's
packages (workflows/packages.py), read from the rollout's ended host workflows."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated

import typer

from bot.cli.common import UserError, console, rollouts, run
from bot.rollouts import RolloutError
from bot.settings import Settings
from workflows.models import HostPatchResult

Format = Annotated[str, typer.Option("--format", help="text, json or csv.")]
CSV_HEADER = ("host", "kind", "package", "old", "new")


def report(rollout_id: str, format_: Format = "text") -> None:
    """Print the package report of every host the rollout patched (or tried to)."""
    if format_ not in ("text", "json", "csv"):
        raise UserError(f"--format {format_!r}: choose text, json or csv")
    settings = Settings()

    async def main() -> list[HostPatchResult]:
        facade = await rollouts(settings)
        try:
            return await facade.host_results(rollout_id)
        except RolloutError as error:
            raise UserError(str(error)) from None

    results = run(main())
    if not results:
        raise UserError(
            f"rollout {rollout_id} has no ended host to report on yet (a dry run patches none: "
            f"`patchpilot result {rollout_id}` shows what it found)"
        )
    console.print(render(results, format_), highlight=False, markup=False, end="")


def render(results: list[HostPatchResult], format_: str) -> str:
    """The hosts' reports as text (one block per host), JSON (a list of objects: hostname, ok,
    step, packages) or CSV (CSV_HEADER, one row per fact)."""
    if format_ == "json":
        rows = [
            {
                "hostname": r.hostname,
                "ok": r.ok,
                "step": r.step,
                "packages": r.packages.model_dump(mode="json") if r.packages else None,
            }
            for r in results
        ]
        return json.dumps(rows, indent=2) + "\n"
    if format_ == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for r in results:
            for row in r.packages.rows() if r.packages else []:
                writer.writerow((r.hostname, *row))
        return out.getvalue()
    lines = []
    for r in results:
        state = "done" if r.ok else f"failed at {r.step}"
        lines.append(f"{r.hostname}: {state}")
        if r.packages is None:
            lines.append("  no package report (the update did not run)")
        else:
            lines.append(f"  {r.packages.summary_line()}")
            lines.extend(f"  {line}" for line in r.packages.lines())
    return "\n".join(lines) + "\n"
