"""The health gates' contract (issue 18): what a rollout, a cluster's group vars, the CLI and
Slack may ask for, refused with the field named; and the pure rules of the gate stage."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from activities.inventory import InventoryError, load_clusters
from bot.slack.commands import PatchCommand, PatchPlan, parse_command, rollout_input
from bot.slack.control import parse_control
from workflows.gate_rules import (
    GateControl,
    alert_hosts,
    describe_alerts,
    gate_refusal,
    poll_interval,
    span_text,
)
from workflows.gates import FiringAlert, GateQuery, GateSettings
from workflows.models import RolloutInput, describe_validation_error

BASE = {
    "targetClusters": ["cluster-a"],
    "pilotHostCount": 1,
    "approverEmails": ["alice@example.com"],
    "requesterEmail": "bob@example.com",
    "updateCommand": "apt-get -y upgrade",
}
ERRORS = 'avg(rate(errors_total{host=~"{hosts}"}[1m])) <= baseline * 1.2 + 0.01 min 2'


def refusal(**fields: object) -> str:
    with pytest.raises(ValidationError) as error:
        RolloutInput.at_edge({**BASE, **fields})
    return describe_validation_error(error.value)


def test_a_rollout_takes_soak_time_matchers_and_queries_in_the_forms_people_write() -> None:
    rollout = RolloutInput.at_edge(
        {
            **BASE,
            "soakTime": "PT10M",
            "gateTimeout": 1800,
            "alertMatchers": ['alertname=~"HighErrorRate|NodeDown", cluster="{cluster}"'],
            "gateQueries": [
                ERRORS,
                {"expression": 'max(load1{host=~"{hosts}"})', "factor": 2, "minSamples": 1},
            ],
        }
    )
    assert rollout.soak_time == timedelta(minutes=10)
    assert rollout.gate_timeout == timedelta(minutes=30)
    first, second = rollout.gate_queries
    assert first.expression == 'avg(rate(errors_total{host=~"{hosts}"}[1m]))'
    assert (first.factor, first.offset, first.min_samples) == (1.2, 0.01, 2)
    assert (second.factor, second.offset, second.min_samples) == (2.0, 0.0, 1)
    assert first.describe() == ERRORS
    assert RolloutInput.at_edge({**BASE, "soakTime": 0}).soak_time == timedelta(0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"soakTime": -5}, "soakTime: must be zero or a positive duration"),
        ({"gateTimeout": 0}, "gateTimeout: must be a positive duration"),
        (
            {"alertMatchers": ['cluster="x"} or up{job="y"']},
            'alertMatchers[0]: \'cluster="x"} or up{job="y"\' must be matchers only',
        ),
        (
            {"alertMatchers": ["instance={host}"]},
            "alertMatchers[0]: {host} at position 9 is outside",
        ),
        (
            {"gateQueries": ["avg(error_rate) < 2"]},
            "gateQueries[0]: 'avg(error_rate) < 2' must read",
        ),
        (
            {"gateQueries": ["avg(error_rate) <= baseline"]},
            "gateQueries[0].expression: must use {hosts}",
        ),
        (
            {"gateQueries": ['avg(error_rate{host=~"{baseline}"}) <= baseline']},
            "gateQueries[0].expression: is evaluated once for the hosts just patched",
        ),
        (
            {"alertMatchers": ['host=~"{baseline}"']},
            "alertMatchers[0]: {baseline} is for gate queries",
        ),
        (
            {"gateQueries": ['avg(error_rate{host="{hosts}"}) <= baseline']},
            "gateQueries[0].expression: {hosts} lists hosts: use it in a regex matcher",
        ),
    ],
)
def test_what_cannot_be_a_gate_is_refused_naming_the_field(
    fields: dict[str, object], message: str
) -> None:
    assert message in refusal(**fields)


def test_the_rollouts_own_gates_win_over_the_clusters_group_vars() -> None:
    cluster = GateSettings(
        soak_time=timedelta(minutes=5),
        gate_timeout=timedelta(minutes=20),
        alert_matchers=['cluster="{cluster}"'],
    )
    own = GateSettings(soak_time=timedelta(0), gate_queries=[GateQuery.model_validate(ERRORS)])
    merged = cluster.under(own)
    assert merged.soak_time == timedelta(0)  # an explicit 0 turns the cluster's soak off
    assert merged.gate_timeout == timedelta(minutes=20)
    assert merged.alert_matchers == ['cluster="{cluster}"']
    assert merged.gate_queries == own.gate_queries
    assert merged.asks_prometheus and not GateSettings(soak_time=timedelta(1)).asks_prometheus


def test_a_clusters_gates_come_from_its_group_vars(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yml"
    path.write_text(
        "all:\n  children:\n    c1:\n      hosts: {h1: {}, h2: {}}\n      vars:\n"
        "        patchpilot_soak_time: PT10M\n"
        "        patchpilot_gate_timeout: 900\n"
        '        patchpilot_alert_matchers: [\'alertname="NodeDown", cluster="{cluster}"\']\n'
        f"        patchpilot_gate_queries: ['{ERRORS}']\n"
        "    c2:\n      hosts: {h3: {}}\n"
    )
    clusters = load_clusters(path)
    gates = clusters["c1"][2]
    assert gates.soak_time == timedelta(minutes=10)
    assert gates.gate_timeout == timedelta(minutes=15)
    assert gates.alert_matchers == ['alertname="NodeDown", cluster="{cluster}"']
    assert gates.gate_queries[0].min_samples == 2
    assert clusters["c2"][2] == GateSettings()
    path.write_text(
        "all:\n  children:\n    c1:\n      hosts: {h1: {}}\n      vars:\n"
        "        patchpilot_soak_time: soon\n"
    )
    with pytest.raises(InventoryError, match=r"group 'c1': patchpilot_soak_time: "):
        load_clusters(path)


def test_a_gate_on_prometheus_without_one_is_refused_at_the_edge() -> None:
    own = RolloutInput.at_edge({**BASE, "gateQueries": [ERRORS]})
    assert gate_refusal(own, {}, prometheus=True) is None
    assert gate_refusal(own, {}, prometheus=False) == (
        "gateQueries: a gate that asks Prometheus is refused: PatchPilot has no Prometheus to ask "
        "(PATCHPILOT_PROMETHEUS_URL is not set)"
    )
    plain = RolloutInput.at_edge(BASE)
    inventory = {"cluster-a": GateSettings(alert_matchers=['cluster="{cluster}"'])}
    refused = gate_refusal(plain, inventory, prometheus=False)
    assert refused is not None and refused.startswith(
        "targetClusters: cluster-a gate their waves on Prometheus (inventory "
        "patchpilot_alert_matchers / patchpilot_gate_queries)"
    )
    soak_only = {"cluster-a": GateSettings(soak_time=timedelta(minutes=5))}
    assert gate_refusal(plain, soak_only, prometheus=False) is None  # a soak needs no Prometheus
    dry = RolloutInput.at_edge({**BASE, "dryRun": True, "gateQueries": [ERRORS]})
    assert gate_refusal(dry, {}, prometheus=False) is None  # a dry run runs no gate


def test_slack_takes_the_gate_options() -> None:
    command = parse_command(
        "cluster-a soak=600 gate-timeout=PT20M "
        'alert=\'alertname="HighErrorRate", cluster="{cluster}"\' '
        "query='avg(error_rate{host=~\"{hosts}\"}) <= baseline * 1.5'"
    )
    assert isinstance(command, PatchCommand)
    plan = PatchPlan(clusters=["cluster-a"], pilot=1, services=[], update="true")
    plan = PatchPlan(**{**plan.__dict__, "gates": command.gates})
    rollout = rollout_input(plan, "bob@example.com", ["alice@example.com"])
    assert rollout.soak_time == timedelta(minutes=10)
    assert rollout.gate_timeout == timedelta(minutes=20)
    assert rollout.alert_matchers == ['alertname="HighErrorRate", cluster="{cluster}"']
    assert rollout.gate_queries[0].factor == 1.5
    bad = PatchPlan(**{**plan.__dict__, "gates": {"soakTime": "later"}})
    with pytest.raises(ValueError, match="soakTime"):
        rollout_input(bad, "bob@example.com", ["alice@example.com"])


def test_the_soak_is_cut_or_extended_from_slack_and_the_cli_model() -> None:
    cut = parse_control("soak patch-a-1 cut")
    assert cut is not None and (cut.action, cut.soak, cut.by) == ("gate", "cut", None)
    longer = parse_control("soak patch-a-1 extend PT5M")
    assert longer is not None and (longer.soak, longer.by) == ("extend", "PT5M")
    with pytest.raises(ValueError, match="`soak` reads"):
        parse_control("soak patch-a-1 shorten")
    assert parse_control("gate patch-a-1") is None  # the update's own name is not a command
    control = GateControl.model_validate(
        {"person": "Bob@Example.com", "action": "extend", "by": 60}
    )
    assert (control.person, control.by) == ("bob@example.com", timedelta(seconds=60))
    with pytest.raises(ValidationError):
        GateControl.model_validate({"person": "bob@example.com", "action": "stop"})


def test_an_alert_counts_against_the_hosts_its_labels_name() -> None:
    on_a1 = FiringAlert(name="HighErrorRate", labels={"instance": "a1:9100"})
    on_a10 = FiringAlert(name="HighErrorRate", labels={"host": "a10"})
    fleet_wide = FiringAlert(name="NodeDown", labels={"cluster": "cluster-a"})
    assert alert_hosts(on_a1, ["a1", "a10"]) == ["a1"]
    assert alert_hosts(on_a10, ["a1", "a10"]) == ["a10"]  # a1 is not a prefix match of a10
    assert alert_hosts(fleet_wide, ["a1"]) == []
    assert describe_alerts([on_a1, fleet_wide]) == "HighErrorRate on a1:9100, NodeDown"


def test_gate_waits_poll_within_bounds_and_read_as_people_say_them() -> None:
    assert poll_interval(timedelta(seconds=5)) == timedelta(seconds=1)
    assert poll_interval(timedelta(seconds=100)) == timedelta(seconds=10)
    assert poll_interval(timedelta(hours=1)) == timedelta(seconds=30)
    assert span_text(timedelta(minutes=10)) == "10 min"
    assert span_text(timedelta(seconds=90)) == "90 s"


def test_the_card_the_summary_and_the_thread_show_the_gate() -> None:
    from activities.notify import summary_text
    from bot.slack import blocks
    from workflows.models import (
        ClusterProgress,
        HostProgress,
        Phase,
        RolloutProgress,
        RolloutSummary,
    )

    soaking = "cluster-a: soaking 10 min after the pilots; next wave 2/3 at 14:32 UTC"
    progress = RolloutProgress(
        rollout_id="patch-a-1",
        phase=Phase.PATCHING,
        requester_email="bob@example.com",
        approver_emails=["alice@example.com"],
        clusters=[
            ClusterProgress(name="cluster-a", hosts=[HostProgress(name="a1", cluster="cluster-a")])
        ],
        gate=soaking,
    )
    card = blocks.as_dicts(blocks.status_card(blocks.CardInfo.from_progress("patch-a-1", progress)))
    assert any(soaking in str(block) for block in card)
    decision = "2026-12-01 14:42:03 UTC cluster-a: query gate after the pilots passed: …"
    summary = RolloutSummary(
        rollout_id="patch-a-1",
        phase=Phase.SUCCEEDED,
        patched=3,
        failed=0,
        skipped=0,
        duration_seconds=700,
        message="every host was patched",
        gates=[decision],
    )
    assert f"Gates:\n  {decision}" in summary_text(summary)
    assert f"*Gates*\n• {decision}" in blocks.summary_message(summary)


def test_a_continued_run_keeps_each_clusters_gates_and_the_decisions_so_far() -> None:
    from datetime import UTC, datetime

    from workflows.models import HostTarget
    from workflows.state import RolloutState

    now = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
    rollout = RolloutInput.at_edge({**BASE, "soakTime": 60})
    state = RolloutState(rollout, "rollout-1", now)
    state.add_cluster("cluster-a", [HostTarget(name="a1", cluster="cluster-a", address="a1")], [])
    settings = GateSettings(soak_time=timedelta(minutes=1), alert_matchers=['cluster="{cluster}"'])
    state.gate_settings["cluster-a"] = settings
    state.progress.gates.append("2026-12-01 14:10:00 UTC cluster-a: query gate … passed")
    carried = rollout.model_copy(update={"continued": state.carry(now)})
    # Through the wire and back, as continue-as-new carries it.
    carried = RolloutInput.model_validate(carried.model_dump(mode="json"))
    again = RolloutState(carried, "rollout-1", now)
    assert again.gate_settings == {"cluster-a": settings}
    assert again.progress.gates == state.progress.gates
