"""The daemon's three config files, loaded and validated once at start.

``job_processor_config.json`` (the daemon), ``optimizer_config.json`` (the workflow) and
``error_handling_config.json`` (the library) each become a frozen dataclass. Values reach
objects through keyword arguments; nothing reads the environment at import time. Env
overrides: ``HEAVY_OPTIMIZER_SHARE_ROOT`` for ``share_root``; secrets as in the library.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from daemon.error_handling.config import (
    ErrorHandlingConfig,
    find_config_file,
    load_error_handling_config,
)
from daemon.error_handling.errors import ConfigurationError
from daemon.error_handling.settings import build_dataclass, read_json_file
from daemon.workflow.settings import OptimizerConfig, load_optimizer_config

JOB_PROCESSOR_FILE = "job_processor_config.json"


@dataclass(frozen=True)
class ResourceMonitoringConfig:
    enabled: bool = True
    memory_threshold: float = 90.0
    cpu_threshold: float = 95.0
    disk_threshold: float = 95.0


@dataclass(frozen=True)
class DaemonRecoveryConfig:
    enabled: bool = True
    stuck_job_check_interval: float = 60.0
    auto_retry_stuck_jobs: bool = True
    max_job_age_minutes: float = 30.0


@dataclass(frozen=True)
class DaemonLoggingConfig:
    log_rotation: bool = True
    max_log_size_mb: float = 100.0
    backup_count: int = 5
    debug_mode: bool = False


@dataclass(frozen=True)
class DaemonNotificationsConfig:
    consecutive_failure_threshold: int = 3
    stuck_job_threshold_minutes: float = 30.0
    daily_summary: bool = True
    summary_time: str = "09:00"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", self.summary_time):
            raise ValueError(
                f"notifications.summary_time must be HH:MM (24-hour), got {self.summary_time!r}"
            )


@dataclass(frozen=True)
class JobProcessorConfig:
    """The ``job_processor`` section: how the daemon runs jobs."""

    share_root: str = "/mnt/optimizer_share"
    observer: Literal["auto", "inotify", "polling"] = "auto"
    job_timeout: float = 300.0
    max_retry_attempts: int = 3
    scan_interval: float = 2.0
    settle_seconds: float = 2.0
    #: How long a job file may wait for its input CSV to appear (or stop being empty) before
    #: it is failed: clients may drop the job file before the CSV copy starts.
    input_wait_seconds: float = 120.0
    heartbeat_interval: float = 2.0
    stuck_job_threshold: float = 600.0
    enable_notifications: bool = True
    max_concurrent_jobs: int = 3
    checkpoint_interval: float = 60.0
    max_consecutive_failures: int = 5
    circuit_breaker_cooldown_seconds: float = 300.0
    drain_timeout: float = 60.0
    kill_grace_seconds: float = 10.0
    max_job_memory_mb: float = 4096.0
    default_portfolio_size: int = 35
    auto_jobs_from_csv: bool = True
    resource_monitoring: ResourceMonitoringConfig = ResourceMonitoringConfig()
    recovery: DaemonRecoveryConfig = DaemonRecoveryConfig()
    logging: DaemonLoggingConfig = DaemonLoggingConfig()
    notifications: DaemonNotificationsConfig = DaemonNotificationsConfig()

    def __post_init__(self) -> None:
        positive = ("job_timeout", "scan_interval", "heartbeat_interval", "stuck_job_threshold",
                    "drain_timeout", "max_job_memory_mb", "input_wait_seconds")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be greater than 0")
        if self.max_concurrent_jobs < 1:
            raise ValueError("max_concurrent_jobs must be at least 1")
        if self.max_retry_attempts < 1:
            raise ValueError("max_retry_attempts must be at least 1")
        if not 10 <= self.default_portfolio_size <= 100:
            raise ValueError("default_portfolio_size must be between 10 and 100")


@dataclass(frozen=True)
class JobProcessorFile:
    job_processor: JobProcessorConfig = JobProcessorConfig()


@dataclass(frozen=True)
class Settings:
    """Everything the daemon reads at start, already validated."""

    jobs: JobProcessorConfig
    optimizer: OptimizerConfig
    error_handling: ErrorHandlingConfig
    warnings: tuple[str, ...] = field(default=())

    @property
    def share_root(self) -> Path:
        return Path(self.jobs.share_root)


def load_settings(config_dir: str | os.PathLike[str] | None = None,
                  *, share_root: str | os.PathLike[str] | None = None) -> Settings:
    """Load the three config files from ``config_dir`` (or the default search path).

    A missing file means built-in defaults for that file. ``share_root`` (the CLI's
    ``--share``) wins over ``HEAVY_OPTIMIZER_SHARE_ROOT``, which wins over the file. Checkpoints
    and logs always live under the share root so one share holds one daemon's whole state.

    Raises:
        ConfigurationError: A file is unreadable, not JSON, or has a value of the wrong type.
    """
    unknown: list[str] = []

    def locate(name: str) -> Path | None:
        if config_dir is None:
            return find_config_file(name)
        path = Path(config_dir) / name
        return path if path.is_file() else None

    if config_dir is not None and not Path(config_dir).is_dir():
        raise ConfigurationError(f"config folder {config_dir} does not exist")
    jobs_file = locate(JOB_PROCESSOR_FILE)
    jobs = (
        build_dataclass(JobProcessorFile, read_json_file(jobs_file), source=str(jobs_file),
                        unknown=unknown).job_processor
        if jobs_file else JobProcessorConfig()
    )
    root = share_root or os.environ.get("HEAVY_OPTIMIZER_SHARE_ROOT") or jobs.share_root
    jobs = dataclasses.replace(jobs, share_root=str(Path(root).absolute()))
    optimizer = load_optimizer_config(locate("optimizer_config.json"), unknown=unknown)
    eh_file = locate("error_handling_config.json")
    error_handling = (
        load_error_handling_config(eh_file, unknown=unknown) if eh_file
        else ErrorHandlingConfig().effective()
    ).with_share_root(Path(jobs.share_root))
    if jobs.logging.debug_mode:
        error_handling = dataclasses.replace(
            error_handling,
            logging=dataclasses.replace(
                error_handling.logging, console_log_level="DEBUG", file_log_level="DEBUG"
            ),
        )
    if not jobs.logging.log_rotation:
        # Rotation off = one ever-growing file, which RotatingFileHandler expresses as 0 bytes.
        error_handling = dataclasses.replace(
            error_handling,
            logging=dataclasses.replace(error_handling.logging, max_log_size_mb=0.0),
        )
    else:
        error_handling = dataclasses.replace(
            error_handling,
            logging=dataclasses.replace(
                error_handling.logging,
                max_log_size_mb=jobs.logging.max_log_size_mb,
                backup_count=jobs.logging.backup_count,
            ),
        )
    return Settings(jobs=jobs, optimizer=optimizer, error_handling=error_handling,
                    warnings=tuple(unknown))
