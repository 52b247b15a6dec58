"""The exception hierarchy shared by the library, the workflow and the daemon.

Two branches under one root decide what the recovery manager may do: a ``RecoverableError``
may succeed if tried again (later, with less memory, from a checkpoint); a ``CriticalError``
will fail the same way every time and must reach a human with a reason they can act on.
Every error carries a stable ``error_code`` for records and alerts, and a ``context`` dict of
structured fields (``job_id``, ``path``, ``column``, ``row`` ...) instead of facts buried in
the message.
"""

from __future__ import annotations

from typing import Any


class HeavyOptimizerError(Exception):
    """Raised for any failure the project understands; the root of the hierarchy."""

    #: Stable identifier written into failure records, alerts and error detail files.
    error_code: str = "HEAVY_OPTIMIZER_ERROR"
    #: Whether trying again (later, differently) can succeed.
    recoverable: bool = False

    def __init__(
        self,
        message: str,
        *,
        error_code: str | None = None,
        context: dict[str, Any] | None = None,
        recoverable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if error_code is not None:
            self.error_code = error_code
        if recoverable is not None:
            self.recoverable = recoverable
        self.context: dict[str, Any] = dict(context or {})

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form used in failure records and alerts."""
        return {
            "type": type(self).__name__,
            "code": self.error_code,
            "message": self.message,
            "recoverable": self.recoverable,
            "context": {k: _jsonable(v) for k, v in self.context.items()},
        }


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class RecoverableError(HeavyOptimizerError):
    """Raised when a failure is transient: retrying, resuming or adapting can succeed."""

    error_code = "RECOVERABLE_ERROR"
    recoverable = True


class CriticalError(HeavyOptimizerError):
    """Raised when a failure repeats on every attempt and needs a person to fix its cause."""

    error_code = "CRITICAL_ERROR"
    recoverable = False


# -- data ---------------------------------------------------------------------------------


class DataError(CriticalError):
    """Raised when input data cannot be used; the message names file, column and row."""

    error_code = "DATA_ERROR"


class DataLoadError(DataError):
    """Raised when an input file is missing, empty or not parseable as CSV."""

    error_code = "DATA_LOAD_ERROR"


class DataValidationError(DataError):
    """Raised when parsed data breaks a rule (non-numeric cell, duplicate name, too few rows)."""

    error_code = "DATA_VALIDATION_ERROR"


class ConfigurationError(CriticalError):
    """Raised when a config file or option is invalid; names the file and key."""

    error_code = "CONFIGURATION_ERROR"


# -- algorithms ---------------------------------------------------------------------------


class AlgorithmError(RecoverableError):
    """Raised when one search algorithm fails; the job can go on with the others."""

    error_code = "ALGORITHM_ERROR"


class AlgorithmTimeoutError(AlgorithmError):
    """Raised when an algorithm exceeds its own time cap."""

    error_code = "ALGORITHM_TIMEOUT"


# -- infrastructure -----------------------------------------------------------------------


class NetworkError(RecoverableError):
    """Raised when a remote peer (SMTP, Slack, share) cannot be reached for now."""

    error_code = "NETWORK_ERROR"


class NotificationError(NetworkError):
    """Raised when an alert cannot be delivered to a channel (SMTP server, Slack webhook).

    ``recoverable`` says whether another attempt can succeed (connection refused, HTTP 429
    or 5xx, SMTP 4xx); ``retry_after_seconds`` carries the wait a server asked for.
    """

    error_code = "NOTIFICATION_ERROR"

    def __init__(
        self, message: str, *, retry_after_seconds: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_seconds = retry_after_seconds


class DatabaseError(RecoverableError):
    """Raised when the database is unreachable or drops the connection."""

    error_code = "DATABASE_ERROR"


class DatabaseQueryError(CriticalError):
    """Raised when the database rejects a statement (syntax, permission): retrying won't help."""

    error_code = "DATABASE_QUERY_ERROR"


class FileSystemError(RecoverableError):
    """Raised when the share or a local folder is unavailable or refuses an operation."""

    error_code = "FILESYSTEM_ERROR"


class CheckpointError(RecoverableError):
    """Raised when a checkpoint cannot be written or read."""

    error_code = "CHECKPOINT_ERROR"


class CheckpointSaveError(CheckpointError):
    """Raised when a checkpoint cannot be written (disk full, permissions)."""

    error_code = "CHECKPOINT_SAVE_ERROR"


class CheckpointLoadError(CheckpointError):
    """Raised when a checkpoint is missing, corrupt or fails its checksum.

    ``previous`` names the newest older checkpoint that can be loaded instead, if any.
    """

    error_code = "CHECKPOINT_LOAD_ERROR"

    def __init__(self, message: str, *, previous: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.previous = previous
        self.context.setdefault("previous_checkpoint", previous)


class ResourceError(RecoverableError):
    """Raised when the machine lacks a resource (memory, disk) for now."""

    error_code = "RESOURCE_ERROR"


class MemoryLimitError(ResourceError):
    """Raised when a job runs out of memory or exceeds its memory limit."""

    error_code = "MEMORY_LIMIT"


class DiskSpaceError(ResourceError):
    """Raised when a write fails or would fail for lack of disk space."""

    error_code = "DISK_SPACE"


# -- jobs ---------------------------------------------------------------------------------


class JobError(HeavyOptimizerError):
    """Raised for failures of a job as a unit of work rather than of its computation."""

    error_code = "JOB_ERROR"


class JobQueueError(JobError, RecoverableError):
    """Raised when a job cannot be queued, claimed or moved between registries for now."""

    error_code = "JOB_QUEUE_ERROR"


class JobSpecError(JobError, CriticalError):
    """Raised when a job file is invalid; the message names the field and what is allowed."""

    error_code = "INVALID_JOB"


class JobTimeoutError(JobError, CriticalError):
    """Raised when a job exceeds its time limit; the same job would time out again."""

    error_code = "JOB_TIMEOUT"


class JobStuckError(JobError, RecoverableError):
    """Raised when a job stopped making progress (no heartbeat) and was killed."""

    error_code = "JOB_STUCK"


class JobCrashError(JobError, RecoverableError):
    """Raised when a job process died without a result (signal, crash, OOM kill)."""

    error_code = "JOB_CRASHED"


class TerminationRequested(BaseException):
    """Raised in a job process when it is told to stop (SIGTERM): save state, then exit.

    Derives from ``BaseException`` so that ``except Exception`` blocks in algorithms do not
    swallow a shutdown.
    """


__all__ = [
    "AlgorithmError",
    "AlgorithmTimeoutError",
    "CheckpointError",
    "CheckpointLoadError",
    "CheckpointSaveError",
    "ConfigurationError",
    "CriticalError",
    "DataError",
    "DataLoadError",
    "DataValidationError",
    "DatabaseError",
    "DatabaseQueryError",
    "DiskSpaceError",
    "FileSystemError",
    "HeavyOptimizerError",
    "JobCrashError",
    "JobError",
    "JobQueueError",
    "JobSpecError",
    "JobStuckError",
    "JobTimeoutError",
    "MemoryLimitError",
    "NetworkError",
    "NotificationError",
    "RecoverableError",
    "ResourceError",
    "TerminationRequested",
]
