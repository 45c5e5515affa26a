from datetime import timedelta

import pytest
from pydantic import ValidationError
from pydantic_core import to_json

from workflows.models import (
    ApprovalDecision,
    HostJob,
    HostStepInput,
    HostTarget,
    RolloutInput,
    describe_validation_error,
)

GOOD = {
    "targetClusters": ["cluster-a", "cluster-b"],
    "pilotHostCount": 2,
    "approverEmails": ["alice@example.com"],
    "requesterEmail": "bob@example.com",
    "vaultAddress": "https://vault.example.com:8200",
    "secretPathPrefix": "patch-deploy",
    "updateCommand": "apt-get update && apt-get -y upgrade",
    "serviceList": ["postgresql", "nginx"],
}


def problems(raw: dict) -> str:
    with pytest.raises(ValidationError) as caught:
        RolloutInput.model_validate(raw)
    return describe_validation_error(caught.value)


def test_spec_input_is_accepted_with_spec_defaults() -> None:
    rollout = RolloutInput.model_validate(GOOD)
    assert rollout.target_clusters == ["cluster-a", "cluster-b"]
    assert rollout.max_concurrency == 1
    assert rollout.max_failures == 0
    assert rollout.approval_timeout == timedelta(hours=24)
    assert rollout.pre_downtime_scripts == []


def test_wire_format_is_the_spec_camel_case_and_round_trips() -> None:
    rollout = RolloutInput.model_validate(GOOD)
    wire = to_json(rollout).decode()
    assert '"targetClusters"' in wire and '"pilotHostCount"' in wire
    assert "target_clusters" not in wire
    assert RolloutInput.model_validate_json(wire) == rollout


@pytest.mark.parametrize(
    ("value", "expected"), [(90, timedelta(seconds=90)), ("PT2H", timedelta(hours=2))]
)
def test_approval_timeout_takes_seconds_or_iso8601(value: object, expected: timedelta) -> None:
    assert (
        RolloutInput.model_validate({**GOOD, "approvalTimeout": value}).approval_timeout == expected
    )


def test_vault_token_is_refused_because_it_would_land_in_history() -> None:
    with pytest.raises(ValidationError) as caught:
        RolloutInput.at_edge({**GOOD, "vaultToken": "hvs.secret-token-value"})
    message = describe_validation_error(caught.value)
    assert message.startswith("vaultToken:")
    assert "plain text in Temporal history" in message
    assert "hvs.secret-token-value" not in message


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"targetClusters": []}, "targetClusters", "at least 1"),
        ({"targetClusters": ["a;rm -rf /"]}, "targetClusters[0]", "shell metacharacters"),
        ({"targetClusters": ["a", "a"]}, "targetClusters", "listed twice"),
        ({"pilotHostCount": -1}, "pilotHostCount", "greater than or equal to 0"),
        ({"approverEmails": ["not-an-email"]}, "approverEmails[0]", "not a valid e-mail"),
        ({"requesterEmail": "bob@"}, "requesterEmail", "not a valid e-mail"),
        ({"serviceList": ["nginx", "$(reboot)"]}, "serviceList[1]", "not allowed"),
        ({"serviceList": ["nginx\nreboot"]}, "serviceList[0]", "not allowed"),
        ({"updateCommand": "   "}, "updateCommand", "must not be empty"),
        ({"updateCommand": "x" * 9000}, "updateCommand", "limit is 8192"),
        ({"maxConcurrency": 0}, "maxConcurrency", "must be between 1 and 1000 hosts"),
        ({"maxConcurrency": "0%"}, "maxConcurrency", "percentage of the cluster"),
        ({"maxFailures": "150%"}, "maxFailures", "percentage of the cluster"),
        ({"maxFailures": "two"}, "maxFailures", "neither a whole number"),
        ({"waves": [1, "x%"]}, "waves[1]", "percentage of the cluster"),
        ({"approvalTimeout": -5}, "approvalTimeout", "positive duration"),
        ({"vaultAddress": "vault.example.com"}, "vaultAddress", "http(s) URL"),
        ({"secretPathPrefix": "../etc"}, "secretPathPrefix", "pattern"),
        ({"surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_bad_input_names_the_field_and_the_reason(change: dict, field: str, reason: str) -> None:
    message = problems({**GOOD, **change})
    assert any(line.startswith(f"{field}:") and reason in line for line in message.splitlines()), (
        message
    )


def test_requester_alone_cannot_be_the_approver() -> None:
    message = problems({**GOOD, "approverEmails": ["bob@example.com"]})
    assert "cannot approve their own rollout" in message


def test_emails_are_compared_case_insensitively() -> None:
    rollout = RolloutInput.model_validate({**GOOD, "approverEmails": ["Alice@Example.COM"]})
    assert rollout.approver_emails == ["alice@example.com"]
    assert ApprovalDecision.model_validate({"approver": "ALICE@example.com"}).approver == (
        "alice@example.com"
    )


def test_vault_token_is_accepted_at_the_edge_only_with_payload_encryption() -> None:
    raw = {**GOOD, "vaultToken": "hvs.secret-token-value"}
    rollout = RolloutInput.at_edge(raw, payload_encryption=True)
    assert rollout.vault_token == "hvs.secret-token-value"
    assert "hvs.secret-token-value" not in repr(rollout)


def test_a_dry_run_needs_no_approver() -> None:
    rollout = RolloutInput.model_validate({**GOOD, "approverEmails": [], "dryRun": True})
    assert rollout.dry_run and rollout.approver_emails == []


def test_counts_accept_numbers_and_percentages_of_the_cluster() -> None:
    rollout = RolloutInput.model_validate(
        {**GOOD, "maxConcurrency": "25%", "maxFailures": " 10 % ", "waves": [1, "5", "50%"]}
    )
    assert rollout.max_concurrency == "25%"
    assert rollout.max_failures == "10%"
    assert rollout.waves == [1, 5, "50%"]


def test_continue_as_new_state_is_refused_from_users() -> None:
    carry = {"startedAt": "2026-11-27T00:00:00Z", "targets": {}}
    with pytest.raises(ValidationError) as caught:
        RolloutInput.at_edge({**GOOD, "continued": carry})
    assert "continued: is set by PatchPilot" in describe_validation_error(caught.value)
    assert RolloutInput.model_validate({**GOOD, "continued": carry}).continued is not None


def test_carried_targets_keep_each_command_set_once() -> None:
    from workflows.models import (
        HostCommands,
        HostTarget,
        RolloutCarry,
        pack_targets,
        unpack_targets,
    )

    custom = HostCommands(health_check="curl -fsS localhost/health")
    hosts = [
        HostTarget(name=f"h{i}", cluster="c", address=f"10.0.0.{i}", commands=custom)
        for i in range(1, 4)
    ] + [HostTarget(name="h9", cluster="c", address="10.0.0.9")]
    targets, sets, index_of = pack_targets({"c": hosts})
    carry = RolloutCarry.model_validate_json(
        RolloutCarry(
            started_at="2026-11-27T00:00:00Z",
            targets=targets,
            command_sets=sets,
            command_of=index_of,
        ).model_dump_json()
    )
    assert sets == [custom] and index_of == {"c": [0, 0, 0, -1]}
    assert "curl" not in carry.model_dump_json().replace(custom.health_check, "", 1)
    assert unpack_targets(carry) == {"c": hosts}


def test_the_host_job_is_the_rollout_fields_of_the_same_name() -> None:
    from workflows.models import HostJob, HostStepInput, HostTarget

    raw = {
        **GOOD,
        "vaultToken": "hvs.secret-token-value",
        "preUpdateScripts": ["echo before"],
        "drainTimeout": "PT2M",
        "rebootPolicy": "never",
        "slackChannel": "C123",
    }
    rollout = RolloutInput.at_edge(raw, payload_encryption=True)
    job = HostJob.from_rollout("rollout-1", rollout)
    assert job.rollout_id == "rollout-1"
    for name in HostJob.model_fields:
        if name not in ("rollout_id", "approvals", "grants"):
            assert getattr(job, name) == getattr(rollout, name), name
    step = HostStepInput(job=job, host=HostTarget(name="h1", cluster="cluster-a", address="h1"))
    assert step.rollout_id == "rollout-1"
    assert "hvs.secret-token-value" not in repr(step)
    assert HostStepInput.model_validate_json(step.model_dump_json()) == step


def test_no_model_of_the_contract_has_a_default_that_is_copied_for_every_instance() -> None:
    # pydantic-core deep-copies an unhashable default (`= []`, `= {}`) each time a model is
    # read without that field: 10,000 copy.deepcopy calls for one 10,000-host progress answer
    # (10 % of the worker reading it). Defaults are hashable or come from a factory.
    import importlib
    import pkgutil

    import workflows
    from workflows.fields import ContractModel

    for info in pkgutil.iter_modules(workflows.__path__):
        importlib.import_module(f"workflows.{info.name}")
    models: list[type[ContractModel]] = []
    todo: list[type[ContractModel]] = [ContractModel]
    while todo:
        model = todo.pop()
        models.append(model)
        todo.extend(model.__subclasses__())
    copied = []
    for model in models:
        for name, field in model.model_fields.items():
            if field.default_factory is not None or field.is_required():
                continue
            try:
                hash(field.default)
            except TypeError:
                copied.append(f"{model.__module__}.{model.__name__}.{name} = {field.default!r}")
    assert len(models) > 30
    assert copied == [], "use Field(default_factory=...) for: " + ", ".join(copied)


def test_a_step_input_is_unchanged_on_the_wire_unless_it_resumes() -> None:
    # Workers of the engine before v8 forbid unknown fields: every step input but the
    # preconditions run again after a lost workflow task must read to them as before.
    job = HostJob.from_rollout(
        "r-1",
        RolloutInput.model_validate(
            {
                "targetClusters": ["a"],
                "pilotHostCount": 1,
                "approverEmails": ["x@example.com"],
                "requesterEmail": "y@example.com",
                "updateCommand": "true",
            }
        ),
    )
    step = HostStepInput(job=job, host=HostTarget(name="a1", cluster="a", address="a1"))
    assert "resumed" not in to_json(step).decode()
    resumed = step.model_copy(update={"resumed": True})
    assert '"resumed":true' in to_json(resumed).decode()
    assert HostStepInput.model_validate_json(to_json(resumed)).resumed is True
