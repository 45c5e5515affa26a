"""`/patch` text -> a command, as pure functions: no Slack, no Temporal, no I/O.

`parse_command` never raises anything but `CommandError`, whose message names the problem; the
bot answers with that message plus `USAGE`, ephemerally, and starts nothing.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import ValidationError

from bot.slack.config import RolloutDefaults, SlackDefaults
from workflows.models import RolloutInput, describe_validation_error

USAGE = """\
*Usage*
• `/patch <cluster> [<cluster> …] [pilot=N] [services=a,b] [update="command"] \
[approvers=@alice,bob@example.com] [limit=web0[12]*]`
   start a rollout: nothing is touched until an approver (not you) approves it
• `/patch <cluster> … profile=security`   the update command of the approval policy's profile \
(without a policy, PatchPilot's `security` or `full`)
• `… soak=PT10M alert='alertname="HighErrorRate", cluster="{cluster}"' \
query='avg(error_rate{host=~"{hosts}"}) <= baseline * 1.2 + 0.01' gate-timeout=PT30M`   \
health gates after the pilots and each wave (README "Health gates"); \
`/patch soak <rollout id> cut|extend [PT10M]` ends or lengthens a running soak
• `/patch <cluster> … dry-run`   what would change (pending updates, reboots); \
no approval, no change
• `… repair-dpkg=yes`   where dpkg was interrupted, run `dpkg --configure -a` first (else refused)
• `/patch schedule list` · `/patch schedule create <id> cron="0 2 * * sat" tz=UTC \
<cluster> … [options]`
• `/patch schedule pause|unpause|trigger|delete <id>`
• `/patch status [<rollout id>]`   one rollout's progress, or the running rollouts
• `/patch list`   recent rollouts
• `/patch cancel <rollout id>`   stop starting new hosts (requester or approvers only)
• `/patch pause|resume|abort <rollout id>` · `/patch skip <rollout id> <host> [why]` \
control a running rollout (requester or approvers; also buttons on its card)
• `/patch help`   this text
*Examples*
• `/patch cluster-a pilot=2`
• `/patch cluster-a cluster-b pilot=2 services=nginx,postgresql \
update="apt-get update && apt-get -y upgrade" approvers=@alice,@bob`
Defaults for pilot, services, update and approvers can be configured per channel or cluster."""

# Health gates (workflows/gating.py): option -> RolloutInput field (alert and query: one each).
GATE_OPTIONS = {
    "soak": "soakTime",
    "gate-timeout": "gateTimeout",
    "alert": "alertMatchers",
    "query": "gateQueries",
}
FLAG_OPTIONS = {"repair-dpkg": "repairInterruptedDpkg"}  # yes/no: option -> RolloutInput field
YES, NO = ("yes", "true", "on", "1"), ("no", "false", "off", "0")
OPTIONS = ("pilot", "services", "update", "profile", "approvers", "limit", *GATE_OPTIONS)
OPTIONS += tuple(FLAG_OPTIONS)
ALIASES = {"service": "services", "approver": "approvers", "pilots": "pilot"}
SUBCOMMANDS = ("help", "status", "list", "cancel")
MAX_TEXT = 4000
# Workflow ids shown back in chat and used in lookups: printable, no spaces, bounded.
ROLLOUT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$")
MENTION = re.compile(r"^<@([UW][A-Z0-9]{1,30})(?:\|[^>]*)?>$")
USER_ID = re.compile(r"^[UW][A-Z0-9]{2,30}$")
MAILTO = re.compile(r"^<mailto:([^|>]+)(?:\|[^>]*)?>$")
HANDLE = re.compile(r"^@([A-Za-z0-9._-]{1,80})$")
# Placeholders used to check a request before the Slack identities are resolved.
_PLACEHOLDER_DOMAIN = "patchpilot.invalid"


SMART_QUOTES = {0x201C: '"', 0x201D: '"', 0x201E: '"', 0x2018: "'", 0x2019: "'"}


class CommandError(ValueError):
    """A `/patch` the bot cannot act on; the message says what is wrong."""


@dataclass(frozen=True)
class ApproverRef:
    """An approver as typed: exactly one of these is set."""

    email: str | None = None
    user_id: str | None = None
    handle: str | None = None

    def __str__(self) -> str:
        if self.user_id:
            return f"<@{self.user_id}>"
        if self.handle:
            return f"@{self.handle}"
        return self.email or ""


@dataclass(frozen=True)
class HelpCommand:
    """`/patch`, `/patch help`: the usage text."""


@dataclass(frozen=True)
class StatusCommand:
    """`/patch status [<rollout id>]`: one rollout's card, or (None) every running rollout's."""

    rollout_id: str | None = None


@dataclass(frozen=True)
class ListCommand:
    """`/patch list`: the recent rollouts."""


@dataclass(frozen=True)
class CancelCommand:
    """`/patch cancel <rollout id>`."""

    rollout_id: str


@dataclass(frozen=True)
class PatchCommand:
    """`/patch <cluster> … [options] [dry-run]` as typed; None is "not given": a default applies."""

    clusters: list[str]
    pilot: int | None = None
    services: list[str] | None = None
    update: str | None = None
    approvers: list[ApproverRef] | None = None
    dry_run: bool = False
    profile: str | None = None  # an update profile of the approval policy (bot.slack.trust)
    # An Ansible host pattern (`--limit`): only the clusters' hosts it matches.
    limit: str | None = None
    # soak=, gate-timeout=, alert=, query=, repair-dpkg= as RolloutInput fields (*_OPTIONS).
    gates: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleCommand:
    """`/patch schedule list | pause|unpause|trigger|delete <id> | create <id> cron=… …`."""

    action: str
    schedule_id: str | None = None
    cron: str | None = None
    timezone: str = "UTC"
    patch: PatchCommand | None = None


Command = HelpCommand | StatusCommand | ListCommand | CancelCommand | PatchCommand | ScheduleCommand
SCHEDULE_ACTIONS = ("list", "create", "pause", "unpause", "trigger", "delete")
DRY_RUN_WORDS = ("dry-run", "--dry-run", "dryrun")


@dataclass(frozen=True)
class PatchPlan:
    """A `/patch` with the defaults applied: everything needed but the Slack identities."""

    clusters: list[str]
    pilot: int
    services: list[str]
    update: str
    approvers: list[ApproverRef] = field(default_factory=list)
    dry_run: bool = False
    limit: str | None = None
    gates: Mapping[str, object] = field(default_factory=dict)
    profile: str | None = None  # the policy's profile `update` was taken from


def _tokens(text: str) -> list[str]:
    # Slack clients turn quotes into typographic ones; a user means plain quotes.
    text = text.translate(SMART_QUOTES)
    if len(text) > MAX_TEXT:
        raise CommandError(f"the command is {len(text)} characters long; the limit is {MAX_TEXT}")
    if "\x00" in text:
        raise CommandError("the command contains a NUL character")
    try:
        return shlex.split(text, posix=True)
    except ValueError as error:
        raise CommandError(f"cannot read the command: {error} (close every quote)") from None


def _rollout_id(value: str) -> str:
    if not ROLLOUT_ID.fullmatch(value):
        raise CommandError(f"{value[:80]!r} is not a rollout id (like patch-cluster-a-2026…)")
    return value


def parse_approver(token: str) -> ApproverRef:
    """One approver as typed: a mention `<@U…>` (Slack escapes mentions in commands that set
    should_escape, https://api.slack.com/interactivity/slash-commands#creating_commands), a user
    id, `@handle`, `<mailto:…>` or an e-mail address. Raises CommandError for anything else."""
    token = token.strip()
    if match := MENTION.fullmatch(token):
        return ApproverRef(user_id=match.group(1))
    if match := MAILTO.fullmatch(token):
        return ApproverRef(email=match.group(1).strip().lower())
    if USER_ID.fullmatch(token):
        return ApproverRef(user_id=token)
    if match := HANDLE.fullmatch(token):
        return ApproverRef(handle=match.group(1))
    if "@" in token and not token.startswith("@") and " " not in token:
        return ApproverRef(email=token.lower())  # checked as an e-mail address by RolloutInput
    raise CommandError(
        f"approvers: {token[:80]!r} is not a Slack mention (@name) or an e-mail address"
    )


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _duration(value: str) -> int | str:
    """Seconds ("600") or ISO 8601 ("PT10M"), as the CLI reads durations."""
    return int(value.strip()) if value.strip().isdigit() else value.strip()


def _flag(name: str, value: str) -> bool:
    if value.strip().lower() not in (*YES, *NO):
        raise CommandError(f"{name}: {value[:40]!r} is not yes or no (e.g. {name}=yes)")
    return value.strip().lower() in YES


def _pilot(value: str) -> int:
    if not re.fullmatch(r"\d{1,6}", value.strip()):
        raise CommandError(f"pilot: {value[:40]!r} is not a whole number ≥ 0 (e.g. pilot=2)")
    return int(value)


# The option rules by name, for the `/patch` modal (bot.slack.modal), which reads the same fields.
parse_pilot = _pilot
split_list = _split


def parse_command(text: str) -> Command:
    """Read the text after `/patch` (at most MAX_TEXT characters); raises only CommandError."""
    tokens = _tokens(text)
    if not tokens:
        return HelpCommand()
    head, rest = tokens[0].lower(), tokens[1:]
    if head in ("help", "-h", "--help", "?"):
        return HelpCommand()
    if head == "list":
        if rest:
            raise CommandError("`list` takes no arguments")
        return ListCommand()
    if head == "status":
        if len(rest) > 1:
            raise CommandError("`status` takes at most one rollout id")
        return StatusCommand(_rollout_id(rest[0]) if rest else None)
    if head == "cancel":
        if len(rest) != 1:
            raise CommandError("`cancel` needs exactly one rollout id: /patch cancel <rollout id>")
        return CancelCommand(_rollout_id(rest[0]))
    if head == "schedule":
        return _parse_schedule(rest)
    return _parse_patch(tokens)


def _schedule_id(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
        raise CommandError(f"{value[:40]!r} is not a schedule id (letters, digits, '.', '_', '-')")
    return value


def _parse_schedule(tokens: list[str]) -> ScheduleCommand:
    if not tokens or tokens[0].lower() not in SCHEDULE_ACTIONS:
        raise CommandError(f"`schedule` needs one of: {', '.join(SCHEDULE_ACTIONS)}")
    action, rest = tokens[0].lower(), tokens[1:]
    if action == "list":
        if rest:
            raise CommandError("`schedule list` takes no arguments")
        return ScheduleCommand("list")
    if not rest:
        raise CommandError(f"`schedule {action}` needs a schedule id")
    schedule_id, rest = _schedule_id(rest[0]), rest[1:]
    if action != "create":
        if rest:
            raise CommandError(f"`schedule {action}` takes only the schedule id")
        return ScheduleCommand(action, schedule_id)
    cron: str | None = None
    timezone = "UTC"
    patch_tokens: list[str] = []
    for token in rest:
        key, _, value = token.partition("=")
        if key.lower() == "cron":
            cron = value.strip()
        elif key.lower() in ("tz", "timezone"):
            timezone = value.strip()
        else:
            patch_tokens.append(token)
    if not cron:
        raise CommandError('`schedule create` needs cron="…", e.g. cron="0 2 * * sat"')
    patch = _parse_patch(patch_tokens)
    if patch.dry_run:
        raise CommandError("a schedule runs real rollouts; leave out dry-run")
    return ScheduleCommand("create", schedule_id, cron=cron, timezone=timezone, patch=patch)


def _parse_patch(tokens: list[str]) -> PatchCommand:
    clusters: list[str] = []
    options: dict[str, str] = {}
    dry_run = False
    for token in tokens:
        if token.lower() in DRY_RUN_WORDS:
            dry_run = True
            continue
        if "=" not in token:
            clusters.extend(_split(token))
            continue
        key, _, value = token.partition("=")
        name = ALIASES.get(key.strip().lower(), key.strip().lower())
        if name not in OPTIONS:
            raise CommandError(
                f"unknown option {key[:40]!r} (options: {', '.join(OPTIONS)}); "
                "a cluster name cannot contain '='"
            )
        if name in options:
            raise CommandError(f"{name}= is given twice")
        if not value.strip() and name != "services":
            raise CommandError(f"{name}= needs a value")
        options[name] = value
    if not clusters:
        raise CommandError("name at least one cluster to patch, e.g. /patch cluster-a pilot=1")
    services: list[str] | None = None
    if "services" in options:
        raw = options["services"].strip()
        services = [] if raw.lower() in ("", "none", "-") else _split(raw)
    return PatchCommand(
        clusters=clusters,
        pilot=_pilot(options["pilot"]) if "pilot" in options else None,
        services=services,
        update=options.get("update"),
        approvers=(
            [parse_approver(part) for part in _split(options["approvers"])]
            if "approvers" in options
            else None
        ),
        dry_run=dry_run,
        profile=options.get("profile"),
        limit=options.get("limit"),
        gates={
            GATE_OPTIONS[name]: [value] if name in ("alert", "query") else _duration(value)
            for name, value in options.items()
            if name in GATE_OPTIONS
        }
        | {FLAG_OPTIONS[n]: _flag(n, v) for n, v in options.items() if n in FLAG_OPTIONS},
    )


def _first(layers: list[RolloutDefaults], name: str) -> object:
    for layer in layers:
        value = getattr(layer, name)
        if value is not None:
            return value
    return None


def apply_defaults(
    command: PatchCommand,
    defaults: SlackDefaults,
    channel_id: str | None,
    *,
    under_policy: bool = False,
) -> PatchPlan:
    """Fill what the command leaves out from the channel's, the clusters' and global defaults;
    `under_policy`: no approvers is fine (the approval policy names them)."""
    layers = defaults.layers(channel_id, command.clusters)
    pilot = command.pilot if command.pilot is not None else _first(layers, "pilot")
    services = command.services if command.services is not None else _first(layers, "services")
    update = command.update if command.update is not None else _first(layers, "update")
    approvers = command.approvers
    if approvers is None:
        configured = _first(layers, "approvers")
        approvers = [parse_approver(str(item)) for item in configured or []]  # type: ignore[attr-defined]
    if not approvers and not command.dry_run and not under_policy:
        raise CommandError(
            "no approvers: give approvers=@name,… (Slack mentions or e-mail addresses); none are "
            "configured for this channel or these clusters"
        )
    if not update:
        raise CommandError(
            'no update command: give update="…" (e.g. update="apt-get update && apt-get -y '
            'upgrade"); none is configured for this channel or these clusters'
        )
    return PatchPlan(
        clusters=command.clusters,
        pilot=1 if pilot is None else int(pilot),  # type: ignore[call-overload]
        services=list(services or []),  # type: ignore[call-overload]
        update=str(update),
        approvers=approvers,
        dry_run=command.dry_run,
        limit=command.limit,
        gates=command.gates,
        profile=command.profile,
    )


def rollout_input(
    plan: PatchPlan,
    requester_email: str,
    approver_emails: list[str],
    *,
    slack_channel: str | None = None,
    slack_thread_ts: str | None = None,
) -> RolloutInput:
    """The workflow input; raises CommandError with one line per problem (camelCase names)."""
    raw: dict[str, object] = {
        "targetClusters": plan.clusters,
        "pilotHostCount": plan.pilot,
        "approverEmails": approver_emails,
        "requesterEmail": requester_email,
        "updateCommand": plan.update,
        "serviceList": plan.services,
        "dryRun": plan.dry_run,
    }
    if plan.limit is not None:
        raw["hostPattern"] = plan.limit
    if plan.profile is not None:
        raw["updateProfile"] = plan.profile
    raw.update(plan.gates)
    if slack_channel:
        raw["slackChannel"] = slack_channel
    if slack_thread_ts:
        raw["slackThreadTs"] = slack_thread_ts
    try:
        # The same edge rules as the CLI (bot/cli/common.py): chat is user input too.
        return RolloutInput.at_edge(raw)
    except ValidationError as error:
        raise CommandError(describe_validation_error(error)) from None


def precheck(plan: PatchPlan, known_clusters: set[str] | None) -> None:
    """Everything that can be checked before the Slack identities are resolved.

    The clusters against the inventory (when it is known), then the plan through RolloutInput with
    stand-in identities, so that service names, the update command and e-mail addresses typed as
    approvers are refused with the model's own words.
    """
    if known_clusters is not None:
        unknown = [name for name in plan.clusters if name not in known_clusters]
        if unknown:
            raise CommandError(
                f"unknown cluster{'s' if len(unknown) > 1 else ''}: "
                f"{', '.join(name[:63] for name in unknown)} "
                f"(known: {', '.join(sorted(known_clusters)) or 'none'})"
            )
    approvers = [
        ref.email or f"approver-{index}@{_PLACEHOLDER_DOMAIN}"
        for index, ref in enumerate(plan.approvers)
    ]
    rollout_input(plan, f"requester@{_PLACEHOLDER_DOMAIN}", approvers)
