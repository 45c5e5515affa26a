from pathlib import Path

import pytest
from pydantic_settings import SettingsError

from bot.settings import Settings, describe_settings_error


def test_patchpilot_toml_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "patchpilot.toml"
    config.write_text(
        'temporal_address = "temporal.internal:7233"\nsmtp_port = 2525\n'
        'inventory = "/etc/patchpilot/inventory.yml"\n'
        'PATCHPILOT_SMTP_HOST = "smtp.internal"\n'  # a variable's own name is a key too
    )
    monkeypatch.setenv("PATCHPILOT_CONFIG", str(config))
    monkeypatch.setenv("PATCHPILOT_SMTP_PORT", "26")
    settings = Settings()
    assert settings.temporal_address == "temporal.internal:7233"
    assert settings.inventory == Path("/etc/patchpilot/inventory.yml")
    assert settings.smtp_port == 26 and settings.smtp_host == "smtp.internal"
    assert "temporal_address" in settings.model_fields_set  # so no embedded Temporal is started


def test_a_named_config_file_that_does_not_exist_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATCHPILOT_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(SettingsError, match=r"missing\.toml, which does not exist"):
        Settings()


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('smtp_host = "smtp.internal', "is not valid TOML: "),
        ('smtp_hots = "smtp.internal"\n', "no setting is called smtp_hots"),
    ],
)
def test_a_config_file_that_cannot_be_read_as_settings_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, said: str
) -> None:
    config = tmp_path / "patchpilot.toml"
    config.write_text(text)
    monkeypatch.setenv("PATCHPILOT_CONFIG", str(config))
    with pytest.raises(SettingsError) as refused:
        Settings()
    assert said in describe_settings_error(refused.value)


def test_without_a_file_the_defaults_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATCHPILOT_CONFIG", raising=False)
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.temporal_address == "localhost:7233"
    assert "temporal_address" not in settings.model_fields_set


def test_the_worker_cache_size_is_a_setting_and_zero_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PATCHPILOT_CONFIG", raising=False)
    assert Settings().max_cached_workflows == 1000  # temporalio's own default
    monkeypatch.setenv("PATCHPILOT_MAX_CACHED_WORKFLOWS", "2500")
    assert Settings().max_cached_workflows == 2500
    # 0 would drop every workflow after each activation, cancelling its local activities.
    monkeypatch.setenv("PATCHPILOT_MAX_CACHED_WORKFLOWS", "0")
    with pytest.raises(ValueError) as refused:
        Settings()
    assert "PATCHPILOT_MAX_CACHED_WORKFLOWS: Input should be greater than or equal to 1" in (
        describe_settings_error(refused.value)
    )


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("PATCHPILOT_SSH_CONNECT_TIMEOUT", "-1", "greater than 0"),
        ("PATCHPILOT_SSH_CONNECT_TIMEOUT", "0", "greater than 0"),
        ("PATCHPILOT_VAULT_CACHE_TTL", "-5", "greater than or equal to 0"),
        ("PATCHPILOT_SMTP_PORT", "70000", "less than or equal to 65535"),
    ],
)
def test_numbers_no_setting_can_work_with_are_refused_with_the_setting_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PATCHPILOT_CONFIG", raising=False)
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError) as refused:
        Settings()
    assert f"{name}: Input should be {said}" in describe_settings_error(refused.value)
