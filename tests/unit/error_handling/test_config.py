"""error_handling_config.json: every key typed, unknown keys named, secrets from outside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.error_handling.config import (
    ErrorHandlingConfig,
    find_config_file,
    load_error_handling_config,
)
from daemon.error_handling.errors import ConfigurationError

REPO_CONFIG = Path(__file__).resolve().parents[3] / "config" / "error_handling_config.json"

pytestmark = pytest.mark.timeout(10)


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "error_handling_config.json"
    path.write_text(json.dumps(data))
    return path


def test_shipped_file_loads_without_unknown_keys() -> None:
    unknown: list[str] = []
    config = load_error_handling_config(REPO_CONFIG, unknown=unknown)
    assert unknown == []
    assert config.checkpoint.max_checkpoints_per_job == 20
    assert config.retry.network_errors.max_attempts == 5
    assert config.retry.resource_errors.initial_delay == 0.5
    assert config.notifications.rate_limit_per_hour == 10
    assert config.recovery.strategies.memory.action == "adjust_parameters"


def test_shipped_file_matches_built_in_defaults() -> None:
    # Given the shipped file and the dataclass defaults
    shipped = json.loads(REPO_CONFIG.read_text())
    defaults = ErrorHandlingConfig()
    # Then every default written in the file is the default the code uses without a file
    assert shipped["retry"]["max_delay"] == defaults.retry.max_delay
    assert shipped["logging"]["max_log_size_mb"] == defaults.logging.max_log_size_mb
    assert shipped["recovery"]["max_recovery_attempts"] == defaults.recovery.max_recovery_attempts


def test_unknown_key_is_reported_with_closest_known_key(tmp_path: Path) -> None:
    path = _write(tmp_path, {"retry": {"max_dealy": 5}, "checkpont": {}})
    unknown: list[str] = []
    load_error_handling_config(path, unknown=unknown)
    assert any("'retry.max_dealy'" in m and "did you mean 'retry.max_delay'" in m for m in unknown)
    assert any("'checkpont'" in m and "'checkpoint'" in m for m in unknown)


def test_unknown_key_is_logged_when_not_collected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _write(tmp_path, {"logging": {"backup_cont": 2}})
    load_error_handling_config(path)
    assert "did you mean 'logging.backup_count'" in caplog.text


@pytest.mark.parametrize(
    ("data", "key", "expected"),
    [
        ({"checkpoint": {"max_checkpoints_per_job": "20"}}, "checkpoint.max_checkpoints_per_job",
         "a whole number"),
        ({"retry": {"default_backoff": "cubic"}}, "retry.default_backoff", "one of"),
        ({"notifications": {"email": {"recipients": "a@b"}}}, "notifications.email.recipients",
         "a list"),
        ({"error_handling": {"enabled": "yes"}}, "error_handling.enabled", "true or false"),
        ({"logging": {"max_log_size_mb": True}}, "logging.max_log_size_mb", "a number"),
        ({"recovery": {"strategies": {"memory": {"action": "pray"}}}},
         "recovery.strategies.memory.action", "one of"),
    ],
)
def test_wrong_type_stops_with_file_and_key(
    tmp_path: Path, data: dict, key: str, expected: str
) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigurationError) as caught:
        load_error_handling_config(path)
    message = str(caught.value)
    assert str(path) in message and f"'{key}'" in message and expected in message


def test_invalid_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "error_handling_config.json"
    path.write_text('{"retry": {\n  "max_delay": ,\n}}')
    with pytest.raises(ConfigurationError, match=r"line 2"):
        load_error_handling_config(path)


def test_unknown_stage_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, {"checkpoint": {"save_on_stages": ["load", "lunch"]}})
    with pytest.raises(ConfigurationError, match="lunch"):
        load_error_handling_config(path)


def test_secrets_come_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, {"notifications": {"email": {"password": "in-file"}}})
    monkeypatch.setenv("HEAVY_OPTIMIZER_SMTP_PASSWORD", "from-env")
    monkeypatch.setenv("HEAVY_OPTIMIZER_SLACK_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    config = load_error_handling_config(path)
    assert config.notifications.email.password == "from-env"
    assert config.notifications.slack.webhook_url == "http://127.0.0.1:9/hook"


def test_secrets_come_from_systemd_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "smtp_password").write_text("from-credential\n")
    monkeypatch.delenv("HEAVY_OPTIMIZER_SMTP_PASSWORD", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    config = load_error_handling_config(_write(tmp_path, {}))
    assert config.notifications.email.password == "from-credential"


def test_master_switch_disables_every_section(tmp_path: Path) -> None:
    config = load_error_handling_config(_write(tmp_path, {"error_handling": {"enabled": False}}))
    assert not config.checkpoint.enabled
    assert not config.notifications.enabled
    assert not config.recovery.enabled
    assert not config.logging.error_detail_files


def test_config_dir_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, {"checkpoint": {"max_checkpoints_per_job": 4}})
    monkeypatch.setenv("HEAVY_OPTIMIZER_CONFIG_DIR", str(tmp_path))
    assert find_config_file("error_handling_config.json") == tmp_path / "error_handling_config.json"
    assert load_error_handling_config().checkpoint.max_checkpoints_per_job == 4
