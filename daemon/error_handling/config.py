"""``error_handling_config.json`` as frozen dataclasses, validated once at load.

The file's top-level sections are ``error_handling``, ``checkpoint``, ``retry``,
``notifications``, ``logging`` and ``recovery``. ``error_handling.enabled = false`` is the
master switch: :meth:`ErrorHandlingConfig.effective` then turns off checkpoints, alerts,
error detail files and recovery, so each component reads only its own section.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .settings import build_dataclass, read_json_file, resolve_secret

#: File name of this config inside a config folder.
CONFIG_FILE_NAME = "error_handling_config.json"
#: Environment variable naming the config folder used when none is passed explicitly.
CONFIG_DIR_ENV = "HEAVY_OPTIMIZER_CONFIG_DIR"

Backoff = Literal["exponential", "linear", "fixed"]
Severity = Literal["CRITICAL", "ERROR", "WARNING", "INFO"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
RecoveryActionName = Literal[
    "retry", "resume_checkpoint", "adjust_parameters", "skip_algorithm", "fail"
]

#: Workflow stage families a checkpoint may be saved after ("algorithm" covers every one).
ALL_STAGES = ("load", "validate", "preprocess", "algorithm", "report")


@dataclass(frozen=True)
class MasterSwitch:
    enabled: bool = True


@dataclass(frozen=True)
class CheckpointConfig:
    enabled: bool = True
    base_directory: str = "/mnt/optimizer_share/checkpoints"
    max_checkpoints_per_job: int = 20
    cleanup_after_days: float = 7.0
    save_on_stages: list[str] = field(default_factory=lambda: list(ALL_STAGES))

    def __post_init__(self) -> None:
        if self.max_checkpoints_per_job < 1:
            raise ValueError("checkpoint.max_checkpoints_per_job must be at least 1")
        unknown = sorted(set(self.save_on_stages) - set(ALL_STAGES))
        if unknown:
            raise ValueError(
                f"checkpoint.save_on_stages has unknown stages {unknown}; allowed: {ALL_STAGES}"
            )


@dataclass(frozen=True)
class RetryKindConfig:
    """Retry budget for one kind of transient error."""

    max_attempts: int = 3
    initial_delay: float = 1.0


@dataclass(frozen=True)
class RetryConfig:
    default_max_attempts: int = 3
    default_delay: float = 1.0
    default_backoff: Backoff = "exponential"
    max_delay: float = 60.0
    network_errors: RetryKindConfig = RetryKindConfig(5, 2.0)
    database_errors: RetryKindConfig = RetryKindConfig(3, 1.0)
    resource_errors: RetryKindConfig = RetryKindConfig(4, 0.5)


@dataclass(frozen=True)
class EmailConfig:
    enabled: bool = False
    smtp_server: str = "localhost"
    smtp_port: int = 587
    use_tls: bool = True
    use_ssl: bool = False
    from_address: str = "heavy-optimizer@localhost"
    recipients: list[str] = field(default_factory=list)
    username: str = ""
    password: str = ""
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class SlackChannels:
    critical: str = ""
    error: str = ""
    warning: str = ""


@dataclass(frozen=True)
class SlackConfig:
    enabled: bool = False
    webhook_url: str = ""
    include_stack_trace: bool = True
    channels: SlackChannels = SlackChannels()
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class NotificationsConfig:
    enabled: bool = True
    rate_limit_per_hour: int = 10
    min_severity: Severity = "INFO"
    send_attempts: int = 3
    outbox_directory: str = ""
    email: EmailConfig = EmailConfig()
    slack: SlackConfig = SlackConfig()

    def __post_init__(self) -> None:
        if self.rate_limit_per_hour < 1:
            raise ValueError("notifications.rate_limit_per_hour must be at least 1")
        if self.send_attempts < 1:
            raise ValueError("notifications.send_attempts must be at least 1")


@dataclass(frozen=True)
class LoggingConfig:
    log_directory: str = "/mnt/optimizer_share/logs"
    include_context: bool = True
    include_locals: bool = True
    max_log_size_mb: float = 100.0
    backup_count: int = 5
    error_detail_files: bool = True
    console_log_level: LogLevel = "INFO"
    file_log_level: LogLevel = "DEBUG"


@dataclass(frozen=True)
class StrategyConfig:
    """How to recover from one kind of error."""

    action: RecoveryActionName = "retry"
    delay_seconds: float = 1.0
    max_delay_seconds: float = 300.0
    notify: bool = False
    reduce_factor: float = 0.5


@dataclass(frozen=True)
class RecoveryStrategies:
    memory: StrategyConfig = StrategyConfig("adjust_parameters", 5.0, 300.0, False, 0.5)
    disk: StrategyConfig = StrategyConfig("retry", 60.0, 900.0, True)
    network: StrategyConfig = StrategyConfig("retry", 2.0, 300.0, True)
    database: StrategyConfig = StrategyConfig("retry", 1.0, 300.0, True)
    checkpoint: StrategyConfig = StrategyConfig("resume_checkpoint", 0.0)
    algorithm: StrategyConfig = StrategyConfig("skip_algorithm", 0.0)
    crash: StrategyConfig = StrategyConfig("resume_checkpoint", 5.0, 300.0)
    stuck: StrategyConfig = StrategyConfig("resume_checkpoint", 5.0, 300.0, True)
    timeout: StrategyConfig = StrategyConfig("fail", 0.0, 0.0, True)
    #: Bad input is the analyst's to fix (failed/ says how); it does not page operators.
    data: StrategyConfig = StrategyConfig("fail", 0.0, 0.0, False)
    configuration: StrategyConfig = StrategyConfig("fail", 0.0, 0.0, True)
    unknown: StrategyConfig = StrategyConfig("resume_checkpoint", 10.0, 300.0, True)


@dataclass(frozen=True)
class RecoveryConfig:
    enabled: bool = True
    max_recovery_attempts: int = 3
    recovery_timeout_seconds: float = 3600.0
    save_emergency_checkpoints: bool = True
    strategies: RecoveryStrategies = RecoveryStrategies()


@dataclass(frozen=True)
class ErrorHandlingConfig:
    """The whole of ``error_handling_config.json``."""

    error_handling: MasterSwitch = MasterSwitch()
    checkpoint: CheckpointConfig = CheckpointConfig()
    retry: RetryConfig = RetryConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    logging: LoggingConfig = LoggingConfig()
    recovery: RecoveryConfig = RecoveryConfig()

    @property
    def enabled(self) -> bool:
        return self.error_handling.enabled

    def effective(self) -> ErrorHandlingConfig:
        """Apply the master switch and secrets from the environment.

        Returns a copy in which a disabled master switch disables every section, and the
        SMTP password and Slack webhook come from ``HEAVY_OPTIMIZER_SMTP_PASSWORD`` /
        ``HEAVY_OPTIMIZER_SLACK_WEBHOOK_URL`` (or systemd credentials ``smtp_password`` /
        ``slack_webhook_url``) when set there.
        """
        email = dataclasses.replace(
            self.notifications.email,
            password=resolve_secret(
                self.notifications.email.password,
                env_var="HEAVY_OPTIMIZER_SMTP_PASSWORD",
                credential="smtp_password",
            ),
        )
        slack = dataclasses.replace(
            self.notifications.slack,
            webhook_url=resolve_secret(
                self.notifications.slack.webhook_url,
                env_var="HEAVY_OPTIMIZER_SLACK_WEBHOOK_URL",
                credential="slack_webhook_url",
            ),
        )
        notifications = dataclasses.replace(self.notifications, email=email, slack=slack)
        if self.enabled:
            return dataclasses.replace(self, notifications=notifications)
        return dataclasses.replace(
            self,
            checkpoint=dataclasses.replace(self.checkpoint, enabled=False),
            notifications=dataclasses.replace(notifications, enabled=False),
            logging=dataclasses.replace(self.logging, error_detail_files=False),
            recovery=dataclasses.replace(self.recovery, enabled=False),
        )

    def with_share_root(self, share_root: Path) -> ErrorHandlingConfig:
        """Place checkpoints and logs under a share root (the daemon's layout)."""
        return dataclasses.replace(
            self,
            checkpoint=dataclasses.replace(
                self.checkpoint, base_directory=str(share_root / "checkpoints")
            ),
            logging=dataclasses.replace(self.logging, log_directory=str(share_root / "logs")),
        )


def load_error_handling_config(
    path: str | os.PathLike[str] | None = None, *, unknown: list[str] | None = None
) -> ErrorHandlingConfig:
    """Load and validate the config file, applying the master switch and secrets.

    Args:
        path: The JSON file. ``None`` looks in ``$HEAVY_OPTIMIZER_CONFIG_DIR`` and then
            ``./config``; when neither has the file, the built-in defaults are used.
        unknown: Collects unknown-key warnings instead of logging them.

    Raises:
        ConfigurationError: Unreadable file, bad JSON or a wrong type, with file and key.
    """
    file = Path(path) if path is not None else find_config_file(CONFIG_FILE_NAME)
    if file is None:
        return ErrorHandlingConfig().effective()
    raw = read_json_file(file)
    return build_dataclass(ErrorHandlingConfig, raw, source=str(file), unknown=unknown).effective()


def find_config_file(name: str) -> Path | None:
    """Find ``name`` in ``$HEAVY_OPTIMIZER_CONFIG_DIR`` or ``./config``, if it exists."""
    folders = [os.environ.get(CONFIG_DIR_ENV, ""), "config"]
    for folder in folders:
        if folder and (candidate := Path(folder) / name).is_file():
            return candidate
    return None
