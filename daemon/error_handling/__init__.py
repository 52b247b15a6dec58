"""Checkpoints, retries, notifications, context logging and recovery, usable on their own.

Nothing here imports the daemon: the workflow and the daemon build on this library, not the
other way round::

    from daemon.error_handling import CheckpointManager, retry_on_network_error, ErrorNotifier
"""

from .checkpoint import CheckpointInfo, CheckpointManager
from .config import ErrorHandlingConfig, load_error_handling_config
from .context_logger import ContextLogger, bind_context
from .errors import *  # noqa: F403 - the hierarchy is the public API
from .errors import __all__ as _error_names
from .log_setup import setup_error_logging
from .notifier import ErrorNotifier
from .recovery import ErrorRecoveryManager, classify_error
from .recovery_actions import (
    AdjustParameters,
    FailJob,
    RecoveryAction,
    ResumeFromCheckpoint,
    RetryAfter,
    SkipAlgorithm,
)
from .retry import (
    RetryError,
    retry,
    retry_on_database_error,
    retry_on_network_error,
    retry_on_resource_error,
)

__all__ = [
    "AdjustParameters",
    "CheckpointInfo",
    "CheckpointManager",
    "ContextLogger",
    "ErrorHandlingConfig",
    "ErrorNotifier",
    "ErrorRecoveryManager",
    "FailJob",
    "RecoveryAction",
    "ResumeFromCheckpoint",
    "RetryAfter",
    "RetryError",
    "SkipAlgorithm",
    "bind_context",
    "classify_error",
    "load_error_handling_config",
    "retry",
    "retry_on_database_error",
    "retry_on_network_error",
    "retry_on_resource_error",
    "setup_error_logging",
    *_error_names,
]
