"""The live status files clients and operators read: one per job, and the daemon summary.

The daemon is their only writer (job processes report through heartbeats), and every write
is atomic. Writes are throttled per file so a chatty job cannot turn the share into a hot
spot; state changes are always written at once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from daemon.error_handling.atomic_io import atomic_write_json
from daemon.share import ShareLayout

#: Least seconds between two writes of the same status file (state changes bypass it).
MIN_WRITE_INTERVAL_SECONDS = 1.0


def iso_utc(epoch: float) -> str:
    """An ISO-8601 UTC timestamp, the form every record on the share uses."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class StatusBoard:
    """Writes ``jobs/status/<job_id>.json`` and ``jobs/status/current_status.json``."""

    def __init__(self, layout: ShareLayout, *, clock: Callable[[], float] = time.time) -> None:
        self._layout = layout
        self._clock = clock
        self._last_write: dict[str, float] = {}

    def _due(self, key: str, force: bool) -> bool:
        now = self._clock()
        last = self._last_write.get(key, float("-inf"))
        if not force and now - last < MIN_WRITE_INTERVAL_SECONDS:
            return False
        self._last_write[key] = now
        return True

    def job(self, job_id: str, fields: dict[str, Any], *, force: bool = False) -> None:
        """Publish a job's live status (state, stage, progress, attempts, lease...)."""
        if self._due(job_id, force):
            atomic_write_json(
                self._layout.status / f"{job_id}.json",
                {"job_id": job_id, "updated_at": iso_utc(self._clock()), **fields},
            )

    def forget(self, job_id: str) -> None:
        """Drop throttling state for a finished job (its last status stays on the share)."""
        self._last_write.pop(job_id, None)

    def remove(self, job_id: str) -> None:
        self.forget(job_id)
        with contextlib.suppress(FileNotFoundError):
            (self._layout.status / f"{job_id}.json").unlink()

    def summary(self, fields: dict[str, Any], *, force: bool = False) -> None:
        """Publish the daemon summary: counts, running jobs, breaker state, last update."""
        if self._due("current_status", force):
            atomic_write_json(
                self._layout.status / "current_status.json",
                {"updated_at": iso_utc(self._clock()), **fields},
            )
