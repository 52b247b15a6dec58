"""The three shipped config files load cleanly and equal the code's defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from daemon.config import JobProcessorConfig, load_settings
from daemon.error_handling.config import ErrorHandlingConfig
from daemon.workflow.settings import OptimizerConfig
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(20)


def test_shipped_files_have_no_unknown_keys_and_match_defaults(tmp_path: Path) -> None:
    settings = load_settings(REPO_ROOT / "config", share_root=tmp_path)
    assert settings.warnings == ()
    expected_jobs = dataclasses.replace(JobProcessorConfig(), share_root=str(tmp_path))
    assert settings.jobs == expected_jobs
    assert settings.optimizer == OptimizerConfig()
    defaults = ErrorHandlingConfig().effective().with_share_root(tmp_path)
    # the shipped file fills the email and Slack sections with examples (both are off)
    shipped = settings.error_handling.notifications
    assert not shipped.email.enabled and not shipped.slack.enabled
    defaults = dataclasses.replace(defaults, notifications=dataclasses.replace(
        defaults.notifications, email=shipped.email, slack=shipped.slack))
    assert settings.error_handling == defaults


def test_share_root_override_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HEAVY_OPTIMIZER_SHARE_ROOT", str(tmp_path / "env"))
    assert load_settings(REPO_ROOT / "config").share_root == tmp_path / "env"
    cli = load_settings(REPO_ROOT / "config", share_root=tmp_path / "cli")
    assert cli.share_root == tmp_path / "cli"
    assert cli.error_handling.checkpoint.base_directory == str(tmp_path / "cli" / "checkpoints")


def test_debug_mode_and_rotation_reach_the_logging_settings(tmp_path: Path) -> None:
    (tmp_path / "job_processor_config.json").write_text(
        '{"job_processor": {"logging": {"debug_mode": true, "max_log_size_mb": 7,'
        ' "backup_count": 2}}}')
    settings = load_settings(tmp_path, share_root=tmp_path)
    assert settings.error_handling.logging.console_log_level == "DEBUG"
    assert settings.error_handling.logging.max_log_size_mb == 7
    assert settings.error_handling.logging.backup_count == 2
