"""Process-wide logging set-up: console, JSON log files with rotation, uncaught exceptions.

:func:`setup_error_logging` turns the ``logging`` section of the error-handling config into
handlers on the root logger, so every module's ``logging.getLogger(__name__)`` lines land in
``heavy_optimizer.log`` as JSON with the bound context (see :mod:`.context_logger`), errors
also in ``heavy_optimizer_errors.log``, and uncaught exceptions, in any thread, as CRITICAL
with an error detail file instead of a traceback on a terminal nobody watches.

Rotation is safe with one writing process per log folder: ``RotatingFileHandler`` does not
coordinate renames across processes, so a job process should pass a folder of its own
(``log_directory=``) rather than share the daemon's files.
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.handlers
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from .config import ErrorHandlingConfig, LoggingConfig
from .context_logger import (
    ERROR_DETAILS_FOLDER,
    ContextFilter,
    ContextLogger,
    configure_error_details,
)
from .error_details import scrub_text

#: Log files inside the log directory.
MAIN_LOG_NAME = "heavy_optimizer.log"
ERRORS_LOG_NAME = "heavy_optimizer_errors.log"
_MIB = 1024 * 1024


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, thread, message, host, pid, context.

    Context fields are written at the top level (``job_id``, ``stage`` ...) so that ``jq``
    and log search filter on them directly; a context key that clashes with a standard field
    is written as ``context_<key>``. Other ``extra=`` fields follow, then ``exc_info``.
    ``add_fields`` is python-json-logger's extension point; it is overridden to build the
    line in one pass (the generic version renames and merges field by field), which keeps a
    line well under the 50 µs budget (``benchmarks/bench_logging.py``).
    """

    def __init__(self, *, include_context: bool = True) -> None:
        super().__init__(reserved_attrs=[*RESERVED_ATTRS, "host", "pid", "context"])
        self.include_context = include_context

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat()
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["thread"] = record.threadName
        log_data["message"] = record.message
        log_data["host"] = getattr(record, "host", None)
        log_data["pid"] = record.process
        context = getattr(record, "context", None)
        if self.include_context and context:
            for key, value in context.items():
                log_data[f"context_{key}" if key in log_data else key] = value
        skip = self._skip_fields
        for key, value in record.__dict__.items():
            if key not in skip and not key.startswith("_"):
                log_data[key] = value
        log_data.update(message_dict)  # exc_info, stack_info

    def formatException(self, ei: Any) -> str:
        """The traceback text, with secrets in source lines and messages hidden."""
        return scrub_text(logging.Formatter.formatException(self, ei))


class ConsoleFormatter(logging.Formatter):
    """Human form for the terminal: ``time LEVEL logger [job_id=.. stage=..]: message``."""

    def __init__(self, *, include_context: bool = True) -> None:
        super().__init__("%(asctime)s %(levelname)-8s %(name)s%(_context_text)s: %(message)s")
        self.include_context = include_context

    def format(self, record: logging.LogRecord) -> str:
        context = getattr(record, "context", None) if self.include_context else None
        pairs = " ".join(f"{k}={v}" for k, v in context.items()) if context else ""
        record._context_text = f" [{pairs}]" if pairs else ""
        return super().format(record)

    def formatException(self, ei: Any) -> str:
        """The traceback text, with secrets in source lines and messages hidden."""
        return scrub_text(super().formatException(ei))


class SizeRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """``RotatingFileHandler`` that formats each record once and stats only when rolling.

    The stdlib handler formats every record twice (once in ``shouldRollover`` to measure it,
    once to write it) and stats the file twice per line for the bpo-45401 check; with a JSON
    formatter that doubled the cost of a line (see ``benchmarks/bench_logging.py``).
    """

    def format(self, record: logging.LogRecord) -> str:
        cached = getattr(record, "_formatted_by", None)
        if cached is not None and cached[0] is self:
            return str(cached[1])
        text = super().format(record)
        record._formatted_by = (self, text)
        return text

    def shouldRollover(self, record: logging.LogRecord) -> int:
        if self.stream is None:  # opened lazily (delay=True) or after a rollover
            self.stream = self._open()
        if self.maxBytes <= 0:
            return False
        self.stream.seek(0, 2)
        if self.stream.tell() + len(self.format(record)) + 1 < self.maxBytes:
            return False
        return os.path.isfile(self.baseFilename)  # bpo-45401: never roll a FIFO or device


@dataclass
class LoggingHandle:
    """What :func:`setup_error_logging` installed; :meth:`close` removes all of it."""

    log_directory: Path
    handlers: list[logging.Handler]
    _previous_root_level: int
    _previous_excepthook: Any
    _previous_threading_excepthook: Any
    _closed: bool = field(default=False)

    def close(self) -> None:
        """Remove and close the handlers, restore the hooks and the root level. Idempotent."""
        global _active_handle
        with _setup_lock:
            if self._closed:
                return
            self._closed = True
            root = logging.getLogger()
            for handler in self.handlers:
                root.removeHandler(handler)
                handler.close()
            root.setLevel(self._previous_root_level)
            if sys.excepthook is _log_uncaught:  # another hook installed since stays
                sys.excepthook = self._previous_excepthook
            if threading.excepthook is _log_uncaught_in_thread:
                threading.excepthook = self._previous_threading_excepthook
            if _active_handle is self:
                _active_handle = None
                configure_error_details(None)

    def __enter__(self) -> LoggingHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_setup_lock = threading.RLock()
_active_handle: LoggingHandle | None = None
_uncaught = ContextLogger("daemon.error_handling.uncaught")


def setup_error_logging(
    config: LoggingConfig | ErrorHandlingConfig, *, log_directory: str | Path | None = None
) -> LoggingHandle:
    """Configure the root logger: console, JSON log, JSON error log, detail files, hooks.

    Calling it again replaces the previous set-up instead of adding handlers. Installs:
    a console handler (human form, ``console_log_level``); ``heavy_optimizer.log`` (JSON
    lines, ``file_log_level``) and ``heavy_optimizer_errors.log`` (ERROR and above), both
    rotated at ``max_log_size_mb`` with ``backup_count`` backups; and ``sys.excepthook`` /
    ``threading.excepthook`` that log uncaught exceptions as CRITICAL with a detail file.

    Args:
        config: The ``logging`` section, or the whole error-handling config.
        log_directory: Overrides ``config.log_directory`` (tests, the daemon's share root).

    Returns:
        A handle whose ``close()`` removes the handlers and restores the previous hooks.

    Raises:
        OSError: The log directory cannot be created or a log file opened.
    """
    global _active_handle
    settings = config.logging if isinstance(config, ErrorHandlingConfig) else config
    directory = Path(log_directory if log_directory is not None else settings.log_directory)
    with _setup_lock:
        if _active_handle is not None:
            _active_handle.close()
        directory.mkdir(parents=True, exist_ok=True)
        context_filter = ContextFilter()
        console = logging.StreamHandler()
        console.setLevel(settings.console_log_level)
        console.setFormatter(ConsoleFormatter(include_context=settings.include_context))
        handlers: list[logging.Handler] = [console]
        try:
            for name, level in (
                (MAIN_LOG_NAME, settings.file_log_level),
                (ERRORS_LOG_NAME, "ERROR"),
            ):
                handler: logging.Handler = SizeRotatingFileHandler(
                    directory / name,
                    maxBytes=int(settings.max_log_size_mb * _MIB),
                    backupCount=settings.backup_count,
                    encoding="utf-8",
                )
                handler.setLevel(level)
                handler.setFormatter(JsonLineFormatter(include_context=settings.include_context))
                handlers.append(handler)
        except OSError:
            for handler in handlers:
                handler.close()
            raise
        root = logging.getLogger()
        handle = LoggingHandle(
            directory, handlers, root.level, sys.excepthook, threading.excepthook
        )
        for handler in handlers:
            handler.addFilter(context_filter)
            root.addHandler(handler)
        root.setLevel(min(h.level for h in handlers))
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread
        configure_error_details(
            directory / ERROR_DETAILS_FOLDER,
            include_locals=settings.include_locals,
            enabled=settings.error_detail_files,
        )
        _active_handle = handle
    return handle


def _log_uncaught(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(exc_type, KeyboardInterrupt) and _active_handle is not None:
        _active_handle._previous_excepthook(exc_type, exc, tb)  # Ctrl-C is not a crash
        return
    _uncaught.critical(
        "Uncaught exception: %s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb)
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:  # as the default hook: a thread may end this way
        return
    name = args.thread.name if args.thread is not None else "?"
    _uncaught.critical(
        "Uncaught exception in thread %s: %s: %s",
        name,
        args.exc_type.__name__,
        args.exc_value,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
        if args.exc_value is not None
        else False,
    )


__all__ = [
    "ERRORS_LOG_NAME",
    "MAIN_LOG_NAME",
    "ConsoleFormatter",
    "JsonLineFormatter",
    "LoggingHandle",
    "SizeRotatingFileHandler",
    "setup_error_logging",
]
