"""One job process as the supervisor sees it: start, read messages, judge liveness, kill.

Jobs start from a forkserver preloaded with the worker and the workflow, so a job costs a
fork (milliseconds) instead of a fresh interpreter importing numpy, pandas and matplotlib.
The forkserver is single-threaded, which makes forking safe even though the daemon itself
runs threads (watcher, scheduler, notifier).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from typing import Any

from daemon import worker

#: Modules imported once by the forkserver and inherited by every job process.
#: ``daemon.commands`` is there because multiprocessing re-runs the daemon's main module
#: (``python -m daemon.cli`` or the console script) in every child; with what it imports
#: preloaded, that costs nothing per job (otherwise ~130 ms of watchdog, apscheduler and
#: command imports in each job process). Not ``daemon.cli`` itself: re-running a module that
#: is already imported makes runpy warn in every job.
PRELOAD = ["daemon.worker", "daemon.job_runner", "daemon.commands"]

_context: ForkServerContext | None = None


def job_context() -> ForkServerContext:
    """The process context for job processes (created on first use)."""
    global _context
    if _context is None:
        # One BLAS thread per job: jobs already run side by side on few cores, and threaded
        # BLAS made small factorisations 50x slower under load. Set before the forkserver
        # imports numpy, so every job inherits it.
        for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(variable, "1")
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


@dataclass
class JobProcess:
    """A running job: its process, its pipe and what it has told us so far."""

    job_id: str
    process: Any  # multiprocessing's ForkServerProcess (untyped in typeshed)
    conn: Connection
    timeout_seconds: float
    started_monotonic: float
    last_progress_monotonic: float
    heartbeat: dict[str, Any] = field(default_factory=dict)
    final_message: dict[str, Any] | None = None
    #: Why the supervisor is stopping it: timeout, stuck, memory, cancel or shutdown.
    kill_reason: str | None = None
    term_sent_monotonic: float | None = None
    long_running_warned: bool = False
    pid: int | None = None
    reaped: bool = False

    @classmethod
    def start_child(cls, job_id: str, payload: dict[str, Any], *,
                    timeout_seconds: float) -> JobProcess:
        """Start the job process; it makes itself a process-group leader at once."""
        context = job_context()
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(target=worker.main, args=(payload, writer),
                                  name=f"job-{job_id}", daemon=False)
        process.start()
        writer.close()  # the child holds the only write end: EOF on the reader means it died
        now = time.monotonic()
        return cls(job_id=job_id, process=process, conn=reader, timeout_seconds=timeout_seconds,
                   started_monotonic=now, last_progress_monotonic=now, pid=process.pid)

    def waitables(self) -> list[Any]:
        return [self.conn, self.process.sentinel]

    def read_messages(self) -> list[dict[str, Any]]:
        """Everything the child sent since the last call (non-blocking)."""
        messages: list[dict[str, Any]] = []
        with contextlib.suppress(EOFError, OSError):
            while self.conn.poll():
                messages.append(self.conn.recv())
        now = time.monotonic()
        for message in messages:
            kind = message.get("type")
            if kind in ("boot", "heartbeat"):
                progress_key = self._progress_key(message)
                if progress_key != self._progress_key(self.heartbeat) or kind == "boot":
                    self.last_progress_monotonic = now
                if kind == "heartbeat":
                    self.heartbeat = message
            elif kind in ("result", "error", "stopped"):
                self.final_message = message
        return messages

    @staticmethod
    def _progress_key(message: dict[str, Any]) -> tuple[Any, ...]:
        return (message.get("stage"), message.get("algorithm"), message.get("iteration"),
                message.get("evaluations"), message.get("progress"))

    def is_alive(self) -> bool:
        return bool(self.process.is_alive())

    @property
    def exitcode(self) -> int | None:
        code: int | None = self.process.exitcode
        return code

    def elapsed_seconds(self, now: float) -> float:
        return now - self.started_monotonic

    def idle_seconds(self, now: float) -> float:
        """Seconds since the job last made progress (or booted)."""
        return now - self.last_progress_monotonic

    def kill_child(self, reason: str, *, hard: bool = False) -> None:
        """Ask the job's whole process group to stop (SIGTERM), or kill it (SIGKILL)."""
        if self.kill_reason is None:
            self.kill_reason = reason
        if self.pid is None:
            return
        sig = signal.SIGKILL if hard else signal.SIGTERM
        if not hard and self.term_sent_monotonic is None:
            self.term_sent_monotonic = time.monotonic()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def grace_expired(self, now: float, grace_seconds: float) -> bool:
        sent = self.term_sent_monotonic
        return sent is not None and now - sent >= grace_seconds

    def reap(self) -> None:
        """Collect the exit status and kill anything left in the job's process group.

        Idempotent: the supervisor may retry recording an outcome while the share is away.
        """
        if self.reaped:
            return
        self.reaped = True
        self.process.join(timeout=5)
        self.read_messages()
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self.conn.close()
