"""The daemon's main loop: a bounded pool of job processes that never loses a job.

One thread (the main one) owns every registry move and every status file; the watcher and the
scheduler only post *requests* that the loop executes, so there is exactly one writer per
file. Each tick waits on the children's pipes and exit sentinels (so heartbeats and exits are
handled at once), then enforces timeouts, memory limits and stuck detection, hands finished
jobs to the outcome handler, claims new work while capacity and resources allow, and
publishes status. Shutdown order: stop intake, drain children (lease renewal keeps going),
then checkpoint-and-requeue whatever is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from pathlib import Path
from types import FrameType
from typing import Any

from daemon.circuit_breaker import CircuitBreaker
from daemon.config import Settings
from daemon.error_handling.errors import JobQueueError
from daemon.error_handling.notifier import ErrorNotifier
from daemon.intake import IntakeScanner
from daemon.job_process import JobProcess
from daemon.operator_alerts import OperatorAlerts
from daemon.outcomes import OutcomeHandler
from daemon.registry import JobRecord, JobRegistry, QueuedJob
from daemon.resources import ResourceGate, process_tree_rss_mb
from daemon.share import ShareLayout
from daemon.status import MIN_WRITE_INTERVAL_SECONDS, StatusBoard, iso_utc
from daemon.systemd import SystemdNotifier
from daemon.worker import DEFAULT_RUNNER

logger = logging.getLogger(__name__)

#: Longest wait of one tick; heartbeats and exits wake the loop sooner.
TICK_SECONDS = 0.25


class Supervisor:
    """Runs jobs from the share until told to stop. See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        config_dir: str | None = None,
        job_runner: str = DEFAULT_RUNNER,
        notifier: ErrorNotifier | None = None,
        systemd: SystemdNotifier | None = None,
    ) -> None:
        jobs = settings.jobs
        self.settings = settings
        self.layout = ShareLayout(Path(jobs.share_root))
        self.layout.ensure()
        self.config_dir = config_dir
        self.job_runner = job_runner
        self.host = socket.gethostname()
        self.started_at = time.time()
        self.registry = JobRegistry(self.layout, host=self.host, daemon_pid=os.getpid(),
                                    daemon_started_at=_process_start_time(),
                                    lease_seconds=max(60.0, 3 * jobs.heartbeat_interval))
        self.intake = IntakeScanner(
            self.layout, self.registry, settle_seconds=jobs.settle_seconds,
            auto_jobs_from_csv=jobs.auto_jobs_from_csv,
            default_portfolio_size=jobs.default_portfolio_size,
            input_wait_seconds=jobs.input_wait_seconds,
        )
        self.systemd = systemd or SystemdNotifier.from_environment()
        self.status = StatusBoard(self.layout)
        monitoring = jobs.resource_monitoring
        self.resources = ResourceGate(
            enabled=monitoring.enabled, memory_threshold=monitoring.memory_threshold,
            cpu_threshold=monitoring.cpu_threshold, disk_threshold=monitoring.disk_threshold,
            disk_path=self.layout.root,
        )
        self.alerts = OperatorAlerts(
            notifier, enabled=jobs.enable_notifications,
            consecutive_failure_threshold=jobs.notifications.consecutive_failure_threshold,
            max_job_age_minutes=jobs.recovery.max_job_age_minutes,
        )
        self.outcomes = OutcomeHandler(settings, self.layout, self.registry, self.status,
                                       notifier=notifier, alerts=self.alerts)
        self.breaker = CircuitBreaker(jobs.max_consecutive_failures,
                                      jobs.circuit_breaker_cooldown_seconds)
        self.running: dict[str, tuple[JobProcess, JobRecord]] = {}
        self.requests: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop_requested = False
        self._hurry = False
        self._scan_due = True
        #: Ready entries of the last scan not claimed yet (see ``_claim_new_jobs``).
        self._ready: list[QueuedJob] = []
        #: Monotonic time before which a scan waits while every slot is busy.
        self._next_busy_scan = 0.0
        #: Monotonic time of the next status publication (see ``_publish``).
        self._next_publish = 0.0
        self._ready_sent = False
        self._last_lease_renewal: dict[str, float] = {}
        self._share_unavailable_since: float | None = None
        self._last_status_text = ""
        #: Called on every periodic rescan request (the daemon revives its watcher here).
        self.on_rescan: Callable[[], object] | None = None

    # -- requests from other threads and signals ------------------------------------------

    def request(self, kind: str) -> None:
        """Ask the main loop to do ``kind`` (rescan, stuck_sweep, retries) soon; thread-safe."""
        self.requests.put(kind)
        self.wake()

    def wake(self) -> None:
        """Cut the current tick's wait short (a full pipe already means "wake up")."""
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"!")

    def request_stop(self) -> None:
        """Warm shutdown: stop claiming, drain, then checkpoint-and-requeue."""
        self._stop_requested = True
        self.wake()

    def request_force_stop(self) -> None:
        """Hurry: skip the rest of the drain and stop running jobs now (with checkpoints)."""
        self._hurry = True
        self._stop_requested = True
        self.wake()

    def install_signal_handlers(self) -> None:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            if self._stop_requested:
                logger.warning("second %s: hurrying the shutdown", signal.Signals(signum).name)
                self.request_force_stop()
            else:
                logger.info("%s: warm shutdown, draining running jobs",
                            signal.Signals(signum).name)
                self.request_stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    # -- main loop -------------------------------------------------------------------------

    def run(self, *, until: Callable[[], bool] | None = None) -> int:
        """Run until stopped (or ``until()`` is true); returns the process exit status."""
        self.recover_abandoned()
        drain_deadline: float | None = None
        while True:
            self.tick()
            if until is not None and until():
                self.request_stop()
            if self._stop_requested:
                if drain_deadline is None:
                    self.systemd.stopping()
                    drain_deadline = time.monotonic() + self.settings.jobs.drain_timeout
                    logger.info("shutdown: %d running job(s), draining for up to %.0f s",
                                len(self.running), self.settings.jobs.drain_timeout)
                if self._hurry or time.monotonic() >= drain_deadline:
                    for child, _ in self.running.values():
                        child.kill_child("shutdown")
                if not self.running:
                    break
        self._publish(force=True)
        os.close(self._wake_r)
        os.close(self._wake_w)
        logger.info("daemon stopped; nothing left running")
        return 0

    def _share_trouble(self, exc: OSError) -> None:
        """Log an unavailable share once per outage; jobs wait, nothing is failed for it."""
        if self._share_unavailable_since is None:
            self._share_unavailable_since = time.monotonic()
            logger.error("the share is unavailable (%s); jobs wait until it returns", exc)

    def _share_ok(self) -> None:
        if self._share_unavailable_since is not None:
            logger.warning("the share is available again after %.0f s",
                           time.monotonic() - self._share_unavailable_since)
            self._share_unavailable_since = None
            self._scan_due = True

    def tick(self) -> None:
        """One pass of the loop; public so tests can drive the supervisor step by step."""
        waitables: list[Any] = [self._wake_r]
        for child, _ in self.running.values():
            waitables += child.waitables()
        wait(waitables, timeout=TICK_SECONDS)
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 4096):
                pass
        try:
            self.monitor_children()
            self._apply_cancel_requests()
            self._handle_requests()
            if not self._stop_requested:
                self._claim_new_jobs()
            self._publish()
        except OSError as exc:
            self._share_trouble(exc)
        else:
            self._share_ok()
        self.systemd.ping_watchdog_if_due(time.monotonic())

    def _handle_requests(self) -> None:
        while True:
            try:
                kind = self.requests.get_nowait()
            except queue.Empty:
                break
            if kind == "rescan":
                self._scan_due = True
                if self.on_rescan is not None:
                    self.on_rescan()
            elif kind == "due_retries":
                released = self.registry.release_due_retries(time.time())
                if released:
                    logger.info("%d job(s) due for retry moved back to the queue", released)
                    self._scan_due = True
            elif kind == "stuck_sweep":
                self._sweep_stuck()

    # -- children --------------------------------------------------------------------------

    def monitor_children(self) -> None:
        """Read messages, enforce limits and hand finished jobs to the outcome handler."""
        now = time.monotonic()
        jobs = self.settings.jobs
        for job_id, (child, record) in list(self.running.items()):
            for message in child.read_messages():
                self._on_message(record, child, message)
            if not child.is_alive():
                child.reap()
                try:
                    success = self.outcomes.handle_exit(record, child)
                except JobQueueError as exc:  # e.g. cancelled meanwhile, or taken over
                    logger.warning("%s: outcome not recorded: %s", job_id, exc)
                    success = None
                except OSError as exc:  # share unavailable: keep the job, try again next tick
                    self._share_trouble(exc)
                    continue
                del self.running[job_id]
                self._last_lease_renewal.pop(job_id, None)
                if success is not None:  # shutdowns, cancels and bad input say nothing
                    if self.breaker.record(success, time.time()):
                        logger.error("%d jobs failed in a row: pausing intake for %.0f s",
                                     self.breaker.consecutive_failures,
                                     self.breaker.cooldown_seconds)
                        # this alert also says "N in a row": one alert, not two
                        self.alerts.intake_paused(self.breaker.consecutive_failures,
                                                  self.breaker.cooldown_seconds)
                    else:
                        self.alerts.failures_in_a_row(self.breaker.consecutive_failures)
                continue
            if child.kill_reason is not None:
                if child.grace_expired(now, jobs.kill_grace_seconds):
                    logger.warning("%s: still alive %.0f s after SIGTERM; killing its group",
                                   job_id, jobs.kill_grace_seconds)
                    child.kill_child(child.kill_reason, hard=True)
                continue
            if child.elapsed_seconds(now) > child.timeout_seconds:
                logger.error("%s: timed out after %.0f s; stopping it", job_id,
                             child.timeout_seconds)
                child.kill_child("timeout")
            elif child.pid and process_tree_rss_mb(child.pid) > jobs.max_job_memory_mb:
                logger.error("%s: uses more than %.0f MB; killing it", job_id,
                             jobs.max_job_memory_mb)
                child.kill_child("memory", hard=True)
            elif (not child.long_running_warned and
                  child.elapsed_seconds(now) > jobs.notifications.stuck_job_threshold_minutes * 60):
                child.long_running_warned = True
                self.alerts.long_running(job_id, child.elapsed_seconds(now))
            self._renew_lease(record, child, now)

    def _apply_cancel_requests(self) -> None:
        """Stop running jobs an operator cancelled (the CLI cannot signal our children)."""
        try:
            names = os.listdir(self.layout.cancel_requests)
        except FileNotFoundError:
            return
        for name in names:
            entry = self.running.get(name)
            if entry is not None:
                if entry[0].kill_reason is None:
                    logger.warning("%s: cancelled by an operator; stopping it", name)
                    entry[0].kill_child("cancel")
                continue  # the request is consumed when the job's outcome is recorded
            if not self.layout.record_path(self.layout.processing, name).exists():
                # Not running anywhere (finished, or a stray name): nothing left to cancel.
                # Requests for jobs in processing/ stay: another daemon runs them, or they are
                # abandoned and recover_abandoned() honours the request.
                with contextlib.suppress(FileNotFoundError):
                    (self.layout.cancel_requests / name).unlink()

    def _sweep_stuck(self) -> None:
        now = time.monotonic()
        threshold = self.settings.jobs.stuck_job_threshold
        for job_id, (child, _) in self.running.items():
            if child.kill_reason is None and child.idle_seconds(now) > threshold:
                logger.error("%s: no progress for %.0f s; killing it as stuck", job_id,
                             child.idle_seconds(now))
                child.kill_child("stuck", hard=True)

    def _on_message(self, record: JobRecord, child: JobProcess, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "log":
            level = logging.getLevelName(message.get("level", "WARNING"))
            logging.getLogger(message.get("logger", "job")).log(
                level if isinstance(level, int) else logging.WARNING, "%s: %s",
                record.job_id, message.get("message"))
        elif kind in ("boot", "heartbeat"):
            self.status.job(record.job_id, self._job_status(record, child))

    def _renew_lease(self, record: JobRecord, child: JobProcess, now: float) -> None:
        interval = self.settings.jobs.heartbeat_interval
        if now - self._last_lease_renewal.get(record.job_id, float("-inf")) >= interval:
            self._last_lease_renewal[record.job_id] = now
            self.registry.heartbeat(record, pid=child.pid)

    def _job_status(self, record: JobRecord, child: JobProcess) -> dict[str, Any]:
        beat = child.heartbeat
        return {
            "state": "running", "stage": beat.get("stage"), "algorithm": beat.get("algorithm"),
            "iteration": beat.get("iteration"), "best_fitness": beat.get("best_fitness"),
            "progress": beat.get("progress", 0.0), "attempts": record.attempts,
            "host": self.host, "pid": child.pid,
            "heartbeat_at": iso_utc(beat["time"]) if "time" in beat else None,
            "started_at": record.started_at,
        }

    # -- intake ----------------------------------------------------------------------------

    def _claim_new_jobs(self) -> None:
        """Scan when asked to, then claim ready jobs while slots are free.

        The ready list of the last scan is kept, so a freed slot takes the next job at once
        instead of rescanning the whole queue (a rescan per job made each job cost time in
        proportion to the backlog). Claiming re-reads each file, so a stale entry is safe;
        new drops and the periodic rescan refresh the list. While every slot is busy, a due
        scan still runs, at most every ``scan_interval``: broken drops are failed and the
        backlog warning fires while long jobs hold the slots, not only once one ends.
        """
        jobs = self.settings.jobs
        full = len(self.running) >= jobs.max_concurrent_jobs
        if self._scan_due and (not full or time.monotonic() >= self._next_busy_scan):
            self._scan_due = False
            try:
                report = self.intake.scan()
            except OSError:  # the share is unavailable: wait for it, fail nothing
                self._scan_due = True
                raise
            self._ready = report.jobs
            self.alerts.queue_wait(report.oldest_wait_seconds)
            if full:
                self._next_busy_scan = time.monotonic() + jobs.scan_interval
        if full or not self._ready:
            return
        now = time.time()
        if self.breaker.is_open(now) or self.resources.should_wait(now):
            return
        while self._ready and len(self.running) < jobs.max_concurrent_jobs:
            entry = self._ready[0]
            try:
                record = self.registry.claim(entry)
            except JobQueueError as exc:
                logger.error("cannot claim %s: %s", entry.job_id, exc)
                self._ready = []  # try again after the next scan, not on every tick
                return
            del self._ready[0]
            if record is not None:
                self._start(record)

    def _start(self, record: JobRecord) -> None:
        jobs = self.settings.jobs
        spec_timeout = record.spec.get("timeout_seconds")
        timeout = float(spec_timeout) if isinstance(spec_timeout, int | float) else jobs.job_timeout
        payload = self.outcomes.payload(record, job_runner=self.job_runner,
                                        config_dir=self.config_dir, timeout_seconds=timeout)
        child = JobProcess.start_child(record.job_id, payload, timeout_seconds=timeout)
        self.registry.heartbeat(record, pid=child.pid)
        self.running[record.job_id] = (child, record)
        logger.info("%s: started attempt %d as pid %s", record.job_id, record.attempts, child.pid)
        self.status.job(record.job_id, self._job_status(record, child), force=True)


    # -- restart safety --------------------------------------------------------------------

    def recover_abandoned(self) -> None:
        """Requeue (with resume) every processing/ entry whose owner is gone."""
        for record in self.registry.abandoned(time.time()):
            lease = record.lease or {}
            pid = lease.get("pid")
            if pid and lease.get("host") == self.host:
                try:
                    os.killpg(int(pid), signal.SIGKILL)  # an orphan of a dead daemon
                    logger.warning("%s: killed orphaned job process group %s", record.job_id, pid)
                except (ProcessLookupError, PermissionError):
                    pass
            try:
                self.outcomes.recover_abandoned(record)
            except JobQueueError as exc:  # another daemon recovered it first
                logger.info("%s: not recovered here: %s", record.job_id, exc)

    # -- publishing ------------------------------------------------------------------------

    def _publish(self, *, force: bool = False) -> None:
        """Write the daemon summary and the systemd status, at most once per
        ``MIN_WRITE_INTERVAL_SECONDS`` unless forced: counting the registries lists every
        folder (completed/ keeps every job ever run), which must not happen on every tick.
        """
        now_monotonic = time.monotonic()
        if not force and now_monotonic < self._next_publish:
            return
        self._next_publish = now_monotonic + MIN_WRITE_INTERVAL_SECONDS
        counts = self.registry.counts()
        now = time.time()
        summary = {
            "host": self.host, "pid": os.getpid(), "started_at": iso_utc(self.started_at),
            "state": "stopping" if self._stop_requested else "running",
            "counts": counts, "running": len(self.running),
            "max_concurrent_jobs": self.settings.jobs.max_concurrent_jobs,
            "running_jobs": [
                {"job_id": job_id, "stage": child.heartbeat.get("stage"),
                 "progress": child.heartbeat.get("progress", 0.0), "pid": child.pid}
                for job_id, (child, _) in self.running.items()
            ],
            "circuit_breaker": {
                "open": self.breaker.is_open(now),
                "consecutive_failures": self.breaker.consecutive_failures,
                "open_until": iso_utc(self.breaker.open_until) if self.breaker.is_open(now)
                else None,
            },
            "resource_wait": self.resources.waiting_reason,
        }
        self.status.summary(summary, force=True)
        text = (f"{len(self.running)} running, {counts.get('queue', 0)} queued, "
                f"{counts.get('retry', 0)} retrying, {counts.get('completed', 0)} completed, "
                f"{counts.get('failed', 0)} failed")
        if not self._ready_sent:
            self._ready_sent = True
            self.systemd.ready(text)
        elif text != self._last_status_text:
            self.systemd.status(text)
        self._last_status_text = text



def _process_start_time() -> float:
    import psutil

    return float(psutil.Process().create_time())
