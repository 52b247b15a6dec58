"""Periodic maintenance on APScheduler 3.x: rescans, stuck sweeps, due retries, pruning, summary.

The scheduler never touches the job registries itself. Rescan, stuck-sweep and due-retry
ticks only call ``request(kind)``, which the supervisor turns into an item on its own queue,
so every registry file keeps exactly one writer (DESIGN 3). Only two jobs do work here, in
a separate one-thread executor so slow share I/O never delays a rescan tick: pruning expired
checkpoint folders (the library's lock-aware :func:`prune_expired_jobs`; per-job retention
is the ``CheckpointManager``'s own business) and the daily summary, which only reads the
registries and hands a (title, message) to a sender.

Every job has ``coalesce=True`` (a backlog of missed runs fires once), ``max_instances=1``
(a slow run is never overlapped by the next) and a ``misfire_grace_time`` of one period, so
a run delayed by load still happens while it means something.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from daemon.daily_summary import build_daily_summary, render_daily_summary
from daemon.error_handling.checkpoint import prune_expired_jobs
from daemon.share import ShareLayout

if TYPE_CHECKING:
    from daemon.config import Settings

logger = logging.getLogger(__name__)

#: Request kinds passed to the supervisor's ``request`` callback.
RESCAN, STUCK_SWEEP, DUE_RETRIES = "rescan", "stuck_sweep", "due_retries"
#: Job ids, as listed by :meth:`MaintenanceScheduler.get_jobs`.
PRUNE_CHECKPOINTS, DAILY_SUMMARY = "prune_checkpoints", "daily_summary"
#: Upper bound of the due-retry tick: a retry's backoff is honoured within this many seconds.
MAX_RETRY_CHECK_SECONDS = 5.0
#: How often expired checkpoint folders are looked for.
PRUNE_INTERVAL_SECONDS = 3600.0
#: A daily summary delayed by up to an hour (machine asleep, long pause) is still sent.
SUMMARY_MISFIRE_GRACE_SECONDS = 3600
_DAY_SECONDS = 86400.0
_REQUEST_EXECUTOR, _MAINTENANCE_EXECUTOR = "default", "maintenance"


class MaintenanceScheduler:
    """Owns a ``BackgroundScheduler`` with an in-memory job store and the daemon's jobs.

    Args:
        request: Called with :data:`RESCAN`, :data:`STUCK_SWEEP` or :data:`DUE_RETRIES`;
            must only enqueue (it runs in a scheduler thread).
        layout: The share (read by the daily summary).
        scan_interval_seconds: Period of the full rescan, the source of truth for intake.
        stuck_check_interval_seconds: Period of the stuck-job sweep.
        retry_check_interval_seconds: Period of the due-retry check; default
            ``min(scan_interval_seconds, 5)``.
        checkpoint_dir: Checkpoint base folder to prune; ``None`` disables pruning.
        checkpoint_max_age_days: Age after which a job's checkpoints are removed.
        summary_time: ``"HH:MM"`` (local time of ``timezone``) of the daily summary;
            ``None`` disables it.
        send_summary: Receives the summary's (title, message); required with ``summary_time``.
        timezone: Zone of ``summary_time``; the machine's local zone when omitted.
        clock: Epoch seconds for the summary window (records carry epoch times).

    Raises:
        ValueError: An interval is not positive, or ``summary_time`` comes without a sender.
    """

    def __init__(
        self,
        *,
        request: Callable[[str], object],
        layout: ShareLayout,
        scan_interval_seconds: float,
        stuck_check_interval_seconds: float,
        retry_check_interval_seconds: float | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_max_age_days: float = 7.0,
        summary_time: str | None = None,
        send_summary: Callable[[str, str], object] | None = None,
        timezone: tzinfo | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        retry_seconds = (
            min(scan_interval_seconds, MAX_RETRY_CHECK_SECONDS)
            if retry_check_interval_seconds is None else retry_check_interval_seconds
        )  # fmt: skip
        intervals = {"scan_interval_seconds": scan_interval_seconds,
                     "stuck_check_interval_seconds": stuck_check_interval_seconds,
                     "retry_check_interval_seconds": retry_seconds}
        for name, seconds in intervals.items():
            if seconds <= 0:
                raise ValueError(f"{name} must be greater than 0, got {seconds}")
        if summary_time is not None and send_summary is None:
            raise ValueError("summary_time needs send_summary to deliver the summary")
        self.layout = layout
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoint_max_age_days = checkpoint_max_age_days
        self._request = request
        self._send_summary = send_summary
        self._clock = clock
        self._last_summary_at: float | None = None
        self._scheduler = BackgroundScheduler(
            jobstores={"default": MemoryJobStore()},
            executors={
                _REQUEST_EXECUTOR: ThreadPoolExecutor(
                    2, pool_kwargs={"thread_name_prefix": "scheduler-request"}),
                _MAINTENANCE_EXECUTOR: ThreadPoolExecutor(
                    1, pool_kwargs={"thread_name_prefix": "scheduler-maintenance"}),
            },
            timezone=timezone,
        )  # fmt: skip
        for kind, seconds in ((RESCAN, scan_interval_seconds),
                              (STUCK_SWEEP, stuck_check_interval_seconds),
                              (DUE_RETRIES, retry_seconds)):
            self._add(kind, self._requester(kind), IntervalTrigger(seconds=seconds),
                      grace_seconds=seconds, executor=_REQUEST_EXECUTOR)
        if self.checkpoint_dir is not None:
            self._add(PRUNE_CHECKPOINTS, self.prune_checkpoints,
                      IntervalTrigger(seconds=PRUNE_INTERVAL_SECONDS),
                      grace_seconds=PRUNE_INTERVAL_SECONDS, executor=_MAINTENANCE_EXECUTOR)
        if summary_time is not None:
            hour, minute = _parse_hh_mm(summary_time)
            self._add(DAILY_SUMMARY, self.send_daily_summary,
                      CronTrigger(hour=hour, minute=minute, timezone=timezone),
                      grace_seconds=SUMMARY_MISFIRE_GRACE_SECONDS, executor=_MAINTENANCE_EXECUTOR)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        request: Callable[[str], object],
        send_summary: Callable[[str, str], object] | None,
    ) -> MaintenanceScheduler:
        """Build from the daemon's settings: the supervisor's one-call wiring.

        Pruning follows ``checkpoint.enabled``; the daily summary runs when
        ``notifications.daily_summary`` and ``enable_notifications`` are on and a sender
        is given.
        """
        jobs = settings.jobs
        checkpoint = settings.error_handling.checkpoint
        summary_on = jobs.enable_notifications and jobs.notifications.daily_summary
        return cls(
            request=request,
            layout=ShareLayout(settings.share_root),
            scan_interval_seconds=jobs.scan_interval,
            stuck_check_interval_seconds=jobs.recovery.stuck_job_check_interval,
            checkpoint_dir=checkpoint.base_directory if checkpoint.enabled else None,
            checkpoint_max_age_days=checkpoint.cleanup_after_days,
            summary_time=jobs.notifications.summary_time if summary_on and send_summary else None,
            send_summary=send_summary,
        )

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler thread; APScheduler's own log lines below WARNING are muted."""
        aps_logger = logging.getLogger("apscheduler")
        if aps_logger.level == logging.NOTSET:  # an operator's explicit level wins
            aps_logger.setLevel(logging.WARNING)
        self._scheduler.start()
        logger.info("Maintenance scheduler started: %s",
                    ", ".join(f"{j.id} next {j.next_run_time:%H:%M:%S}" for j in self.get_jobs()))

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling; with ``wait``, also let running jobs end and join every thread."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
            logger.info("Maintenance scheduler stopped")

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def get_jobs(self) -> list[Job]:
        """The scheduled jobs (APScheduler ``Job`` objects), for status and tests."""
        return list(self._scheduler.get_jobs())

    # -- the jobs' work -------------------------------------------------------------------

    def prune_checkpoints(self) -> list[str]:
        """Remove checkpoint folders older than ``checkpoint_max_age_days``.

        Returns:
            The removed job ids (empty when pruning is disabled).
        """
        if self.checkpoint_dir is None:
            return []
        removed = prune_expired_jobs(
            self.checkpoint_dir, max_age_days=self.checkpoint_max_age_days, now=self._clock(),
            keep=self.layout.active_job_ids(),
        )
        if removed:
            logger.info("Pruned expired checkpoints of %d job(s)", len(removed))
        return removed

    def send_daily_summary(self) -> dict[str, object]:
        """Summarise the window since the previous summary (or the last day) and send it.

        Returns:
            The summary sent.
        """
        now = self._clock()
        since = self._last_summary_at if self._last_summary_at is not None else now - _DAY_SECONDS
        summary = build_daily_summary(self.layout, since=since, now=now)
        title, message = render_daily_summary(summary)
        if self._send_summary is not None:
            self._send_summary(title, message)
        self._last_summary_at = now
        logger.info("Daily summary sent: %s", title)
        return summary

    # -- wiring ---------------------------------------------------------------------------

    def _requester(self, kind: str) -> Callable[[], object]:
        return lambda: self._request(kind)

    def _add(self, job_id: str, work: Callable[[], object], trigger: IntervalTrigger | CronTrigger,
             *, grace_seconds: float, executor: str) -> None:
        def run() -> None:
            # Logged here with the job's name, so a failure reads as ours, not APScheduler's,
            # and the next tick runs as usual.
            try:
                work()
            except Exception:
                logger.exception("Scheduled job %s failed; it runs again at its next time",
                                 job_id)

        self._scheduler.add_job(
            run, trigger, id=job_id, name=job_id, executor=executor, coalesce=True,
            max_instances=1, misfire_grace_time=max(1, round(grace_seconds)),
            replace_existing=True,
        )  # fmt: skip


def _parse_hh_mm(text: str) -> tuple[int, int]:
    """``"HH:MM"`` as (hour, minute).

    Raises:
        ValueError: The text is not a 24-hour ``HH:MM`` time.
    """
    hour_text, sep, minute_text = text.partition(":")
    if sep and hour_text.isdigit() and minute_text.isdigit() and len(minute_text) == 2:
        hour, minute = int(hour_text), int(minute_text)
        if hour < 24 and minute < 60:
            return hour, minute
    raise ValueError(f"summary_time must be HH:MM (24-hour), got {text!r}")


__all__ = [
    "DAILY_SUMMARY",
    "DUE_RETRIES",
    "MAX_RETRY_CHECK_SECONDS",
    "PRUNE_CHECKPOINTS",
    "PRUNE_INTERVAL_SECONDS",
    "RESCAN",
    "STUCK_SWEEP",
    "SUMMARY_MISFIRE_GRACE_SECONDS",
    "MaintenanceScheduler",
]
