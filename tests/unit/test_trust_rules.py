"""The worker's approval rules (activities/trust.py) for one request, under a policy and without."""

from __future__ import annotations

import pytest

from activities.inventory import InventoryActivities
from activities.policy import parse_policy
from activities.trust import Trust, TrustError, profile_of
from workflows.approval import NO_APPROVERS, ApprovalRulesRequest, missing_approvals

UPDATE = "apt-get update && apt-get -y upgrade"
POLICY = f"""
people:
  alice: {{email: alice@example.com}}
  bob: {{email: bob@example.com}}
  carol: {{email: carol@example.com}}
  dave: {{email: dave@example.com}}
groups:
  web: [alice, carol]
clusters:
  cluster-a:
    requesters: [bob]
    approvers: [web]
    minApprovals: 2
    updateProfiles: {{security: "{UPDATE}"}}
    maxHosts: 3
    operators: [dave]
  "cluster-*":
    requesters: [bob]
    approvers: [carol]
    updateProfiles: {{security: "{UPDATE}"}}
    allowCustomUpdate: true
"""


def trust(policy: str | None = POLICY) -> Trust:
    return Trust(parse_policy(policy) if policy else None, InventoryActivities(None))


def ask(**changes: object) -> ApprovalRulesRequest:
    raw: dict[str, object] = {
        "rolloutId": "r1",
        "requesterEmail": "bob@example.com",
        "hostsByCluster": {"cluster-a": 3, "cluster-b": 2},
        "updateCommand": UPDATE,
    }
    return ApprovalRulesRequest.model_validate(raw | changes)


def test_each_cluster_gets_its_own_approvers_and_minimum_and_the_operators() -> None:
    rules = trust().rules(ask())
    assert rules.enforced and rules.refusal is None
    assert [(c.cluster, c.approvers, c.min_approvals) for c in rules.clusters] == [
        ("cluster-a", ["alice@example.com", "carol@example.com"], 2),
        ("cluster-b", ["carol@example.com"], 1),
    ]
    assert rules.operators == ["dave@example.com"]
    assert missing_approvals(rules, ["alice@example.com"]) == [
        "cluster-a: 1 more of carol@example.com",
        "cluster-b: 1 more of carol@example.com",
    ]
    assert missing_approvals(rules, ["alice@example.com", "carol@example.com"]) == []


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"requesterEmail": "mallory@example.com"},
            "requester mallory@example.com is not a person",
        ),
        (
            {"requesterEmail": "alice@example.com"},
            "alice may not start rollouts on cluster cluster-a",
        ),
        ({"updateCommand": "curl x | sh"}, "free-form update commands and scripts are not allowed"),
        ({"updateCommand": UPDATE, "hasScripts": True}, "free-form update commands"),
        ({"hostsByCluster": {"cluster-a": 4}}, "exceed maxHosts 3"),
        ({"updateProfile": "full"}, "update profile 'full' is not allowed"),
        ({"approverEmails": ["dave@example.com"]}, "only narrows whom to ask"),
        (
            {"approverEmails": ["alice@example.com"]},
            "needs 2 approvals, but approvers= names only 1",
        ),
        ({"hostsByCluster": {"web-x": 1}}, "no policy entry matches cluster web-x"),
    ],
)
def test_the_policy_refuses_with_the_reason(changes: dict[str, object], reason: str) -> None:
    refusal = trust().rules(ask(**changes)).refusal
    assert refusal is not None and reason in refusal


def test_a_free_form_command_is_allowed_where_the_policy_says_so() -> None:
    rules = trust().rules(
        ask(hostsByCluster={"cluster-b": 2}, updateCommand="apt-get -y dist-upgrade")
    )
    assert rules.refusal is None


def test_without_a_policy_the_rollouts_own_approvers_approve_and_one_is_enough() -> None:
    rules = trust(None).rules(ask(approverEmails=["alice@example.com", "bob@example.com"]))
    assert not rules.enforced
    assert rules.approvers() == ["alice@example.com"]  # never the requester
    assert missing_approvals(rules, ["alice@example.com"]) == []
    assert trust(None).rules(ask()).refusal == NO_APPROVERS
    assert trust(None).rules(ask(dryRun=True)).refusal is None


def test_a_named_profile_must_be_the_command() -> None:
    profiles = {"security": UPDATE, "full": "apt-get -y dist-upgrade"}
    assert profile_of(profiles, UPDATE, None) == "security"
    assert profile_of(profiles, "echo hi", None) is None
    assert profile_of(profiles, UPDATE, "security") == "security"
    with pytest.raises(TrustError, match="not profile 'full'"):
        profile_of(profiles, UPDATE, "full")
