"""`/patch` parsing, defaults and pre-checks: pure functions, no Slack, no Temporal."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.slack import trust
from bot.slack.commands import (
    USAGE,
    ApproverRef,
    CancelCommand,
    CommandError,
    HelpCommand,
    ListCommand,
    PatchCommand,
    PatchPlan,
    StatusCommand,
    apply_defaults,
    parse_approver,
    parse_command,
    precheck,
    rollout_input,
)
from bot.slack.config import RolloutDefaults, SlackDefaults
from bot.slack.context import SlackBot
from workflows.families import OS_UPDATE_PROFILES

UPDATE = "apt-get update && apt-get -y upgrade"
KNOWN = {"cluster-a", "cluster-b"}


def test_the_full_example_from_the_issue() -> None:
    command = parse_command(
        f'cluster-a cluster-b pilot=2 services=nginx,postgresql update="{UPDATE}" '
        "approvers=@alice,<@U123>,bob@example.com"
    )
    assert command == PatchCommand(
        clusters=["cluster-a", "cluster-b"],
        pilot=2,
        services=["nginx", "postgresql"],
        update=UPDATE,
        approvers=[
            ApproverRef(handle="alice"),
            ApproverRef(user_id="U123"),
            ApproverRef(email="bob@example.com"),
        ],
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", HelpCommand()),
        ("help", HelpCommand()),
        ("  HELP ", HelpCommand()),
        ("list", ListCommand()),
        ("status", StatusCommand(None)),
        (
            "status patch-cluster-a-20261127-0101-ab12",
            StatusCommand("patch-cluster-a-20261127-0101-ab12"),
        ),
        ("cancel patch-x", CancelCommand("patch-x")),
    ],
)
def test_subcommands(text: str, expected: object) -> None:
    assert parse_command(text) == expected


def test_slack_escaped_mentions_and_mailto_links_and_smart_quotes() -> None:
    command = parse_command(
        "cluster-a update=“apt-get -y upgrade” "
        "approvers=<@U0ALICE|alice>,<mailto:Bob@Example.com|Bob@Example.com>"
    )
    assert isinstance(command, PatchCommand)
    assert command.update == "apt-get -y upgrade"
    assert command.approvers == [
        ApproverRef(user_id="U0ALICE"),
        ApproverRef(email="bob@example.com"),
    ]


def test_services_none_means_no_services_and_commas_split_clusters() -> None:
    command = parse_command("cluster-a,cluster-b services=none approvers=a@example.com")
    assert isinstance(command, PatchCommand)
    assert command.clusters == ["cluster-a", "cluster-b"] and command.services == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("cluster-a color=blue", "unknown option 'color'"),
        ("cluster-a pilot=two", "pilot: 'two' is not a whole number"),
        ("cluster-a pilot=-1", "pilot: '-1' is not a whole number"),
        ("cluster-a pilot=1 pilot=2", "pilot= is given twice"),
        ("cluster-a update=", "update= needs a value"),
        ('cluster-a update="apt-get', "close every quote"),
        ("pilot=1", "name at least one cluster"),
        (
            "cluster-a approvers=not-an-address",
            "approvers: 'not-an-address' is not a Slack mention",
        ),
        ("status a b", "at most one rollout id"),
        ("cancel", "needs exactly one rollout id"),
        ("status 'bad id;rm'", "is not a rollout id"),
        ("list now", "takes no arguments"),
    ],
)
def test_malformed_commands_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(CommandError) as error:
        parse_command(text)
    assert problem in str(error.value)


def plan_of(text: str, defaults: SlackDefaults | None = None, channel: str = "C1") -> PatchPlan:
    command = parse_command(text)
    assert isinstance(command, PatchCommand)
    return apply_defaults(command, defaults or SlackDefaults(), channel)


def test_defaults_command_then_channel_then_cluster_then_global() -> None:
    defaults = SlackDefaults(
        defaults=RolloutDefaults(pilot=1, update=UPDATE, approvers=["ops@example.com"]),
        clusters={"cluster-b": RolloutDefaults(services=["nginx"], pilot=3)},
        channels={"C1": RolloutDefaults(approvers=["<@U0ALICE>"], pilot=2)},
    )
    plan = plan_of("cluster-a cluster-b", defaults)
    assert plan.pilot == 2 and plan.services == ["nginx"] and plan.update == UPDATE
    assert plan.approvers == [ApproverRef(user_id="U0ALICE")]
    elsewhere = plan_of("cluster-b", defaults, channel="C2")
    assert elsewhere.pilot == 3 and elsewhere.approvers == [ApproverRef(email="ops@example.com")]
    explicit = plan_of("cluster-b pilot=0 services=none approvers=x@example.com", defaults)
    assert explicit.pilot == 0 and explicit.services == []
    assert explicit.approvers == [ApproverRef(email="x@example.com")]


def test_no_approvers_given_or_configured_is_refused() -> None:
    with pytest.raises(CommandError, match="no approvers"):
        plan_of(f'cluster-a update="{UPDATE}"')


def test_no_update_command_given_or_configured_is_refused() -> None:
    with pytest.raises(CommandError, match="no update command"):
        plan_of("cluster-a approvers=a@example.com")


def test_precheck_refuses_unknown_clusters_naming_the_known_ones() -> None:
    plan = plan_of(f'cluster-a cluster-z update="{UPDATE}" approvers=a@example.com')
    with pytest.raises(CommandError) as error:
        precheck(plan, KNOWN)
    assert str(error.value) == "unknown cluster: cluster-z (known: cluster-a, cluster-b)"


@pytest.mark.parametrize("service", ["nginx;reboot", "nginx$(id)", "a b", "`x`", "-rf"])
def test_precheck_refuses_services_with_shell_metacharacters(service: str) -> None:
    plan = plan_of(f"cluster-a 'services={service}' update=\"{UPDATE}\" approvers=a@example.com")
    with pytest.raises(CommandError) as error:
        precheck(plan, KNOWN)
    assert "serviceList[0]: service name" in str(error.value)
    assert "shell metacharacters" in str(error.value)


def test_precheck_refuses_a_malformed_email_approver_and_a_duplicate() -> None:
    plan = plan_of(f'cluster-a update="{UPDATE}" approvers=bob@')
    with pytest.raises(CommandError, match=r"approverEmails\[0\]: 'bob@' is not a valid e-mail"):
        precheck(plan, KNOWN)
    twice = plan_of(f'cluster-a update="{UPDATE}" approvers=a@example.com,A@example.com')
    with pytest.raises(CommandError, match="listed twice"):
        precheck(twice, KNOWN)


def test_precheck_passes_a_good_plan_and_rollout_input_refuses_self_approval() -> None:
    plan = plan_of(f'cluster-a pilot=1 update="{UPDATE}" approvers=<@U0ALICE>')
    precheck(plan, KNOWN)
    precheck(plan, None)  # no inventory configured: the workflow checks the clusters
    built = rollout_input(
        plan,
        "bob@example.com",
        ["alice@example.com"],
        slack_channel="CPATCH",
        slack_thread_ts="1700000001.000002",
    )
    assert built.slack_channel == "CPATCH" and built.slack_thread_ts == "1700000001.000002"
    with pytest.raises(CommandError, match="requester cannot approve their own rollout"):
        rollout_input(plan, "bob@example.com", ["bob@example.com"])


def test_parse_approver_forms() -> None:
    assert parse_approver("W0ABC") == ApproverRef(user_id="W0ABC")
    assert parse_approver("@bob.smith") == ApproverRef(handle="bob.smith")
    assert str(ApproverRef(user_id="U1")) == "<@U1>"
    with pytest.raises(CommandError):
        parse_approver("@")


def test_usage_mentions_every_subcommand() -> None:
    for word in ("/patch status", "/patch list", "/patch cancel", "/patch help", "approvers="):
        assert word in USAGE


# ---- properties: whatever is typed, the answer is a command or a CommandError ----------------

TOKENS = st.sampled_from(
    [
        "cluster-a",
        "cluster-b",
        "pilot=",
        "pilot=1",
        "pilot=x",
        "services=",
        "services=nginx",
        "services=a;b",
        "update=",
        'update="apt-get -y upgrade"',
        "approvers=",
        "approvers=@alice",
        "approvers=<@U1>",
        "approvers=a@b.co",
        "help",
        "status",
        "list",
        "cancel",
        "=",
        '"',
        "'",
        "<@",
        "x=y",
        ",",
        "“",
        "\\",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(TOKENS, st.text(max_size=20)), max_size=8))
def test_parser_never_crashes_on_token_soup(tokens: list[str]) -> None:
    check_total(" ".join(tokens))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_parser_never_crashes_on_any_text(text: str) -> None:
    check_total(text)


def check_total(text: str) -> None:
    try:
        command = parse_command(text)
    except CommandError as error:
        assert str(error).strip(), "an error must say what is wrong"
        return
    if isinstance(command, PatchCommand):
        defaults = SlackDefaults(
            defaults=RolloutDefaults(update=UPDATE, approvers=["o@example.com"])
        )
        try:
            plan = apply_defaults(command, defaults, "C1")
            precheck(plan, KNOWN)
        except CommandError as error:
            assert str(error).strip()
            return
        assert set(plan.clusters) <= KNOWN
        assert plan.pilot >= 0 and plan.approvers


def test_defaults_file_is_read_and_its_mistakes_are_named(tmp_path) -> None:
    from bot.slack.config import DefaultsError, load_defaults

    good = tmp_path / "defaults.yml"
    good.write_text(
        "defaults: {pilot: 1, update: 'apt-get -y upgrade'}\n"
        "clusters: {cluster-a: {services: 'nginx, postgresql'}}\n"
        "channels: {C1: {approvers: [alice@example.com, '<@U0BOB>']}}\n"
    )
    loaded = load_defaults(good)
    plan = plan_of("cluster-a", loaded)
    assert plan.services == ["nginx", "postgresql"] and plan.update == "apt-get -y upgrade"
    assert plan.approvers == [ApproverRef(email="alice@example.com"), ApproverRef(user_id="U0BOB")]
    assert load_defaults(None) == SlackDefaults()
    bad = tmp_path / "bad.yml"
    bad.write_text("defaults: {pilots: 2}\n")
    with pytest.raises(DefaultsError, match="pilots"):
        load_defaults(bad)
    with pytest.raises(DefaultsError, match="cannot read"):
        load_defaults(tmp_path / "missing.yml")
    (tmp_path / "broken.yml").write_text("defaults: [\n")
    with pytest.raises(DefaultsError, match="not valid YAML"):
        load_defaults(tmp_path / "broken.yml")


def test_dry_run_word_and_schedule_commands_parse() -> None:
    from bot.slack.commands import ScheduleCommand

    dry = parse_command('cluster-a dry-run update="apt-get -y upgrade"')
    assert isinstance(dry, PatchCommand) and dry.dry_run and dry.clusters == ["cluster-a"]
    created = parse_command(
        'schedule create weekly-a cron="0 2 * * sat" tz=Europe/Paris cluster-a pilot=2'
    )
    assert isinstance(created, ScheduleCommand)
    assert (created.action, created.schedule_id, created.cron, created.timezone) == (
        "create",
        "weekly-a",
        "0 2 * * sat",
        "Europe/Paris",
    )
    assert created.patch is not None and created.patch.pilot == 2
    assert parse_command("schedule pause weekly-a") == ScheduleCommand("pause", "weekly-a")
    assert parse_command("schedule list") == ScheduleCommand("list")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("schedule", "needs one of: list, create"),
        ("schedule explode x", "needs one of"),
        ("schedule pause", "needs a schedule id"),
        ("schedule pause a;b", "is not a schedule id"),
        ("schedule create w cluster-a", 'needs cron="…"'),
        ('schedule create w cron="0 2 * * sat" cluster-a dry-run', "leave out dry-run"),
    ],
)
def test_bad_schedule_commands_say_why(text: str, problem: str) -> None:
    with pytest.raises(CommandError, match=re.escape(problem)):
        parse_command(text)


def test_without_a_policy_profile_is_an_os_family_profile_as_on_the_cli() -> None:
    bot = cast(SlackBot, SimpleNamespace(policy=None, defaults=SlackDefaults()))

    def plan(text: str) -> PatchPlan:
        command = parse_command(text)
        assert isinstance(command, PatchCommand)
        return trust.plan_of(bot, command, "C1")

    found = plan("cluster-a profile=security approvers=a@example.com")
    assert found.update == OS_UPDATE_PROFILES["security"] and found.profile == "security"
    built = rollout_input(found, "bob@example.com", ["a@example.com"])
    assert built.update_profile == "security"
    assert built.update_command == OS_UPDATE_PROFILES["security"]
    with pytest.raises(CommandError) as error:
        plan("cluster-a profile=kernel approvers=a@example.com")
    assert str(error.value) == (
        "profile=: without an approval policy (PATCHPILOT_POLICY) the profiles are PatchPilot's "
        "own: security, full; 'kernel' is not one"
    )
    with pytest.raises(CommandError, match="profile= and update= both name the update command"):
        plan('cluster-a profile=full update="apt-get -y upgrade" approvers=a@example.com')
