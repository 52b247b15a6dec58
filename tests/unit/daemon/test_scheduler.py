"""MaintenanceScheduler on a real APScheduler BackgroundScheduler."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from daemon.config import load_settings
from daemon.scheduler import (
    DAILY_SUMMARY,
    DUE_RETRIES,
    PRUNE_CHECKPOINTS,
    RESCAN,
    STUCK_SWEEP,
    SUMMARY_MISFIRE_GRACE_SECONDS,
    MaintenanceScheduler,
)
from daemon.share import ShareLayout

pytestmark = pytest.mark.timeout(30)

#: Longest a test waits for a scheduled job that must fire within a fraction of a second.
WAIT_SECONDS = 10.0
DAY = 86400.0


class Requests:
    """The supervisor's side: one Event per request kind."""

    def __init__(self) -> None:
        self.events = {kind: threading.Event() for kind in (RESCAN, STUCK_SWEEP, DUE_RETRIES)}
        self.kinds: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, kind: str) -> None:
        with self._lock:
            self.kinds.append(kind)
        self.events[kind].set()


class Summaries:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.event = threading.Event()

    def __call__(self, title: str, message: str) -> None:
        self.sent.append((title, message))
        self.event.set()


@pytest.fixture
def layout(tmp_path: Path) -> ShareLayout:
    share = ShareLayout(tmp_path / "share")
    share.ensure()
    return share


@pytest.fixture
def make_scheduler(layout: ShareLayout) -> Iterator[Callable[..., MaintenanceScheduler]]:
    made: list[MaintenanceScheduler] = []

    def make(**overrides: object) -> MaintenanceScheduler:
        options: dict[str, object] = {
            "request": Requests(), "layout": layout, "scan_interval_seconds": 2.0,
            "stuck_check_interval_seconds": 60.0, "checkpoint_dir": layout.checkpoints,
            "checkpoint_max_age_days": 7.0, "summary_time": "07:30",
            "send_summary": Summaries(), "timezone": UTC,
        }  # fmt: skip
        options.update(overrides)
        scheduler = MaintenanceScheduler(**options)  # type: ignore[arg-type]
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.shutdown(wait=True)


def _run_now(scheduler: MaintenanceScheduler, job_id: str) -> None:
    (job,) = [j for j in scheduler.get_jobs() if j.id == job_id]
    job.modify(next_run_time=datetime.now(UTC))


def _wait_until(condition: Callable[[], bool]) -> bool:
    """Poll briefly for something no callback announces (a folder disappearing)."""
    done = threading.Event()
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if condition():
            return True
        done.wait(0.02)
    return condition()


def test_every_job_is_registered_with_coalesce_one_instance_and_a_grace(
    make_scheduler: Callable[..., MaintenanceScheduler],
) -> None:
    # Given a scheduler with every job enabled
    scheduler = make_scheduler(scan_interval_seconds=2.0, stuck_check_interval_seconds=60.0)
    scheduler.start()
    jobs = {job.id: job for job in scheduler.get_jobs()}

    # Then the five jobs exist, never overlap, coalesce backlogs and have a real grace
    assert set(jobs) == {RESCAN, STUCK_SWEEP, DUE_RETRIES, PRUNE_CHECKPOINTS, DAILY_SUMMARY}
    for job in jobs.values():
        assert job.coalesce is True
        assert job.max_instances == 1
        assert job.misfire_grace_time is not None and job.misfire_grace_time >= 1
    periods = {
        job_id: job.trigger.interval for job_id, job in jobs.items()
        if isinstance(job.trigger, IntervalTrigger)
    }  # fmt: skip
    assert periods == {
        RESCAN: timedelta(seconds=2), STUCK_SWEEP: timedelta(seconds=60),
        DUE_RETRIES: timedelta(seconds=2), PRUNE_CHECKPOINTS: timedelta(hours=1),
    }  # fmt: skip
    assert jobs[STUCK_SWEEP].misfire_grace_time == 60
    assert jobs[PRUNE_CHECKPOINTS].misfire_grace_time == 3600
    assert jobs[DAILY_SUMMARY].misfire_grace_time == SUMMARY_MISFIRE_GRACE_SECONDS
    # Slow share I/O runs apart from the request ticks
    assert {jobs[k].executor for k in (RESCAN, STUCK_SWEEP, DUE_RETRIES)} == {"default"}
    assert {jobs[k].executor for k in (PRUNE_CHECKPOINTS, DAILY_SUMMARY)} == {"maintenance"}


def test_due_retry_tick_is_capped_at_five_seconds(
    make_scheduler: Callable[..., MaintenanceScheduler],
) -> None:
    scheduler = make_scheduler(scan_interval_seconds=30.0)
    (job,) = [j for j in scheduler.get_jobs() if j.id == DUE_RETRIES]
    assert job.trigger.interval == timedelta(seconds=5)


def test_optional_jobs_can_be_left_out(make_scheduler: Callable[..., MaintenanceScheduler]) -> None:
    scheduler = make_scheduler(checkpoint_dir=None, summary_time=None, send_summary=None)
    assert {job.id for job in scheduler.get_jobs()} == {RESCAN, STUCK_SWEEP, DUE_RETRIES}
    assert scheduler.prune_checkpoints() == []


def test_request_callbacks_fire(make_scheduler: Callable[..., MaintenanceScheduler]) -> None:
    # Given very short periods
    requests = Requests()
    scheduler = make_scheduler(
        request=requests, scan_interval_seconds=0.05, stuck_check_interval_seconds=0.05,
        retry_check_interval_seconds=0.05,
    )  # fmt: skip
    # When the scheduler runs
    scheduler.start()
    # Then the supervisor receives each kind of request
    for kind, event in requests.events.items():
        assert event.wait(WAIT_SECONDS), f"no {kind} request"
    assert scheduler.running


def test_a_failing_job_is_logged_and_runs_again(
    make_scheduler: Callable[..., MaintenanceScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a request callback that fails on its first call
    calls: list[str] = []
    second = threading.Event()

    def request(kind: str) -> None:
        calls.append(kind)
        if len(calls) == 1:
            raise RuntimeError("queue closed")
        second.set()

    scheduler = make_scheduler(
        request=request, scan_interval_seconds=0.05, stuck_check_interval_seconds=3600.0,
        retry_check_interval_seconds=3600.0,
    )  # fmt: skip
    with caplog.at_level(logging.ERROR, logger="daemon.scheduler"):
        scheduler.start()
        # Then the next tick still runs, and the failure was logged under our name
        assert second.wait(WAIT_SECONDS)
    assert "Scheduled job rescan failed" in caplog.text
    assert "queue closed" in caplog.text


@pytest.mark.parametrize(("text", "hour", "minute"), [("07:30", 7, 30), ("00:00", 0, 0),
                                                       ("23:59", 23, 59)])
def test_daily_summary_fires_at_summary_time(
    make_scheduler: Callable[..., MaintenanceScheduler], text: str, hour: int, minute: int
) -> None:
    scheduler = make_scheduler(summary_time=text)
    scheduler.start()
    (job,) = [j for j in scheduler.get_jobs() if j.id == DAILY_SUMMARY]
    assert isinstance(job.trigger, CronTrigger)
    when = job.next_run_time
    assert (when.hour, when.minute, when.second) == (hour, minute, 0)
    assert timedelta(0) < when - datetime.now(UTC) <= timedelta(days=1)


@pytest.mark.parametrize("text", ["7:3", "24:00", "12:60", "noon", "12-30"])
def test_bad_summary_time_is_refused(
    make_scheduler: Callable[..., MaintenanceScheduler], text: str
) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        make_scheduler(summary_time=text)


def test_bad_arguments_are_refused(make_scheduler: Callable[..., MaintenanceScheduler]) -> None:
    with pytest.raises(ValueError, match="send_summary"):
        make_scheduler(send_summary=None)
    with pytest.raises(ValueError, match="stuck_check_interval_seconds"):
        make_scheduler(stuck_check_interval_seconds=0)


def test_daily_summary_job_reads_the_share_and_sends(
    make_scheduler: Callable[..., MaintenanceScheduler], layout: ShareLayout
) -> None:
    # Given two jobs finished in the last day and one failed
    now = time.time()
    for job_id, folder in (("a", layout.completed), ("b", layout.completed), ("c", layout.failed)):
        record = {"job_id": job_id, "attempts": 1, "finished_ts": now - 60, "execution_time": 5.0,
                  "error": {"code": "NETWORK_ERROR", "message": "x", "stage": "load"}}
        (folder / f"{job_id}.json").write_text(json.dumps(record), encoding="utf-8")
    summaries = Summaries()
    scheduler = make_scheduler(send_summary=summaries)
    scheduler.start()
    # When the daily summary job runs in the scheduler
    _run_now(scheduler, DAILY_SUMMARY)
    # Then the sender received the rendered summary
    assert summaries.event.wait(WAIT_SECONDS)
    title, message = summaries.sent[0]
    assert title == "Heavy Optimizer daily summary: 2 completed, 1 failed"
    assert "NETWORK_ERROR: 1" in message


def test_consecutive_summaries_do_not_overlap(
    make_scheduler: Callable[..., MaintenanceScheduler],
) -> None:
    clock = iter([1000.0 * DAY, 1001.0 * DAY])
    scheduler = make_scheduler(clock=lambda: next(clock))
    first = scheduler.send_daily_summary()
    second = scheduler.send_daily_summary()
    assert (first["since"], first["now"]) == (999.0 * DAY, 1000.0 * DAY)
    assert (second["since"], second["now"]) == (1000.0 * DAY, 1001.0 * DAY)


def test_prune_job_removes_expired_checkpoints(
    make_scheduler: Callable[..., MaintenanceScheduler], layout: ShareLayout
) -> None:
    # Given one job whose checkpoints are 30 days old and one from now
    old, fresh = layout.checkpoints / "old_job", layout.checkpoints / "fresh_job"
    for folder in (old, fresh):
        folder.mkdir()
        (folder / "c1.ckpt").write_bytes(b"x")
    month_ago = time.time() - 30 * DAY
    os.utime(old / "c1.ckpt", (month_ago, month_ago))
    scheduler = make_scheduler(checkpoint_max_age_days=7.0)
    scheduler.start()
    # When the hourly prune job runs in the scheduler
    _run_now(scheduler, PRUNE_CHECKPOINTS)
    # Then only the expired folder is gone
    assert _wait_until(lambda: not old.exists())
    assert fresh.exists()


def test_shutdown_joins_every_scheduler_thread(
    make_scheduler: Callable[..., MaintenanceScheduler],
) -> None:
    requests = Requests()
    scheduler = make_scheduler(request=requests, scan_interval_seconds=0.05)
    scheduler.start()
    assert requests.events[RESCAN].wait(WAIT_SECONDS)
    scheduler.shutdown(wait=True)
    assert not scheduler.running
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n.startswith(("APScheduler", "scheduler-"))], names
    scheduler.shutdown(wait=True)  # idempotent


def test_from_settings_wires_the_config(tmp_path: Path) -> None:
    # Given config files with a daily summary at 06:15 and a 3 s scan interval
    config = tmp_path / "config"
    config.mkdir()
    (config / "job_processor_config.json").write_text(json.dumps({"job_processor": {
        "scan_interval": 3.0, "recovery": {"stuck_job_check_interval": 45.0},
        "notifications": {"daily_summary": True, "summary_time": "06:15"},
    }}), encoding="utf-8")  # fmt: skip
    settings = load_settings(config, share_root=tmp_path / "share")
    scheduler = MaintenanceScheduler.from_settings(
        settings, request=Requests(), send_summary=Summaries()
    )
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert jobs[RESCAN].trigger.interval == timedelta(seconds=3)
    assert jobs[STUCK_SWEEP].trigger.interval == timedelta(seconds=45)
    assert jobs[DUE_RETRIES].trigger.interval == timedelta(seconds=3)
    assert str(jobs[DAILY_SUMMARY].trigger.fields[5]) == "6"  # hour
    assert str(jobs[DAILY_SUMMARY].trigger.fields[6]) == "15"  # minute
    assert scheduler.checkpoint_dir == tmp_path / "share" / "checkpoints"
    # Without a sender there is no summary job
    quiet = MaintenanceScheduler.from_settings(settings, request=Requests(), send_summary=None)
    assert DAILY_SUMMARY not in {job.id for job in quiet.get_jobs()}
