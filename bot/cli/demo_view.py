"""What `patchpilot demo` says in the terminal around the live progress view: the approval
question, the summary, and the invitation to look around before everything stops.

The live view itself, the plan table and the event lines are `bot.cli.render`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text

from activities.notify import counts_text
from bot.cli.demo_servers import DemoOptions, Started
from workflows.models import RolloutSummary


async def ask(question: str) -> bool:
    """typer.confirm on a daemon thread, so Ctrl-C during the question is not held up by it.

    A closed standard input counts as no (and says so).
    """
    import typer

    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def confirm() -> None:
        try:
            result = typer.confirm(question, default=False)
        except (typer.Abort, EOFError):  # stdin closed: no is the safe answer
            result = False
            print(
                "\nno answer (standard input is closed): rejecting; use --auto-approve to run "
                "the demo without a terminal"
            )

        def deliver() -> None:
            if not answer.done():
                answer.set_result(result)

        loop.call_soon_threadsafe(deliver)

    threading.Thread(target=confirm, name="demo-confirm", daemon=True).start()
    return await answer


def print_summary(
    console: Console, summary: RolloutSummary | None, started: Started, link: str | None
) -> bool:
    """The summary panel and where to look next; True when the rollout succeeded."""
    from activities.notify import summary_text

    succeeded = False
    if summary is not None:
        succeeded = summary.phase.ok
        console.print(
            Panel(
                Text(summary_text(summary).rstrip()),
                title="Summary",
                border_style="green" if succeeded else "red",
            )
        )
        if succeeded:
            console.print(
                f"[bold green]Rollout succeeded:[/] {summary.patched} hosts patched, pilots "
                f"first, in {summary.duration_seconds:.0f}s."
            )
        else:
            console.print(
                f"[bold red]Rollout {summary.phase.value}:[/] {escape(summary.message)} "
                f"({counts_text(summary)})"
            )
    console.print(f"E-mail notifications sent: {started.mail.count} (in {started.mail.directory})")
    if link:
        console.print(f"Temporal Web UI: {link}")
    console.print(f"Logs and state: {started.data_dir}")
    return succeeded


def keep_open(options: DemoOptions, console: Console, started: Started) -> None:
    """With --keep-open (default: on a terminal with the Web UI), wait for Enter or Ctrl-C so the
    Web UI and the metrics can be looked at before everything stops."""
    keep = options.keep_open
    if keep is None:
        keep = os.isatty(0) and started.ui_port is not None
    if not keep:
        return
    what = [
        name
        for name, on in (
            ("the Temporal Web UI", started.ui_port is not None),
            ("the metrics", options.metrics_port is not None),
        )
        if on
    ]
    looking = f" so you can look at {' and '.join(what)}" if what else ""
    console.print(f"[bold]The servers stay up{looking}.[/] Press Enter (or Ctrl-C) to stop them.")
    with contextlib.suppress(EOFError, KeyboardInterrupt):
        input()
