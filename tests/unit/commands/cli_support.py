"""Helpers for CLI tests: the result type, and share state made by the real registry."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from daemon.error_handling.atomic_io import atomic_write_json
from daemon.registry import JobRecord, JobRegistry
from daemon.share import ShareLayout


@dataclass(frozen=True)
class CliResult:
    """What one ``heavy-optimizer`` run printed and returned."""

    code: int
    out: str
    err: str


#: ``cli(*args)`` runs the command line on the test share (see conftest).
Cli = Callable[..., CliResult]


def daemon_registry(layout: ShareLayout) -> JobRegistry:
    """The registry as a daemon in this process would own it."""
    return JobRegistry(layout, host=socket.gethostname(), daemon_pid=os.getpid(),
                       daemon_started_at=psutil.Process().create_time())


def queue_job(layout: ShareLayout, job_id: str, *, name: str | None = None,
              **fields: Any) -> Path:
    """A client's job file in jobs/queue/ (``name`` defaults to ``<job_id>.json``)."""
    spec = {"job_id": job_id, "input_file": "data.csv", "portfolio_size": 10, **fields}
    return atomic_write_json(layout.queue / (name or f"{job_id}.json"), spec)


def claim(layout: ShareLayout, job_id: str, **fields: Any) -> JobRecord:
    """Queue a job and claim it as the daemon does: it is now running (processing/)."""
    registry = daemon_registry(layout)
    queue_job(layout, job_id, **fields)
    entry = next(e for e in registry.queued() if e.job_id == job_id)
    record = registry.claim(entry)
    assert record is not None
    return record


def fail_job(layout: ShareLayout, job_id: str, **fields: Any) -> dict[str, Any]:
    """A job that ran once and failed: its failed/ record as the daemon writes it."""
    record = claim(layout, job_id, **fields)
    path = daemon_registry(layout).fail(record, {
        "code": "DATA_LOAD_ERROR", "message": "input_file 'data.csv' has no rows",
        "stage": "load"})
    return read(path)


def complete_job(layout: ShareLayout, job_id: str, result: dict[str, Any],
                 **fields: Any) -> dict[str, Any]:
    """A job that ran once and completed with ``result`` (what the job runner returns)."""
    record = claim(layout, job_id, **fields)
    return read(daemon_registry(layout).complete(record, result))


def read(path: Path) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(path.read_text())
    return value
