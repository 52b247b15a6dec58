"""The registries as an operator's command sees them: re-run a finished job, cancel a waiting one.

These moves belong to no daemon, so they follow the registry's rules for moving a record this
process does not own: seize the file by renaming it to a private name (only one rename wins,
so a daemon releasing a retry or claiming a queued job at the same moment cannot also move
it), write the destination, then remove the seized file. Running jobs are not touched here:
only the daemon can stop its children (see ``ShareLayout.cancel_requests``).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import psutil

from daemon.error_handling.atomic_io import atomic_write_json
from daemon.error_handling.errors import JobQueueError, JobSpecError
from daemon.jobs import JobStatus, parse_job_json, validate_job_spec
from daemon.records import JobRecord, iso_utc, original_spec, read_job_file
from daemon.registry import JobRegistry
from daemon.share import ShareLayout

logger = logging.getLogger(__name__)


class OperatorRegistry(JobRegistry):
    """A :class:`JobRegistry` owned by a command-line process, with the operator's moves."""

    @classmethod
    def for_this_process(cls, layout: ShareLayout) -> OperatorRegistry:
        """The registry of ``layout`` as this process (host, pid, start time) sees it."""
        return cls(layout, host=socket.gethostname(), daemon_pid=os.getpid(),
                   daemon_started_at=psutil.Process().create_time())

    def requeue_finished(self, job_id: str, *, by: str) -> tuple[str, Path]:
        """completed/ or failed/ → queue/: run a finished job again, from the start.

        The final record is moved, not copied (intake refuses a new drop whose id already
        has one). The new record keeps the spec, has zero attempts and no resume, and keeps
        the old history plus an entry saying who re-ran it.

        Returns:
            Where the job was ("completed" or "failed") and its new queue file.

        Raises:
            JobQueueError: The job is unknown, not finished (queued, running, waiting for a
                retry), or was moved by someone else meanwhile.
            JobSpecError: Its spec is not valid any more; it cannot run as it is.
        """
        now = self.clock()
        for name in ("completed", "failed"):
            self._restore_seized(getattr(self.layout, name), now)
        found = self.locate(job_id)
        if found is None:
            raise JobQueueError(f"job {job_id} not found", context={"job_id": job_id})
        where, path = found
        if where not in ("completed", "failed"):
            state = {"processing": "running", "retry": "waiting for a retry"}.get(where, "queued")
            raise JobQueueError(f"job {job_id} is {state}, not finished; only completed or "
                                "failed jobs can be retried", context={"job_id": job_id})
        data = parse_job_json(read_job_file(path), source=path.name)
        spec = validate_job_spec(original_spec(data), source=path.name, default_job_id=job_id)
        seized = self._seize(path)
        if seized is None:
            raise JobQueueError(f"job {job_id} was moved by someone else meanwhile",
                                context={"job_id": job_id})
        record = JobRecord.from_spec(spec, source="csv" if spec.raw.get("source") == "csv"
                                     else "queue", submitted_ts=now)
        history = data.get("history")
        record.history = [*(history if isinstance(history, list) else []), {
            "outcome": "retried", "finished_at": iso_utc(now), "by": by,
            "previous_status": where, "previous_attempts": data.get("attempts"),
            **({"error": data["error"]} if isinstance(data.get("error"), dict) else {})}]
        try:
            target = atomic_write_json(self._free_queue_path(job_id), record.to_dict())
        except BaseException:
            os.rename(seized, path)
            raise
        self._remove(seized)
        logger.info("Job %s moved from %s to the queue by %s", job_id, where, by)
        return where, target

    def cancel_waiting(self, job_id: str, error: dict[str, Any]) -> Path | None:
        """queue/ or retry/ → failed/ with ``error``: the record :meth:`fail` would write.

        Args:
            job_id: The job.
            error: ``{code, message, stage}``; ``stage`` defaults to where the job was.

        Returns:
            The failed/ record, or None when the job is not waiting (any more): it was
            claimed, released or finished meanwhile, so the caller looks again.

        Raises:
            JobQueueError: The queued file repeats the id of a finished job, or is not a
                valid job; intake fails either by itself.
        """
        found = self.locate(job_id)
        if found is None or found[0] not in ("queue", "retry"):
            return None
        where, path = found
        for final in ("completed", "failed"):
            if os.path.lexists(self._path(getattr(self.layout, final), job_id)):
                raise JobQueueError(f"{path.name} repeats job id {job_id}, which is already "
                                    f"{final}; the daemon rejects it by itself",
                                    context={"job_id": job_id})
        try:
            submitted_ts = os.lstat(path).st_ctime  # before the rename changes it
        except FileNotFoundError:
            return None
        seized = self._seize(path)
        if seized is None:
            return None
        try:
            data = parse_job_json(read_job_file(seized), source=path.name)
            # The original path: a job file without a job_id takes its id from its name.
            entry = self.load_queue_entry(path, data, submitted_ts=submitted_ts)
        except JobSpecError as exc:
            os.rename(seized, path)
            raise JobQueueError(f"{path.name} is not a valid job ({exc.message}); the daemon "
                                "fails it by itself", context={"job_id": job_id}) from exc
        if entry.job_id != job_id:  # the file was replaced meanwhile
            os.rename(seized, path)
            return None
        record = entry.record or JobRecord.from_spec(entry.spec, source=entry.source,
                                                     submitted_ts=entry.submitted_ts)
        error = {**error, "stage": error.get("stage") or where}
        target = self._finalize(record, seized, JobStatus.FAILED, "failed", {"error": error},
                                error)
        logger.info("Job %s cancelled while %s", job_id, "queued" if where == "queue"
                    else "waiting for a retry")
        return target
