"""The share's job folders as registries: claim, lease, finish, retry, requeue, recover.

A job is one JSON file in exactly one of ``queue/ processing/ retry/ completed/ failed/``;
memory is only a cache. Every move is safe with two daemons on one share:

* claim is an exclusive create of ``processing/<id>.json`` (``os.link``: the loser gets
  EEXIST), then the record is rebuilt from the file actually moved (not from the scan's copy)
  and rewritten with attempts+1 and a lease before the claim returns;
* moving a record this daemon does not own (recovering an abandoned job, releasing a retry)
  first *seizes* it by renaming it to a private temp name; only one rename can win, and a
  seized file left behind by a crash is put back once it is older than the lease;
* a transition writes its destination before it removes its source, so a crash leaves a
  duplicate, never a gap; an abandoned processing entry whose job already reached
  completed/, failed/, retry/ or queue/ is that duplicate and is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

from daemon.error_handling.atomic_io import atomic_write_json, fsync_directory
from daemon.error_handling.errors import JobQueueError, JobSpecError
from daemon.jobs import JobStatus, parse_job_json, sanitize_job_id, validate_job_spec
from daemon.records import (
    JobRecord,
    QueuedJob,
    iso_utc,
    lease_owned_by,
    make_lease,
    read_job_file,
)
from daemon.share import ShareLayout, count_candidates, list_candidates

__all__ = ["DEFAULT_LEASE_SECONDS", "JobRecord", "JobRegistry", "QueuedJob"]

logger = logging.getLogger(__name__)

#: How long a lease lasts without a heartbeat (other hosts take over after that).
DEFAULT_LEASE_SECONDS = 120.0
_SEIZED_SUFFIX = ".seized.tmp"
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}


class JobRegistry:
    """The registries of one share, as seen by one daemon (its host, pid and start time)."""

    def __init__(self, layout: ShareLayout, *, host: str, daemon_pid: int,
                 daemon_started_at: float, clock: Callable[[], float] = time.time,
                 lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.layout = layout
        self.host = host
        self.daemon_pid = daemon_pid
        self.daemon_started_at = daemon_started_at
        #: Wall-clock epoch seconds: records are read by other hosts and after restarts.
        self.clock = clock
        self.lease_seconds = lease_seconds

    # -- queue ----------------------------------------------------------------------------

    def load_queue_entry(self, path: Path, data: dict[str, Any], *,
                         submitted_ts: float) -> QueuedJob:
        """Validate one parsed queue file (a client's job or a record put back by a daemon).

        Raises:
            JobSpecError: The job is invalid; the message names each field.
        """
        if JobRecord.is_record(data):
            try:
                record = JobRecord.from_dict(data)
            except ValueError as exc:
                raise JobSpecError(f"{path.name}: damaged job record: {exc}") from exc
            spec = validate_job_spec(record.spec, source=path.name,
                                     default_job_id=record.job_id)
            return QueuedJob(path, spec, record.submitted_ts, record.source, record)
        spec = validate_job_spec(data, source=path.name,
                                 default_job_id=sanitize_job_id(path.stem))
        source = "csv" if data.get("source") == "csv" else "queue"
        return QueuedJob(path, spec, submitted_ts, source)

    def queued(self) -> list[QueuedJob]:
        """Valid entries of queue/ by (-priority, submitted_ts, name), for status and listings.

        No settle check and no rejection here: :class:`daemon.intake.IntakeScanner` decides
        readiness and is what the supervisor claims from.
        """
        entries = []
        for path in list_candidates(self.layout.queue, ".json"):
            try:
                data = parse_job_json(read_job_file(path), source=path.name)
                entries.append(self.load_queue_entry(path, data,
                                                     submitted_ts=os.lstat(path).st_ctime))
            except (OSError, JobSpecError):
                continue
        return sorted(entries, key=QueuedJob.sort_key)

    def claim(self, entry: QueuedJob) -> JobRecord | None:
        """Move ``entry`` to processing/ and start an attempt; None if another daemon won.

        Raises:
            JobQueueError: The share cannot make hard links (claiming would be unsafe).
        """
        target = self._path(self.layout.processing, entry.job_id)
        try:
            os.link(entry.path, target)
        except (FileExistsError, FileNotFoundError):
            return None
        except OSError as exc:
            if exc.errno in _NO_HARD_LINKS:
                raise JobQueueError(
                    f"cannot claim {entry.path.name}: the share does not support hard links "
                    f"({exc.strerror}); mount it with hard-link support", recoverable=False,
                    context={"path": str(entry.path)}) from exc
            raise
        try:
            os.unlink(entry.path)
        except FileNotFoundError:  # the same file was claimed and finished meanwhile
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
            return None
        fsync_directory(self.layout.queue)
        try:
            data = parse_job_json(read_job_file(target), source=entry.path.name)
            moved = self.load_queue_entry(entry.path, data, submitted_ts=entry.submitted_ts)
            if moved.job_id != entry.job_id:
                raise JobSpecError(f"{entry.path.name}: the job file changed while it was being "
                                   "claimed; drop it again under a new name")
        except (JobSpecError, OSError) as exc:
            error = exc if isinstance(exc, JobSpecError) else JobSpecError(str(exc))
            self.reject(target, error, job_id=entry.job_id)
            return None
        record = moved.record or JobRecord.from_spec(moved.spec, source=moved.source,
                                                     submitted_ts=moved.submitted_ts)
        now = self.clock()
        record.start_attempt(now, self._new_lease(now))
        atomic_write_json(target, record.to_dict())
        logger.info("Claimed job %s (attempt %d)", record.job_id, record.attempts)
        return record

    # -- processing -----------------------------------------------------------------------

    def heartbeat(self, record: JobRecord, *, pid: int | None) -> bool:
        """Push the lease forward durably; False (nothing written) if the job is no longer ours."""
        path = self._path(self.layout.processing, record.job_id)
        current = self.read_record(path)
        if current is None or not self._owns(current.lease):
            logger.warning("Lost the lease of job %s; not renewing it", record.job_id)
            return False
        now = self.clock()
        record.lease = self._new_lease(now, pid=pid)
        atomic_write_json(path, record.to_dict())
        return True

    def running(self) -> list[JobRecord]:
        """Every job in processing/ (any owner)."""
        return [record for _, record in self._records(self.layout.processing)]

    def abandoned(self, now: float) -> list[JobRecord]:
        """Jobs in processing/ whose owner is gone, to be recovered.

        Gone: the lease is on this host and its daemon pid is dead or now belongs to another
        process (start time differs); or it is another host's and has expired; or there is
        no lease (a claim interrupted between link and rewrite) and the file is older than
        the lease time. Side effect: a gone owner's entry whose job already reached another
        registry (a crash between writing the destination and removing the source) is
        removed here.
        """
        self._restore_seized(self.layout.processing, now)
        found = []
        for path, record in self._records(self.layout.processing):
            if not self._owner_gone(record, path, now):
                continue
            elsewhere = self._finished_elsewhere(record.job_id)
            if elsewhere:
                logger.warning("Removing stale processing entry of job %s (already in %s)",
                               record.job_id, elsewhere)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            found.append(record)
        return found

    def complete(self, record: JobRecord, result: dict[str, Any]) -> Path:
        """processing → completed/<id>.json (the final record clients poll)."""
        return self._finish(record, JobStatus.COMPLETED, "completed", result)

    def fail(self, record: JobRecord, error: dict[str, Any]) -> Path:
        """processing → failed/<id>.json with ``error`` {code, message, stage}."""
        error = {**error, "stage": error.get("stage") or "run"}
        return self._finish(record, JobStatus.FAILED, "failed", {"error": error}, error)

    def schedule_retry(self, record: JobRecord, *, delay_seconds: float, resume: bool,
                       adjustments: dict[str, Any] | None, error: dict[str, Any]) -> Path:
        """processing → retry/<id>.json, due ``delay_seconds`` from now."""
        source = self._take(record)
        now = self.clock()
        record.close_attempt(now, "retry", error)
        record.state, record.resume = JobStatus.RETRYING, resume
        record.adjustments.update(adjustments or {})
        record.next_attempt_at = now + delay_seconds
        target = atomic_write_json(self._path(self.layout.retry, record.job_id), record.to_dict())
        self._remove(source)
        logger.info("Job %s will be retried in %.0f s (attempt %d failed)", record.job_id,
                    delay_seconds, record.attempts)
        return target

    def requeue(self, record: JobRecord, *, resume: bool, refund_attempt: bool) -> Path:
        """processing → queue (shutdown, or recovery of an abandoned job)."""
        source = self._take(record)
        record.close_attempt(self.clock(), "requeued_refunded" if refund_attempt else "requeued")
        if refund_attempt:
            record.attempts = max(0, record.attempts - 1)
        record.state, record.resume = JobStatus.QUEUED, resume
        target = atomic_write_json(self._free_queue_path(record.job_id), record.to_dict())
        self._remove(source)
        return target

    # -- retry ----------------------------------------------------------------------------

    def retrying(self) -> list[JobRecord]:
        """Every job in retry/."""
        return [record for _, record in self._records(self.layout.retry)]

    def due_retries(self, now: float) -> list[JobRecord]:
        """Jobs in retry/ whose next attempt is due."""
        return [r for r in self.retrying() if (r.next_attempt_at or 0.0) <= now]

    def release_due_retries(self, now: float) -> int:
        """Move every due retry back to queue/; returns how many moved."""
        self._restore_seized(self.layout.retry, now)
        released = 0
        for record in self.due_retries(now):
            path = self._path(self.layout.retry, record.job_id)
            seized = self._seize(path)
            if seized is None:  # another daemon released it first
                continue
            current = self.read_record(seized)
            if current is None:
                os.rename(seized, path)
                continue
            current.state, current.next_attempt_at = JobStatus.QUEUED, None
            atomic_write_json(self._free_queue_path(current.job_id), current.to_dict())
            self._remove(seized)
            released += 1
        return released

    # -- lookups and rejection ------------------------------------------------------------

    def find(self, job_id: str) -> tuple[str, Path] | None:
        """Which registry holds ``<job_id>.json``: processing, retry, queue, completed, failed."""
        return next(self._holders(job_id), None)

    def counts(self) -> dict[str, int]:
        """Number of jobs per registry: queue, processing, retry, completed, failed."""
        return {name: count_candidates(getattr(self.layout, name), ".json")
                for name in ("queue", "processing", "retry", "completed", "failed")}

    def read_record(self, path: Path) -> JobRecord | None:
        """The record at ``path`` (a client's job file is converted), None if unreadable."""
        try:
            data = parse_job_json(read_job_file(path), source=path.name)
            if JobRecord.is_record(data):
                return JobRecord.from_dict(data)
            # A claim interrupted between its link and its rewrite left the client's file.
            entry = self.load_queue_entry(path, data, submitted_ts=os.lstat(path).st_ctime)
            return JobRecord.from_spec(entry.spec, source=entry.source,
                                       submitted_ts=entry.submitted_ts)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, JobSpecError) as exc:
            logger.error("Unreadable job record %s: %s", path, exc)
            return None

    def reject(self, path: Path | None, error: JobSpecError, *, job_id: str,
               spec: dict[str, Any] | None = None) -> Path:
        """Write a failed/ record for an invalid drop, then remove the drop (if ``path``).

        The record is ``failed/<job_id>.json`` unless that id is already known anywhere
        (a duplicate drop must not overwrite the real job's record); then it gets a
        ``<job_id>.rejected-<timestamp>.json`` name.
        """
        if spec is None and path is not None:
            with contextlib.suppress(OSError, JobSpecError):
                spec = parse_job_json(read_job_file(path), source=path.name)
        now = self.clock()
        record = {**(spec or {}), "job_id": job_id, "status": JobStatus.FAILED.value,
                  "attempts": 0, "finished_at": iso_utc(now),
                  "error": {"code": error.error_code, "message": error.message,
                            "stage": "intake"}}
        if path is not None:
            record["source_file"] = path.name
        target = self._path(self.layout.failed, job_id)
        if any(held != path for _, held in self._holders(job_id)):
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
            target = self._unused(self.layout.failed, f"{job_id}.rejected-{stamp}")
        atomic_write_json(target, record)
        if path is not None:
            self._remove(path)
        logger.warning("Rejected job %s: %s", job_id, error.message)
        return target

    def locate(self, job_id: str) -> tuple[str, Path] | None:
        """Like :meth:`find`, but also finds a queued job whose file has another name.

        Clients name their job files freely (``nightly.json`` holding ``"job_id": "abc"``),
        and a requeued record may be ``<job_id>.1.json``; those are found by content.
        """
        found = self.find(job_id)
        if found is not None and found[0] in ("processing", "retry", "queue"):
            return found
        entry = next((e for e in self.queued() if e.job_id == job_id), None)
        return ("queue", entry.path) if entry is not None else found

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _path(folder: Path, job_id: str) -> Path:
        return folder / f"{job_id}.json"

    def _holders(self, job_id: str) -> Iterator[tuple[str, Path]]:
        for name in ("processing", "retry", "queue", "completed", "failed"):
            path = self._path(getattr(self.layout, name), job_id)
            if os.path.lexists(path):
                yield name, path

    @staticmethod
    def _unused(folder: Path, stem: str) -> Path:
        candidate, n = folder / f"{stem}.json", 1
        while os.path.lexists(candidate):
            candidate, n = folder / f"{stem}.{n}.json", n + 1
        return candidate

    def _free_queue_path(self, job_id: str) -> Path:
        return self._unused(self.layout.queue, job_id)

    def _new_lease(self, now: float, pid: int | None = None) -> dict[str, Any]:
        return make_lease(host=self.host, daemon_pid=self.daemon_pid,
                          daemon_started_at=self.daemon_started_at, now=now,
                          lease_seconds=self.lease_seconds, pid=pid)

    def _owns(self, lease: dict[str, Any] | None) -> bool:
        return lease_owned_by(lease, self.host, self.daemon_pid, self.daemon_started_at)

    def _records(self, folder: Path) -> Iterator[tuple[Path, JobRecord]]:
        for path in list_candidates(folder, ".json"):
            record = self.read_record(path)
            if record is not None:
                yield path, record

    def _owner_gone(self, record: JobRecord, path: Path, now: float) -> bool:
        lease = record.lease
        if lease is None:  # interrupted claim: give a claim in progress the lease's time
            with contextlib.suppress(FileNotFoundError):
                return os.lstat(path).st_ctime < now - self.lease_seconds
            return False
        if lease.get("host") != self.host:
            return float(lease.get("expires_at") or 0.0) < now
        if self._owns(lease):
            return False
        try:
            started = psutil.Process(int(lease.get("daemon_pid") or 0)).create_time()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, ValueError):
            return True
        except psutil.AccessDenied:
            return False
        return abs(started - float(lease.get("daemon_started_at") or 0.0)) >= 0.5

    def _finished_elsewhere(self, job_id: str) -> str | None:
        for name in ("completed", "failed", "retry"):
            if os.path.lexists(self._path(getattr(self.layout, name), job_id)):
                return name
        for path in self.layout.queue.glob(f"{job_id}*.json"):
            data = None
            with contextlib.suppress(OSError, json.JSONDecodeError):
                data = json.loads(path.read_bytes())
            if isinstance(data, dict) and JobRecord.is_record(data) and data.get(
                    "job_id") == job_id:
                return "queue"
        return None

    def _take(self, record: JobRecord) -> Path:
        """The processing file to remove after ``record`` moves on (seized if not ours).

        Raises:
            JobQueueError: The job left processing/ or another daemon owns it now.
        """
        path = self._path(self.layout.processing, record.job_id)
        current = self.read_record(path)
        if current is None:
            raise JobQueueError(f"job {record.job_id} is no longer in processing/",
                                context={"job_id": record.job_id})
        if self._owns(current.lease):
            return path
        if current.lease != record.lease:
            raise JobQueueError(f"job {record.job_id} is now owned by another daemon",
                                context={"job_id": record.job_id})
        seized = self._seize(path)
        if seized is None:
            raise JobQueueError(f"job {record.job_id} was recovered by another daemon",
                                context={"job_id": record.job_id})
        return seized

    def _seize(self, path: Path) -> Path | None:
        private = path.with_name(f".{path.name}@{self.host}@{self.daemon_pid}{_SEIZED_SUFFIX}")
        try:
            os.rename(path, private)
        except FileNotFoundError:
            return None
        return private

    def _restore_seized(self, folder: Path, now: float) -> None:
        """Put back files a crashed daemon seized but never moved on."""
        for private in folder.glob(f".*{_SEIZED_SUFFIX}"):
            original = folder / private.name[1:].split("@", 1)[0]
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(private).st_ctime >= now - self.lease_seconds:
                    continue
                if os.path.lexists(original):
                    os.unlink(private)
                else:
                    os.rename(private, original)
                logger.warning("Restored %s left seized by a crashed daemon", original.name)

    def _finish(self, record: JobRecord, status: JobStatus, folder: str,
                fields: dict[str, Any], error: dict[str, Any] | None = None) -> Path:
        return self._finalize(record, self._take(record), status, folder, fields, error)

    def _finalize(self, record: JobRecord, source: Path, status: JobStatus, folder: str,
                  fields: dict[str, Any], error: dict[str, Any] | None) -> Path:
        """Write the final record to ``folder``, then remove ``source`` (the old file)."""
        now = self.clock()
        record.close_attempt(now, folder, error)
        record.state = status
        final = record.final_record(now, status, fields)
        target = atomic_write_json(self._path(getattr(self.layout, folder), record.job_id), final)
        self._remove(source)
        logger.info("Job %s %s after %d attempt(s)", record.job_id, folder, record.attempts)
        return target

    @staticmethod
    def _remove(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fsync_directory(path.parent)
