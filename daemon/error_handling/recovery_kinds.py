"""What kind of failure this is: the error kinds the recovery strategies are keyed by.

The kinds are the fields of ``RecoveryStrategies`` (memory, disk, network, database,
checkpoint, algorithm, crash, stuck, timeout, data, configuration, unknown). The job process
classifies exceptions; the daemon classifies the error records its children report
(``HeavyOptimizerError.to_dict`` shape), so both go through :func:`classify_error`. Transient
network and database failures are recognised by the same predicates as the retry decorators
(:mod:`.transient`), so a missing file is never taken for an outage.
"""

from __future__ import annotations

import builtins
import dataclasses
import errno
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from . import errors as _errors
from .config import RecoveryStrategies
from .errors import (
    AlgorithmError,
    CheckpointError,
    ConfigurationError,
    DatabaseQueryError,
    DataError,
    DiskSpaceError,
    HeavyOptimizerError,
    JobCrashError,
    JobSpecError,
    JobStuckError,
    JobTimeoutError,
    MemoryLimitError,
)
from .recovery_actions import ErrorFacts
from .transient import is_transient_database_error, is_transient_network_error

#: Error kinds: one per field of ``RecoveryStrategies``.
ERROR_KINDS = tuple(f.name for f in dataclasses.fields(RecoveryStrategies))

ErrorLike = BaseException | Mapping[str, Any]


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it was raised from, and so on (a hand-made cycle ends the walk)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__


def _is_disk_full(exc: BaseException) -> bool:
    # A CheckpointSaveError raised from ENOSPC is a full disk, so the cause chain is walked.
    return any(
        isinstance(e, DiskSpaceError)
        or (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT))
        for e in _causes(exc)
    )


def _instance_of(*classes: type[BaseException]) -> Callable[[BaseException], bool]:
    return lambda exc: isinstance(exc, classes)


#: Ordered (predicate, kind) rules; the first match wins, and no match means "unknown".
_KIND_RULES: tuple[tuple[Callable[[BaseException], bool], str], ...] = (
    (_instance_of(MemoryError, MemoryLimitError), "memory"),
    (_is_disk_full, "disk"),
    (_instance_of(CheckpointError), "checkpoint"),
    (_instance_of(AlgorithmError), "algorithm"),
    (_instance_of(JobTimeoutError), "timeout"),
    (_instance_of(JobStuckError), "stuck"),
    (_instance_of(JobCrashError), "crash"),
    (_instance_of(DataError, JobSpecError), "data"),
    # A statement the database rejects (syntax, permission) is fixed by changing the setup.
    (_instance_of(ConfigurationError, DatabaseQueryError), "configuration"),
    (is_transient_network_error, "network"),
    (is_transient_database_error, "database"),
)

_OUR_CLASSES: tuple[type[HeavyOptimizerError], ...] = tuple(
    cls
    for name in _errors.__all__
    if isinstance(cls := getattr(_errors, name), type) and issubclass(cls, HeavyOptimizerError)
)
_CLASS_BY_CODE = {cls.error_code: cls for cls in _OUR_CLASSES}
_CLASS_BY_NAME = {cls.__name__: cls for cls in _OUR_CLASSES}
#: Code recorded for an error that carries none (a builtin exception), by kind.
_DEFAULT_CODES = {
    "memory": MemoryLimitError.error_code,
    "disk": DiskSpaceError.error_code,
    "network": _errors.NetworkError.error_code,
    "database": _errors.DatabaseError.error_code,
    "checkpoint": CheckpointError.error_code,
    "algorithm": AlgorithmError.error_code,
    "crash": JobCrashError.error_code,
    "stuck": JobStuckError.error_code,
    "timeout": JobTimeoutError.error_code,
    "data": DataError.error_code,
    "configuration": ConfigurationError.error_code,
    "unknown": "UNEXPECTED_ERROR",
}


def classify_error(error: ErrorLike) -> str:
    """Return the error's kind: a field name of ``RecoveryStrategies`` (see ``ERROR_KINDS``).

    Args:
        error: An exception, or an error record dict as children report it
            (``{"type": "JobStuckError", "code": "JOB_STUCK", ...}``, the shape of
            ``HeavyOptimizerError.to_dict``). A record is classified by its ``code`` (our
            ``error_code`` values), else by its ``type`` (our classes or builtin exceptions).
            An exception no rule matches takes the kind of its cause: ``RetryError`` is
            raised from the last failure, whose kind is what recovery must answer.
    """
    if isinstance(error, BaseException):
        kinds = (kind for exc in _causes(error) for matches, kind in _KIND_RULES if matches(exc))
        return next(kinds, "unknown")
    example = _example_exception(error)
    return "unknown" if example is None else classify_error(example)


def _record_class(record: Mapping[str, Any]) -> type[BaseException] | None:
    code, type_name = str(record.get("code") or ""), str(record.get("type") or "")
    found = _CLASS_BY_CODE.get(code) or _CLASS_BY_NAME.get(type_name)
    if found is not None:
        return found
    builtin = getattr(builtins, type_name, None)
    if isinstance(builtin, type) and issubclass(builtin, BaseException):
        return builtin
    return None


def _example_exception(record: Mapping[str, Any]) -> BaseException | None:
    cls = _record_class(record)
    if cls is None:
        return None
    try:
        return cls(str(record.get("message") or ""))
    except TypeError:  # a builtin with a special signature (UnicodeDecodeError ...)
        return None


def error_facts(error: ErrorLike, kind: str) -> ErrorFacts:
    """Collect type, code, message, recoverability and context from an exception or record."""
    if isinstance(error, HeavyOptimizerError):
        return ErrorFacts(
            type(error).__name__, error.error_code, error.message, error.recoverable, error.context
        )
    if isinstance(error, BaseException):
        return ErrorFacts(type(error).__name__, _DEFAULT_CODES[kind], str(error), True, {})
    cls = _record_class(error)
    recoverable = error.get("recoverable")
    if not isinstance(recoverable, bool):
        recoverable = bool(getattr(cls, "recoverable", True))
    context = error.get("context")
    return ErrorFacts(
        type=str(error.get("type") or "ErrorRecord"),
        code=str(error.get("code") or _DEFAULT_CODES[kind]),
        message=str(error.get("message") or ""),
        recoverable=recoverable,
        context=dict(context) if isinstance(context, Mapping) else {},
    )


__all__ = ["ERROR_KINDS", "ErrorLike", "classify_error", "error_facts"]
