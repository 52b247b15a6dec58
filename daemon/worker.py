"""Entry point of one job process: run the job, heartbeat, stop cleanly when told.

The child ↔ parent protocol (STYLE.md 3): the child makes itself a process-group leader (so
the parent can kill the whole tree), ignores SIGINT (Ctrl-C in a terminal is for the daemon),
turns SIGTERM into a cooperative stop at the next safe point (the pipeline then checkpoints),
and reports to the parent only through JSON-able messages on its pipe: ``boot``,
``heartbeat``, ``log`` and finally one of ``result`` / ``error`` / ``stopped``. It always ends
in ``os._exit(ExitCode.X)``. The parent still checks durable files and does not trust the
exit code alone.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from enum import IntEnum
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NoReturn

from daemon.error_handling.errors import (
    HeavyOptimizerError,
    JobTimeoutError,
    MemoryLimitError,
    TerminationRequested,
)

logger = logging.getLogger(__name__)

#: The runner the daemon uses unless a test names another (never taken from the share).
DEFAULT_RUNNER = "daemon.job_runner:run_optimization_job"

#: Signature of a job runner: (payload, heartbeat, stop_check) -> result dict.
JobRunner = Callable[
    [dict[str, Any], Callable[[dict[str, Any]], None], Callable[[], BaseException | None]],
    dict[str, Any],
]


class ExitCode(IntEnum):
    """How a job process ended; the parent reads the message first, this second."""

    OK = 0
    FAILED = 1
    STOPPED = 3
    TIMED_OUT = 4
    CRASHED = 70


class StopState:
    """Collects stop requests from signals; the job polls it at safe points."""

    def __init__(self, deadline_monotonic: float | None) -> None:
        self._terminate = False
        self._deadline = deadline_monotonic

    def request_stop(self, signum: int, _frame: object) -> None:
        self._terminate = True

    def check(self) -> BaseException | None:
        if self._terminate:
            return TerminationRequested("job process received SIGTERM")
        if self._deadline is not None and time.monotonic() >= self._deadline:
            return JobTimeoutError("the job exceeded its time limit (soft deadline in the job)")
        return None


class Heartbeat:
    """Sends progress to the parent at most every ``interval_seconds`` (and on stage change).

    Heartbeats come from the job's own progress callbacks, never from a timer thread: a job
    whose computation hangs stops heartbeating, which is exactly what stuck detection needs.
    """

    def __init__(self, conn: Connection, *, interval_seconds: float) -> None:
        self._conn = conn
        self._interval = interval_seconds
        self._last_sent = float("-inf")
        self._last_stage: str | None = None

    def __call__(self, payload: dict[str, Any]) -> None:
        now = time.monotonic()
        stage = payload.get("stage")
        if stage == self._last_stage and now - self._last_sent < self._interval:
            return
        self._last_sent, self._last_stage = now, stage
        _send(self._conn, {"type": "heartbeat", "time": time.time(), **payload})


class _PipeLogHandler(logging.Handler):
    """Forwards WARNING+ records to the daemon, the only writer of the shared log files."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(logging.WARNING)
        self._conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        _send(self._conn, {"type": "log", "level": record.levelname, "logger": record.name,
                           "message": record.getMessage()})


def _send(conn: Connection, message: dict[str, Any]) -> None:
    # A gone parent is not the job's problem: it still checkpoints; a new daemon recovers it.
    with contextlib.suppress(OSError, ValueError):
        conn.send(message)


def _setup_logging(conn: Connection, job_log: Path | None, level: int) -> None:
    from pythonjsonlogger.json import JsonFormatter

    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level)
    root.addHandler(_PipeLogHandler(conn))
    if job_log is not None:
        job_log.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(job_log, encoding="utf-8")
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={"asctime": "time"}
        ))
        root.addHandler(handler)


def resolve_runner(path: str) -> JobRunner:
    """Import ``module:function``; the path comes from the daemon's code or tests only."""
    module_name, _, attribute = path.partition(":")
    runner: JobRunner = getattr(importlib.import_module(module_name), attribute)
    return runner


def main(payload: dict[str, Any], conn: Connection) -> NoReturn:
    """Run one job in this (child) process and exit with an :class:`ExitCode`.

    Args:
        payload: JSON-able job description from the supervisor: ``job_id``, ``runner``,
            ``timeout_seconds``, ``heartbeat_interval``, ``job_log`` and what the runner needs.
        conn: The write end of the pipe to the supervisor.
    """
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    timeout = payload.get("timeout_seconds")
    stop = StopState(time.monotonic() + float(timeout) if timeout else None)
    signal.signal(signal.SIGTERM, stop.request_stop)
    job_log = Path(payload["job_log"]) if payload.get("job_log") else None
    _setup_logging(conn, job_log, logging.DEBUG if payload.get("debug") else logging.INFO)
    _send(conn, {"type": "boot", "pid": os.getpid(), "time": time.time()})
    heartbeat = Heartbeat(conn, interval_seconds=float(payload.get("heartbeat_interval", 2.0)))
    code = ExitCode.CRASHED
    try:
        runner = resolve_runner(payload.get("runner") or DEFAULT_RUNNER)
        result = runner(payload, heartbeat, stop.check)
        _send(conn, {"type": "result", "result": result})
        code = ExitCode.OK
    except TerminationRequested:
        _send(conn, {"type": "stopped"})
        code = ExitCode.STOPPED
    except JobTimeoutError as exc:
        _send(conn, {"type": "error", "error": exc.to_dict()})
        code = ExitCode.TIMED_OUT
    except HeavyOptimizerError as exc:
        logger.error("job %s failed: %s", payload.get("job_id"), exc.message)
        _send(conn, {"type": "error", "error": exc.to_dict()})
        code = ExitCode.FAILED
    except MemoryError:
        error = MemoryLimitError("the job ran out of memory", context={"job_id": payload["job_id"]})
        _send(conn, {"type": "error", "error": error.to_dict()})
        code = ExitCode.FAILED
    except BaseException as exc:  # a bug: report it with its traceback, never hang
        logger.critical("job %s crashed: %s", payload.get("job_id"), exc, exc_info=True)
        _send(conn, {"type": "error", "error": {
            "type": type(exc).__name__, "code": "JOB_CRASHED", "recoverable": True,
            "message": f"{type(exc).__name__}: {exc}",
            "context": {"traceback": "".join(traceback.format_exception(exc))[-4000:]},
        }})
        code = ExitCode.CRASHED
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    conn.close()
    os._exit(code)
