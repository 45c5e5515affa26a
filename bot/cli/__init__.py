"""`patchpilot` command line: the typer app, its commands in the order `--help` lists them, and
`main`, the console script's entry point (`patchpilot = "bot.cli:main"`).

Where each command lives:

- `rollout_commands`: start, approve, reject, status, watch, cancel, result (through the
  rollout facade `bot.rollouts`);
- `server_commands`: worker, bot, codec-server, approval-server;
- `demo` (with `demo_servers`, `demo_view`): demo; `config_check` (with `checks/`): config check;
- `schedule_commands`: schedule create|list|pause|unpause|trigger|delete;
- `render`: the progress view shared by status, watch and the demo; `common`: what they share.

Exit codes: 0 done; 1 the rollout or a check did not succeed (result, watch, demo, config check);
2 the user can fix something (`UserError`, a bad setting, a usage error); 130 interrupted.
"""

from __future__ import annotations

import os
import sys

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.markup import escape

from bot.cli import report_command, rollout_commands, server_commands
from bot.cli.common import UserError, errors
from bot.cli.config_check import config_app
from bot.cli.demo import demo
from bot.cli.schedule_commands import schedule_app
from bot.settings import describe_settings_error

__all__ = ["EXIT_INTERRUPTED", "EXIT_USER_ERROR", "UserError", "app", "main"]

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

app = typer.Typer(
    name="patchpilot",
    help="Patch OS packages on fleets of hosts over SSH, with approvals, pilots and health checks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(server_commands.worker)
app.command()(rollout_commands.start)
app.command()(rollout_commands.approve)
app.command()(rollout_commands.reject)
app.command()(rollout_commands.status)
app.command()(rollout_commands.watch)
app.command()(rollout_commands.cancel)
app.command()(rollout_commands.result)
app.command()(report_command.report)
app.command()(rollout_commands.pause)
app.command()(rollout_commands.resume)
app.command()(rollout_commands.skip)
app.command()(rollout_commands.abort)
app.command()(rollout_commands.soak)
app.command()(demo)
app.command()(server_commands.bot)
app.command("codec-server")(server_commands.codec_server)
app.command("approval-server")(server_commands.approval_server)
app.add_typer(config_app, name="config")
app.add_typer(schedule_app, name="schedule")


def main(argv: list[str] | None = None) -> None:
    """Entry point. Exits with os._exit so temporalio's threads cannot abort a finished command."""
    code = 0
    try:
        returned = app(args=argv, standalone_mode=False)
        if isinstance(returned, int):
            code = returned
    except UserError as error:
        # Plain text: an error may quote brackets (a host pattern, a TOML table, a range).
        errors.print(f"[red]error:[/] {escape(str(error))}", highlight=False)
        code = EXIT_USER_ERROR
    except (ValidationError, SettingsError) as error:
        if isinstance(error, ValidationError) and error.title != "Settings":
            raise
        errors.print(f"[red]error:[/] {escape(describe_settings_error(error))}", highlight=False)
        code = EXIT_USER_ERROR
    except typer.Exit as done:
        code = done.exit_code
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except (KeyboardInterrupt, typer.Abort):
        code = EXIT_INTERRUPTED
    except Exception as error:  # usage errors (typer bundles its own click)
        show = getattr(error, "show", None)
        exit_code = getattr(error, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            code = exit_code
        else:
            raise
    sys.stdout.flush()
    sys.stderr.flush()
    # temporalio/sdk-python#300: teardown can abort with exit 134 after the work is done.
    os._exit(code)


if __name__ == "__main__":
    main()
