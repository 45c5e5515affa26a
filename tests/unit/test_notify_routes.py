"""Notification settings: per-cluster Teams webhooks, the JSON webhook, and `notify_routes`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from activities import notify
from activities.notify import Message
from activities.notify.build import teams_from_settings, webhook_from_settings
from activities.notify.routing import CHANNELS, EVENTS, RoutedNotifier, route
from bot.settings import Settings, describe_settings_error
from workflows.models import RolloutNotice

SECRET = "sig=Zm9vYmFyc2VjcmV0"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "PATCHPILOT_CONFIG",
        "PATCHPILOT_TEAMS_WEBHOOK_URL",
        "PATCHPILOT_TEAMS_WEBHOOKS",
        "PATCHPILOT_WEBHOOK_URL",
        "PATCHPILOT_NOTIFY_ROUTES",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def from_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> Settings:
    config = tmp_path / "patchpilot.toml"
    config.write_text(text)
    monkeypatch.setenv("PATCHPILOT_CONFIG", str(config))
    return Settings()


def problem(error: pytest.ExceptionInfo[ValidationError]) -> str:
    return describe_settings_error(error.value)


def test_per_cluster_webhooks_and_routes_from_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = from_toml(
        tmp_path,
        monkeypatch,
        'webhook_url = "https://hooks.example.com/patchpilot"\n'
        f'teams_webhooks = {{ "cluster-a" = "https://a.example.com/x?{SECRET}" }}\n'
        "[notify_routes]\n"
        'email = ["approval-request", "failure", "summary"]\n'
        'teams = ["approval-request", "host-success", "failure", "summary"]\n',
    )
    assert settings.teams_webhooks["cluster-a"].get_secret_value().endswith(SECRET)
    assert SECRET not in repr(settings) and SECRET not in str(settings.model_dump())
    assert settings.notify_routes == {
        "email": ["approval-request", "failure", "summary"],
        "teams": ["approval-request", "host-success", "failure", "summary"],
    }
    teams = teams_from_settings(settings)
    assert teams is not None and teams.url is None
    assert dict(teams.cluster_urls) == {"cluster-a": f"https://a.example.com/x?{SECRET}"}
    webhook = webhook_from_settings(settings)
    assert webhook is not None and webhook.url == "https://hooks.example.com/patchpilot"
    assert SECRET not in repr(teams)


def test_the_environment_holds_json_and_wins_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "PATCHPILOT_TEAMS_WEBHOOKS",
        json.dumps({"cluster-b": "http://127.0.0.1:9/b", "cluster-a": "http://127.0.0.1:9/a"}),
    )
    monkeypatch.setenv("PATCHPILOT_NOTIFY_ROUTES", json.dumps({"webhook": ["host-start"]}))
    settings = from_toml(
        tmp_path,
        monkeypatch,
        '[teams_webhooks]\n"cluster-a" = "https://a.example.com/x"\n'
        '"cluster-c" = "https://c.example.com/x"\n'
        '[notify_routes]\nwebhook = ["failure"]\nemail = ["failure", "approval-request"]\n',
    )
    urls = {k: v.get_secret_value() for k, v in settings.teams_webhooks.items()}
    assert urls == {
        "cluster-a": "http://127.0.0.1:9/a",
        "cluster-b": "http://127.0.0.1:9/b",
        "cluster-c": "https://c.example.com/x",
    }
    assert settings.notify_routes == {
        "webhook": ["host-start"],
        "email": ["failure", "approval-request"],
    }


def test_unset_means_no_routes_and_no_webhooks() -> None:
    settings = Settings()
    assert settings.notify_routes is None and settings.teams_webhooks == {}
    assert teams_from_settings(settings) is None and webhook_from_settings(settings) is None


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "PATCHPILOT_TEAMS_WEBHOOKS",
            {"cluster-a": "https://ok.example.com/", "cluster-b": f"ftp://files/{SECRET}"},
            "teams_webhooks['cluster-b'] must be an http:// or https:// URL",
        ),
        (
            "PATCHPILOT_TEAMS_WEBHOOKS",
            {"cluster-b": f"outlook.office.com/webhook?{SECRET}"},
            "teams_webhooks['cluster-b'] must be an http:// or https:// URL",
        ),
        (
            "PATCHPILOT_TEAMS_WEBHOOKS",
            {"cluster a; rm": "https://ok.example.com/"},
            "teams_webhooks['cluster a; rm']: 'cluster a; rm' is not a cluster name",
        ),
        ("PATCHPILOT_WEBHOOK_URL", f"file:///{SECRET}", "webhook_url must be an http://"),
        ("PATCHPILOT_TEAMS_WEBHOOK_URL", SECRET, "teams_webhook_url must be an http://"),
        (
            "PATCHPILOT_NOTIFY_ROUTES",
            {"sms": ["failure"]},
            "unknown channel 'sms' (valid channels: slack, email, teams, webhook)",
        ),
        (
            "PATCHPILOT_NOTIFY_ROUTES",
            {"teams": ["failure", "host-done"]},
            "teams: unknown event 'host-done' (valid events: approval-request, host-start, "
            "host-success, failure, wave, summary)",
        ),
        ("PATCHPILOT_NOTIFY_ROUTES", {"email": "failure"}, "PATCHPILOT_NOTIFY_ROUTES.email"),
        (
            "PATCHPILOT_NOTIFY_ROUTES",
            {"slack": [], "email": ["failure"], "teams": ["summary"], "webhook": []},
            "no channel gets approval-request, so nobody would be asked to approve",
        ),
    ],
)
def test_bad_settings_are_named_and_secrets_never_shown(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: object, expected: str
) -> None:
    monkeypatch.setenv(variable, value if isinstance(value, str) else json.dumps(value))
    with pytest.raises(ValidationError) as error:
        Settings()
    text = problem(error)
    assert expected in text
    assert SECRET not in text and SECRET not in str(error.value)


def test_a_bad_route_in_toml_is_named_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as error:
        from_toml(tmp_path, monkeypatch, '[notify_routes]\npager = ["failure"]\n')
    assert "notify_routes: unknown channel 'pager'" in problem(error)


@dataclass
class Recorder:
    name: str
    events: list[str] = field(default_factory=list)

    async def send(self, message: Message) -> bool:
        self.events.append(message.event)
        return True


def messages() -> list[Message]:
    base = {"rollout_id": "r1", "requester_email": "bob@example.com", "target_clusters": ["c"]}
    host = RolloutNotice.model_validate({**base, "hostname": "h1", "cluster": "c"})
    rollout = RolloutNotice.model_validate(base)
    return [
        notify.approval_request(rollout),
        notify.start_notice(host),
        notify.success_notice(host),
        notify.wave_notice(rollout.model_copy(update={"wave": "c: wave 1/1: h1"})),
        notify.failure_alert(host.model_copy(update={"failure_details": "boom"})),
        Message("teams-error", ["bob@example.com"], "Teams failing", "404", rollout),
    ]


async def test_routes_give_each_channel_its_events_and_unnamed_channels_everything() -> None:
    channels = {name: Recorder(name) for name in CHANNELS}
    routed = route(
        list(channels.values()),
        {"email": ["approval-request", "failure"], "webhook": ["host-start"], "teams": []},
    )
    assert routed[0] is channels["slack"]  # not named: unchanged, every event
    assert [n.name for n in routed] == list(CHANNELS)
    assert all(isinstance(n, RoutedNotifier) for n in routed[1:])
    for message in messages():
        for notifier in routed:
            await notifier.send(message)
    everything = [*EVENTS[:3], "wave", "failure", "teams-error"]
    assert channels["slack"].events == everything
    # Reports about a channel's own trouble are not rollout events: never held back.
    assert channels["email"].events == ["approval-request", "failure", "teams-error"]
    assert channels["webhook"].events == ["host-start", "teams-error"]
    assert channels["teams"].events == ["teams-error"]


def test_without_routes_nothing_is_wrapped() -> None:
    notifiers = [Recorder("email"), Recorder("teams")]
    assert route(notifiers, None) == notifiers


def test_routes_naming_only_absent_channels_for_approvals_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="patchpilot.routing"):
        route([Recorder("email")], {"email": ["failure"]})
    assert "approvers are not asked by any channel" in caplog.text
    assert "configured: email" in caplog.text


def test_settings_copied_for_tests_still_route() -> None:
    settings = Settings().model_copy(
        update={
            "teams_webhook_url": SecretStr("http://127.0.0.1:9/global"),
            "notify_routes": {"teams": ["summary", "approval-request"]},
        }
    )
    [teams] = route([teams_from_settings(settings)], settings.notify_routes)  # type: ignore[list-item]
    assert isinstance(teams, RoutedNotifier)
    assert teams.events == {"summary", "approval-request"}
