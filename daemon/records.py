"""The JSON records the registries hold: a job's durable record, its lease, a queue entry.

A record is the whole truth about one job between attempts (attempt count, resume flag,
parameter adjustments, history), so a daemon that restarts rebuilds everything from the
share's folders. Unknown keys are kept on rewrite: a newer daemon's fields survive an older
one touching the file.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.error_handling.errors import JobSpecError
from daemon.jobs import JobSpec, JobStatus, validate_job_spec

#: Format version written into every record; bump when a field changes meaning.
RECORD_VERSION = 1
#: Job files are small; anything bigger is a mistake (a CSV named .json, say).
MAX_JOB_FILE_BYTES = 1_000_000


def read_job_file(path: Path) -> bytes:
    """Read a job file without following a symlink, refusing oversized files.

    Raises:
        FileNotFoundError: The file is gone.
        JobSpecError: It is bigger than ``MAX_JOB_FILE_BYTES``.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_JOB_FILE_BYTES:
            raise JobSpecError(f"{path.name}: the job file is {size:,} bytes; a job file is a "
                               f"small JSON object (at most {MAX_JOB_FILE_BYTES:,} bytes)")
        return handle.read()


def iso_utc(ts: float) -> str:
    """Epoch seconds as ISO-8601 UTC (what clients and logs show)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def make_lease(*, host: str, daemon_pid: int, daemon_started_at: float, now: float,
               lease_seconds: float, pid: int | None = None) -> dict[str, Any]:
    """Who runs a job right now; heartbeats push ``expires_at`` forward.

    ``pid`` is the job's child process, once started.
    """
    return {"host": host, "daemon_pid": daemon_pid, "daemon_started_at": daemon_started_at,
            "pid": pid, "heartbeat_at": now, "expires_at": now + lease_seconds}


def lease_owned_by(lease: dict[str, Any] | None, host: str, daemon_pid: int,
                   daemon_started_at: float) -> bool:
    """Whether ``lease`` names that daemon (pid plus start time: pids get reused)."""
    if not lease:
        return False
    started = lease.get("daemon_started_at")
    return ((lease.get("host"), lease.get("daemon_pid")) == (host, daemon_pid)
            and isinstance(started, int | float) and abs(started - daemon_started_at) < 0.5)


@dataclass
class JobRecord:
    """One job's durable state (daemon_contract.md, "Job record")."""

    job_id: str
    #: The client's job file as written (unknown fields kept), echoed in result records.
    spec: dict[str, Any]
    input_file: str
    portfolio_sizes: list[int]
    submitted_at: str
    submitted_ts: float
    source: str = "queue"
    priority: int = 0
    #: Incremented durably at claim time, so a job that kills its process cannot loop forever.
    attempts: int = 0
    state: JobStatus = JobStatus.QUEUED
    resume: bool = False
    adjustments: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    #: Only while in processing/: see :func:`make_lease`.
    lease: dict[str, Any] | None = None
    next_attempt_at: float | None = None
    error: dict[str, Any] | None = None
    #: Keys this version does not know; written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def is_record(data: dict[str, Any]) -> bool:
        """Whether a JSON object is a daemon record (not a client's job file)."""
        return isinstance(data.get("record_version"), int) and isinstance(data.get("spec"), dict)

    @classmethod
    def from_spec(cls, spec: JobSpec, *, source: str, submitted_ts: float) -> JobRecord:
        """A fresh record for a validated job that has never run."""
        return cls(job_id=spec.job_id, spec=dict(spec.raw), input_file=spec.input_file,
                   portfolio_sizes=list(spec.portfolio_sizes), submitted_at=iso_utc(submitted_ts),
                   submitted_ts=submitted_ts, source=source, priority=spec.priority)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        """Read a record written by :meth:`to_dict`.

        Raises:
            ValueError: A required field is missing or has the wrong type.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        extra = {k: v for k, v in data.items() if k not in known and k != "record_version"}
        try:
            values["state"] = JobStatus(values.get("state", JobStatus.QUEUED.value))
            record = cls(**values, extra=extra)
        except TypeError as exc:
            raise ValueError(f"not a job record: {exc}") from exc
        if not isinstance(record.job_id, str) or not isinstance(record.spec, dict) or not (
                record.lease is None or isinstance(record.lease, dict)):
            raise ValueError("not a job record: job_id, spec or lease has the wrong type")
        return record

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; lease/next_attempt_at/error appear only where they apply."""
        data: dict[str, Any] = {"record_version": RECORD_VERSION, **self.extra}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or (value is None and f.name in (
                    "lease", "next_attempt_at", "error")):
                continue
            if isinstance(value, JobStatus):
                value = value.value
            data[f.name] = value
        return data

    def job_spec(self) -> JobSpec:
        """The validated spec, for the worker (re-checked: the record may be old)."""
        return validate_job_spec(self.spec, source=f"{self.job_id}.json",
                                 default_job_id=self.job_id)

    @property
    def started_at(self) -> str | None:
        """When the current (or last) attempt started."""
        return self.history[-1].get("started_at") if self.history else None

    def start_attempt(self, now: float, lease: dict[str, Any]) -> None:
        """Count the attempt and open its history entry (the caller persists the record)."""
        self.attempts += 1
        self.state = JobStatus.RUNNING
        self.lease = lease
        self.next_attempt_at = None
        self.error = None
        self.history.append({"attempt": self.attempts, "started_at": iso_utc(now),
                             "started_ts": now})

    def close_attempt(self, now: float, outcome: str,
                      error: dict[str, Any] | None = None) -> None:
        """Close the open history entry with its outcome; drop the lease."""
        if not self.history or "finished_at" in self.history[-1]:
            self.history.append({"attempt": self.attempts})
        entry = self.history[-1]
        entry.update(finished_at=iso_utc(now), outcome=outcome)
        if error:
            entry["error"] = error
        self.lease = None

    def final_record(self, now: float, status: JobStatus, fields: dict[str, Any]) -> dict[str, Any]:
        """What clients poll in completed/ or failed/: the original spec plus the outcome."""
        last = self.history[-1] if self.history else {}
        started_ts = float(last.get("started_ts", now))
        final: dict[str, Any] = {
            **self.spec,
            "job_id": self.job_id,
            "status": status.value,
            "attempts": self.attempts,
            "started_at": last.get("started_at", iso_utc(now)),
            "finished_at": iso_utc(now),
            "execution_time": round(now - started_ts, 3),
            "output_dir": f"output/{self.job_id}",
            "portfolio_sizes": self.portfolio_sizes,
            "history": self.history,
        }
        if self.adjustments:
            final["adjustments"] = self.adjustments
        final.update(fields)
        final.update(job_id=self.job_id, status=status.value, attempts=self.attempts)
        return final


#: Keys a final record (:meth:`JobRecord.final_record`) or an intake rejection adds to the spec.
OUTCOME_KEYS = frozenset({"status", "attempts", "started_at", "finished_at", "execution_time",
                          "output_dir", "portfolio_sizes", "history", "adjustments", "error",
                          "source_file"})


def original_spec(final: dict[str, Any]) -> dict[str, Any]:
    """The client's job spec inside a completed/ or failed/ record, to run the job again.

    :meth:`JobRecord.final_record` writes the spec's keys first, then the outcome, ending
    with ``history`` (and ``adjustments``); result fields new to the spec are appended after
    it. So outcome keys are dropped by name and result fields by position. A result field
    that shares a spec key overwrote it in place: ``portfolio_size`` (the best size of a
    sweep) is restored from ``portfolio_sizes``. JSON keeps key order, so this holds for
    records read back from the share.
    """
    keys = list(final)
    end = keys.index("history") + 1 if "history" in final else len(keys)
    spec = {key: final[key] for key in keys[:end] if key not in OUTCOME_KEYS}
    sizes = final.get("portfolio_sizes")
    if isinstance(sizes, list) and sizes and all(isinstance(s, int) for s in sizes):
        spec["portfolio_size"] = sizes[0] if len(sizes) == 1 else [min(sizes), max(sizes)]
    return spec


@dataclass(frozen=True)
class QueuedJob:
    """A validated entry of queue/, ready to be claimed."""

    path: Path
    spec: JobSpec
    #: Arrival time (epoch): the file's ctime for a drop, the original one for a requeued job.
    submitted_ts: float
    source: str = "queue"
    #: The daemon's record when the job was put back (retry, shutdown); None for a new drop.
    record: JobRecord | None = None

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @property
    def priority(self) -> int:
        return self.record.priority if self.record else self.spec.priority

    def sort_key(self) -> tuple[int, float, str]:
        """Higher priority first, then older first, then by file name (stable)."""
        return (-self.priority, self.submitted_ts, self.path.name)
