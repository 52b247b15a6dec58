"""The daemon's own alerts to people: conditions of the service, not of one error.

The library's recovery manager alerts about a job's error when its kind's strategy says so;
these are what only the daemon can see: a job that ran out of retries, failures in a row,
intake paused by the circuit breaker, a queue backing up, a job running long. Each is sent
once per occurrence (the notifier also rate-limits and groups), and nothing here can fail a
job: the notifier sends in the background.
"""

from __future__ import annotations

from typing import Any

from daemon.error_handling.notifier import ErrorNotifier


class OperatorAlerts:
    """Sends the daemon's alerts through an :class:`ErrorNotifier` (or nowhere)."""

    def __init__(self, notifier: ErrorNotifier | None, *, enabled: bool,
                 consecutive_failure_threshold: int, max_job_age_minutes: float) -> None:
        self._notifier = notifier if enabled else None
        self._threshold = consecutive_failure_threshold
        self._max_wait_seconds = max_job_age_minutes * 60
        self._backlog_warned = False

    def send(self, severity: str, title: str, message: str,
             context: dict[str, Any] | None = None) -> None:
        if self._notifier is not None:
            self._notifier.notify(title, message, severity, context)

    def job_failed(self, job_id: str, reason: str, error: dict[str, Any]) -> None:
        self.send("ERROR", f"job {job_id} failed", reason,
                  {"job_id": job_id, "stage": error.get("stage"), "error_code": error.get("code")})

    def failures_in_a_row(self, consecutive_failures: int) -> None:
        """One alert when failures in a row reach the threshold (not one per job)."""
        if consecutive_failures == self._threshold:
            self.send("ERROR", f"{self._threshold} jobs failed in a row",
                      "several consecutive jobs failed; look for a shared cause in jobs/failed/")

    def intake_paused(self, consecutive_failures: int, cooldown_seconds: float) -> None:
        self.send("ERROR", "job intake paused",
                  f"{consecutive_failures} jobs failed in a row; the daemon stops claiming for "
                  f"{cooldown_seconds:.0f} s. Check the failed records for a shared cause "
                  "(disk, database, config).")

    def long_running(self, job_id: str, elapsed_seconds: float) -> None:
        self.send("WARNING", f"job {job_id} is running long",
                  f"{job_id} has run {elapsed_seconds / 60:.0f} minutes and is still making "
                  "progress", {"job_id": job_id})

    def queue_wait(self, oldest_wait_seconds: float) -> None:
        """Warn once when the oldest queued job waits too long; re-arm when it no longer does."""
        if oldest_wait_seconds > self._max_wait_seconds and not self._backlog_warned:
            self._backlog_warned = True
            self.send("WARNING", "queue is backing up",
                      f"the oldest queued job has waited {oldest_wait_seconds / 60:.0f} minutes "
                      f"(limit {self._max_wait_seconds / 60:.0f})")
        elif oldest_wait_seconds <= self._max_wait_seconds:
            self._backlog_warned = False
