"""`/patch <cluster> limit=<Ansible host pattern>`: parsed, carried to the rollout as
`hostPattern`, and refused with the field named when Ansible would read it as something else."""

from __future__ import annotations

import pytest

from bot.slack.commands import (
    USAGE,
    CommandError,
    PatchCommand,
    apply_defaults,
    parse_command,
    precheck,
    rollout_input,
)
from bot.slack.config import SlackDefaults

UPDATE = "apt-get update && apt-get -y upgrade"


def plan(text: str):
    command = parse_command(text)
    assert isinstance(command, PatchCommand)
    return apply_defaults(command, SlackDefaults(), "C1")


@pytest.mark.parametrize("pattern", ["web[0:2]", "cluster-a:&dc1", "!a3", "a1,a2", "~web0[12]"])
def test_limit_reaches_the_rollout_as_host_pattern(pattern: str) -> None:
    built = rollout_input(
        plan(f'cluster-a pilot=1 update="{UPDATE}" approvers=alice@example.com limit={pattern}'),
        "bob@example.com",
        ["alice@example.com"],
    )
    assert built.host_pattern == pattern
    assert built.model_dump(by_alias=True)["hostPattern"] == pattern


def test_no_limit_means_the_whole_cluster() -> None:
    built = rollout_input(
        plan(f'cluster-a update="{UPDATE}" approvers=alice@example.com'),
        "bob@example.com",
        ["alice@example.com"],
    )
    assert built.host_pattern is None


@pytest.mark.parametrize(
    ("option", "problem"),
    [
        ("limit=@/etc/hosts", "hostPattern: must not name a file"),
        ("limit=", "limit= needs a value"),
        ("limit=a limit=b", "limit= is given twice"),
    ],
)
def test_bad_limits_are_refused_naming_the_field(option: str, problem: str) -> None:
    with pytest.raises(CommandError, match=problem):
        precheck(
            plan(f'cluster-a update="{UPDATE}" approvers=alice@example.com {option}'),
            {"cluster-a"},
        )


def test_usage_shows_the_limit_option() -> None:
    assert "limit=" in USAGE
