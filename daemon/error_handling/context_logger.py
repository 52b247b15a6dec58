"""Context for every log line, and a logger whose errors leave an error detail file.

The mechanism is a context variable plus a filter: :func:`bind_context` (or
:meth:`ContextLogger.bind`) puts ``job_id``, ``stage``, ``attempt`` ... into a
``contextvars.ContextVar`` holding an immutable mapping, and :class:`ContextFilter`, which
:func:`.log_setup.setup_error_logging` puts on every handler it installs, copies that mapping
(with host and pid) into each record. So a plain ``logging.getLogger(__name__)`` call inside a
bound block carries the job id too. A context variable, not a thread-local or a dict on the
logger, because each thread starts empty and each asyncio task sees its own copy: two jobs
interleaved on one thread or loop never label each other's lines.

:class:`ContextLogger` is the convenience wrapper: the same calls as a logger, and
``error``/``critical``/``exception`` also write an error detail file (see
:mod:`.error_details`) whose path goes into the log line.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, MappingProxyType, TracebackType
from typing import Any

from .error_details import build_error_details, redact_mapping, scrub_urls, write_error_details

#: Folder of the log directory that receives error detail files.
ERROR_DETAILS_FOLDER = "errors"
_HOST = socket.gethostname()
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_log_context: ContextVar[Mapping[str, Any]] = ContextVar("heavy_optimizer_log_context")
#: Attribute under which an exception leaving a bound block keeps that block's context.
_EXC_CONTEXT_ATTR = "_heavy_optimizer_log_context"

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]


# -- the context --------------------------------------------------------------------------


def current_context() -> dict[str, Any]:
    """A copy of the log context of this thread or asyncio task."""
    return dict(_log_context.get(_EMPTY))


def set_context(**fields: Any) -> None:
    """Add fields to the context of this thread or task; a ``None`` value removes a field.

    Secret-looking keys and URL credentials are redacted here, once, so no log line or
    detail file can carry them.
    """
    _log_context.set(_with(fields))


def clear_context() -> None:
    """Empty the context of this thread or task."""
    _log_context.set(_EMPTY)


@contextmanager
def bind_context(**fields: Any) -> Iterator[dict[str, Any]]:
    """Add fields for the duration of a ``with`` block, then restore the previous context.

    Changes made with :func:`set_context` inside the block are undone at its end as well.
    """
    token = _log_context.set(_with(fields))
    try:
        yield current_context()
    except BaseException as exc:
        # The block's context is gone by the time an outer handler or the uncaught-exception
        # hook reports the error; the exception keeps it (the innermost block is the fullest).
        if not hasattr(exc, _EXC_CONTEXT_ATTR):
            setattr(exc, _EXC_CONTEXT_ATTR, _log_context.get(_EMPTY))
        raise
    finally:
        _log_context.reset(token)


def context_of(exc: BaseException | None) -> dict[str, Any]:
    """The log context in force where ``exc`` left a :func:`bind_context` block, if any."""
    return dict(getattr(exc, _EXC_CONTEXT_ATTR, _EMPTY))


def _with(fields: Mapping[str, Any]) -> Mapping[str, Any]:
    merged = {**_log_context.get(_EMPTY), **fields}
    return MappingProxyType(redact_mapping({k: v for k, v in merged.items() if v is not None}))


class ContextFilter(logging.Filter):
    """Adds ``host``, ``pid`` and the current context to each record; never drops one.

    Put it on handlers, not loggers: a logger's filters do not see records propagated from
    child loggers. Fields passed explicitly as ``extra={"context": {...}}`` win over the
    bound ones. URL passwords and Slack webhook paths in the message are hidden.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_context_done", False):  # several of our handlers share a record
            return True
        record._context_done = True
        record.host = _HOST
        record.pid = record.process
        explicit = getattr(record, "context", None)
        bound = _log_context.get(_EMPTY)
        if explicit is bound or not isinstance(explicit, Mapping):  # ContextLogger passes bound
            record.context = dict(bound)
        else:
            record.context = {**bound, **redact_mapping(explicit)}
        message = record.getMessage()
        scrubbed = scrub_urls(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


# -- the convenience wrapper --------------------------------------------------------------


@dataclass(frozen=True)
class _DetailSettings:
    directory: Path | None = None
    include_locals: bool = True
    enabled: bool = True


#: Set by setup_error_logging. Logging is process-wide by nature (handlers, hooks), and the
#: detail-file settings belong to that same process-wide configuration.
_detail_settings = _DetailSettings()


def configure_error_details(
    directory: Path | None, *, include_locals: bool = True, enabled: bool = True
) -> None:
    """Set the process-wide defaults of every :class:`ContextLogger` for detail files.

    Called by :func:`.log_setup.setup_error_logging`; ``directory=None`` means "no detail
    files unless a logger names its own folder". ``enabled`` and ``include_locals`` are
    ceilings: a logger or a call can turn them off, never on.
    """
    global _detail_settings
    _detail_settings = _DetailSettings(directory, include_locals, enabled)


class ContextLogger:
    """A logger whose lines carry the context and whose errors leave a detail file.

    Args:
        name: Logger name, usually ``__name__``.
        error_dir: Folder for detail files; default ``<log_directory>/errors`` from
            :func:`setup_error_logging`. Without either, no detail file is written.
        include_locals: Record frame locals in detail files (the config must allow it too).
        error_detail_files: Write detail files at all (the config must allow it too).
    """

    def __init__(
        self,
        name: str,
        *,
        error_dir: str | Path | None = None,
        include_locals: bool = True,
        error_detail_files: bool = True,
    ) -> None:
        self.name = name
        self.logger = logging.getLogger(name)
        self.error_dir = Path(error_dir) if error_dir is not None else None
        self.include_locals = include_locals
        self.error_detail_files = error_detail_files

    set_context = staticmethod(set_context)
    clear_context = staticmethod(clear_context)
    context = staticmethod(current_context)
    bind = staticmethod(bind_context)

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at DEBUG with the context."""
        self._log(logging.DEBUG, msg, args, **kwargs)

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at INFO with the context."""
        self._log(logging.INFO, msg, args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        """Log at WARNING with the context."""
        self._log(logging.WARNING, msg, args, **kwargs)

    def error(
        self,
        msg: str,
        *args: Any,
        exc_info: bool | BaseException | ExcInfo | None = True,
        include_locals: bool = True,
        **kwargs: Any,
    ) -> Path | None:
        """Log at ERROR with the current exception, and write an error detail file.

        Returns:
            The detail file, or ``None`` when detail files are off or writing failed (the
            failure is logged as a warning; it never reaches the caller).
        """
        return self._report(logging.ERROR, msg, args, exc_info, include_locals, kwargs)

    def exception(
        self, msg: str, *args: Any, include_locals: bool = True, **kwargs: Any
    ) -> Path | None:
        """Same as :meth:`error`; named like :meth:`logging.Logger.exception`."""
        return self._report(logging.ERROR, msg, args, True, include_locals, kwargs)

    def critical(
        self,
        msg: str,
        *args: Any,
        exc_info: bool | BaseException | ExcInfo | None = True,
        include_locals: bool = True,
        **kwargs: Any,
    ) -> Path | None:
        """Log at CRITICAL; otherwise as :meth:`error`."""
        return self._report(logging.CRITICAL, msg, args, exc_info, include_locals, kwargs)

    def _report(
        self,
        level: int,
        msg: str,
        args: tuple[Any, ...],
        exc_info: bool | BaseException | ExcInfo | None,
        include_locals: bool,
        kwargs: dict[str, Any],
    ) -> Path | None:
        info = _resolve_exc_info(exc_info)
        context = {**current_context(), **context_of(info[1] if info else None)}
        path = self._write_detail_file(
            level, msg, args, info, include_locals, context, sys._getframe(2)
        )
        extra = {**kwargs.pop("extra", {}), "context": context}
        if path is not None:
            extra["error_detail_file"] = str(path)
        self._log(level, msg, args, exc_info=info, depth=1, extra=extra, **kwargs)
        return path

    def _log(
        self,
        level: int,
        msg: str,
        args: tuple[Any, ...],
        *,
        depth: int = 0,
        stacklevel: int = 1,
        extra: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self.logger.isEnabledFor(level):
            return
        extra = {"context": _log_context.get(_EMPTY), **(extra or {})}
        # stacklevel: skip _log, the public method and any helper so the caller's line shows.
        self.logger.log(level, msg, *args, extra=extra, stacklevel=stacklevel + 2 + depth, **kwargs)

    def _write_detail_file(
        self,
        level: int,
        msg: str,
        args: tuple[Any, ...],
        info: ExcInfo | None,
        include_locals: bool,
        context: dict[str, Any],
        caller: FrameType,
    ) -> Path | None:
        settings = _detail_settings
        directory = self.error_dir or settings.directory
        if directory is None or not (self.error_detail_files and settings.enabled):
            return None
        try:
            document = build_error_details(
                _format_message(msg, args),
                logger_name=self.name,
                level=logging.getLevelName(level),
                context=context,
                exc=info[1] if info else None,
                include_locals=include_locals and self.include_locals and settings.include_locals,
                caller=caller,
                disk_path=directory,
                now=dt.datetime.now(dt.UTC),
            )
            return write_error_details(
                directory, document, name_hint=str(context.get("job_id") or self.name)
            )
        except Exception as exc:  # reporting an error must never become a second error
            self.logger.warning("Could not write error detail file in %s: %s", directory, exc)
            return None


def _resolve_exc_info(exc_info: bool | BaseException | ExcInfo | None) -> ExcInfo | None:
    if isinstance(exc_info, BaseException):
        return type(exc_info), exc_info, exc_info.__traceback__
    if isinstance(exc_info, tuple):
        return exc_info if exc_info[0] is not None else None
    if exc_info:
        current = sys.exc_info()
        return current if current[0] is not None else None
    return None


def _format_message(msg: str, args: tuple[Any, ...]) -> str:
    try:
        return msg % args if args else str(msg)
    except (TypeError, ValueError):
        return f"{msg} {args!r}"


__all__ = [
    "ERROR_DETAILS_FOLDER",
    "ContextFilter",
    "ContextLogger",
    "bind_context",
    "clear_context",
    "configure_error_details",
    "context_of",
    "current_context",
    "set_context",
]
