"""Fault injection against a real daemon process: kills, signals, hangs, poison, memory.

Each test starts ``heavy-optimizer run`` as systemd would, does something hostile for real
(SIGKILL, SIGTERM, a job that ignores signals or stops heartbeating), and asserts what was
recovered and that nothing was lost.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.daemon_harness import (
    DaemonProcess,
    drop_job,
    make_config_dir,
    record,
    running_daemon,
    wait_for,
)
from tests.paths import SAMPLES_DIR
from tests.servers import slack_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

#: Fast recovery delays so retries happen within a test's time.
FAST_RECOVERY = {"recovery": {"strategies": {
    name: {"action": action, "delay_seconds": 0.1, "max_delay_seconds": 0.5}
    for name, action in (("crash", "resume_checkpoint"), ("stuck", "resume_checkpoint"),
                         ("memory", "adjust_parameters"), ("unknown", "resume_checkpoint"))
}}}


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "input").mkdir(parents=True)
    shutil.copy(SAMPLES_DIR / "sensex_82x500.csv", root / "input" / "data.csv")
    return root


def _final(share: Path, job_id: str) -> dict[str, Any] | None:
    return record(share, "completed", job_id) or record(share, "failed", job_id)


def _status(share: Path, job_id: str) -> dict[str, Any]:
    try:
        path = share / "jobs" / "status" / f"{job_id}.json"
        value: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return value


def test_kill9_of_a_job_process_resumes_from_checkpoint_with_same_result(
    tmp_path: Path, share: Path
) -> None:
    # Given a daemon running real optimisations, with a reference job (no fault)
    config = make_config_dir(
        tmp_path / "cfg", error_handling=FAST_RECOVERY, job_processor={"max_concurrent_jobs": 1},
        optimizer={"optimizer": {"budget": {"max_evaluations": 60000}}},
    )
    algorithms = ["GA", "SA", "RS"]
    with running_daemon(config, share) as daemon:
        drop_job(share, "reference", algorithms=algorithms, seed=11)
        wait_for(lambda: _final(share, "reference"), timeout=120, message="reference job")
        # When the second job's process is killed -9 in the middle of its SA stage
        drop_job(share, "victim", algorithms=algorithms, seed=11)
        pid = wait_for(lambda: _status(share, "victim").get("pid"), timeout=60, message="pid")
        metadata = share / "checkpoints" / "victim" / "metadata.json"
        wait_for(lambda: metadata.is_file() and "algorithm-SA-k10-partial" in metadata.read_text(),
                 timeout=60, interval=0.01, message="a checkpoint inside the SA stage")
        os.kill(int(pid), signal.SIGKILL)
        final = wait_for(lambda: _final(share, "victim"), timeout=120, message="victim final")
    # Then it resumed from its checkpoint on attempt 2 and found exactly the same portfolio
    assert final["status"] == "completed", final
    assert final["attempts"] == 2
    reference = json.loads((share / "output" / "reference" / "summary.json").read_text())
    victim = json.loads((share / "output" / "victim" / "summary.json").read_text())
    assert victim["best"]["column_indices"] == reference["best"]["column_indices"]
    assert [r["best_indices"] for r in victim["algorithms"]] == \
        [r["best_indices"] for r in reference["algorithms"]]
    assert "resuming from checkpoint" in (share / "logs" / "jobs" / "victim.log").read_text()
    assert "killed by signal 9" in json.dumps(final["history"])
    assert daemon.proc is not None


def test_kill9_of_the_daemon_then_restart_recovers_the_job(tmp_path: Path, share: Path) -> None:
    config = make_config_dir(tmp_path / "cfg", error_handling=FAST_RECOVERY)
    # Given a daemon running a long job
    first = DaemonProcess(config, share, runner="tests.jobs:sleepy_job").start()
    try:
        first.wait_ready()
        drop_job(share, "long", sleep_seconds=2.0)
        status = wait_for(lambda: _status(share, "long").get("pid") and _status(share, "long"),
                          timeout=30, message="job running")
        # When the daemon is killed -9 mid-job (its job process is orphaned, still running)
        first.signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert psutil.pid_exists(int(status["pid"]))
        # And a new daemon starts on the same share
        with running_daemon(config, share, runner="tests.jobs:sleepy_job"):
            final = wait_for(lambda: _final(share, "long"), timeout=60, message="recovered job")
    finally:
        first.close()
    # Then the orphan was killed, the job was resumed and completed, attempt counted
    assert final["status"] == "completed"
    assert final["attempts"] == 2
    assert json.loads((share / "output" / "long" / "result.json").read_text())["resume"] is True
    assert not list((share / "jobs" / "processing").iterdir())


def test_sigterm_drains_then_requeues_with_checkpoint(tmp_path: Path, share: Path) -> None:
    config = make_config_dir(tmp_path / "cfg", job_processor={"drain_timeout": 1.5})
    daemon = DaemonProcess(config, share, runner="tests.jobs:sleepy_job").start()
    try:
        daemon.wait_ready()
        # Given one job that finishes within the drain and one that cannot
        drop_job(share, "short", sleep_seconds=0.8)
        drop_job(share, "endless", sleep_seconds=60)
        wait_for(lambda: all(_status(share, job).get("pid") for job in ("short", "endless")),
                 timeout=30, message="both running")
        # When the daemon gets SIGTERM
        daemon.signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
        notifications = daemon.read_notifications(0.2)
    finally:
        daemon.close()
    # Then it exits 0 after completing one and checkpoint-requeueing the other
    assert code == 0
    assert record(share, "completed", "short") is not None
    queued = record(share, "queue", "endless")
    assert queued is not None and queued["resume"] is True and queued["attempts"] == 0
    assert (share / "checkpoints" / "endless" / "emergency.json").is_file()
    assert "STOPPING=1" in notifications


def test_job_ignoring_sigterm_is_killed_after_grace_and_failed_as_timeout(
    tmp_path: Path, share: Path
) -> None:
    with slack_server() as slack:
        config = make_config_dir(
            tmp_path / "cfg",
            job_processor={"job_timeout": 1.0, "kill_grace_seconds": 1.0},
            error_handling={"notifications": {"enabled": True, "slack": {
                "enabled": True, "webhook_url": slack.url, "timeout_seconds": 5}}},
        )
        with running_daemon(config, share, runner="tests.jobs:ignore_sigterm_job"):
            drop_job(share, "stubborn")
            pid = wait_for(lambda: _status(share, "stubborn").get("pid"), timeout=30,
                           message="job running")
            final = wait_for(lambda: _final(share, "stubborn"), timeout=30, message="final")
            assert slack.wait_for_requests(1, timeout=20)
    # Then the group was killed (SIGKILL after the grace), the record says timeout
    assert not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == "zombie"
    assert final["status"] == "failed"
    assert final["error"]["code"] == "JOB_TIMEOUT"
    assert "time limit" in final["error"]["message"]
    assert (share / "checkpoints" / "stubborn" / "progress.json").is_file()
    assert "stubborn" in json.dumps(slack.bodies)


def test_job_that_stops_heartbeating_is_detected_and_retried(tmp_path: Path, share: Path) -> None:
    config = make_config_dir(
        tmp_path / "cfg", error_handling=FAST_RECOVERY,
        job_processor={"stuck_job_threshold": 1.5,
                       "recovery": {"stuck_job_check_interval": 0.5}},
    )
    with running_daemon(config, share, runner="tests.jobs:silent_job"):
        started = time.monotonic()
        drop_job(share, "silent")
        final = wait_for(lambda: _final(share, "silent"), timeout=60, message="final")
        elapsed = time.monotonic() - started
    assert final["status"] == "completed" and final["attempts"] == 2
    assert "JOB_STUCK" in json.dumps(final["history"])
    assert elapsed < 30  # detection bounded by threshold + check interval, not the job timeout


def test_poison_job_fails_after_max_attempts(tmp_path: Path, share: Path) -> None:
    config = make_config_dir(tmp_path / "cfg", error_handling=FAST_RECOVERY,
                             job_processor={"max_retry_attempts": 3})
    with running_daemon(config, share, runner="tests.jobs:poison_job"):
        drop_job(share, "poison")
        drop_job(share, "healthy-neighbour", portfolio_size=12)
        final = wait_for(lambda: _final(share, "poison"), timeout=60, message="final")
    assert final["status"] == "failed"
    assert final["attempts"] == 3
    assert "gave up after 3 attempts" in final["error"]["message"]


def test_memory_hog_is_killed_and_retried_with_smaller_population(
    tmp_path: Path, share: Path
) -> None:
    config = make_config_dir(tmp_path / "cfg", error_handling=FAST_RECOVERY,
                             job_processor={"max_job_memory_mb": 300})
    with running_daemon(config, share, runner="tests.jobs:memory_hog_job"):
        drop_job(share, "hog")
        final = wait_for(lambda: _final(share, "hog"), timeout=60, message="final")
    assert final["status"] == "completed", final
    assert final["attempts"] == 2
    assert "MEMORY_LIMIT" in json.dumps(final["history"])
    result = json.loads((share / "output" / "hog" / "result.json").read_text())
    assert result["population_scale"] == 0.5


def test_two_daemons_share_fifty_jobs_each_completed_once(tmp_path: Path, share: Path) -> None:
    config = make_config_dir(tmp_path / "cfg", job_processor={"max_concurrent_jobs": 2})
    for i in range(50):
        drop_job(share, f"job-{i:02d}")
    with running_daemon(config, share, runner="tests.jobs:quick_job") as one, \
            running_daemon(config, share, runner="tests.jobs:quick_job") as two:
        wait_for(lambda: len(list((share / "jobs" / "completed").glob("*.json"))) == 50,
                 timeout=120, message="50 completed")
    records = [json.loads(p.read_text()) for p in (share / "jobs" / "completed").glob("*.json")]
    assert sorted(r["job_id"] for r in records) == [f"job-{i:02d}" for i in range(50)]
    assert all(r["attempts"] == 1 and len(r["history"]) == 1 for r in records)
    runners = {json.loads((share / "output" / r["job_id"] / "result.json").read_text())["pid"]
               for r in records}
    assert len(runners) == 50 and one.proc and two.proc
    assert not list((share / "jobs" / "failed").iterdir())


def test_share_unavailable_for_a_while_fails_nothing(tmp_path: Path, share: Path) -> None:
    config = make_config_dir(tmp_path / "cfg")
    with running_daemon(config, share, runner="tests.jobs:quick_job"):
        drop_job(share, "before")
        wait_for(lambda: record(share, "completed", "before"), timeout=30, message="first job")
        # When the share's job folders disappear (an unmounted share) and come back
        away = share.parent / "jobs-away"
        (share / "jobs").rename(away)
        time.sleep(1.0)  # let several ticks and scans hit the missing share
        away.rename(share / "jobs")
        drop_job(share, "after")
        wait_for(lambda: record(share, "completed", "after"), timeout=30, message="second job")
    assert not list((share / "jobs" / "failed").iterdir())


def test_stuck_job_is_failed_when_auto_retry_is_off(tmp_path: Path, share: Path) -> None:
    config = make_config_dir(
        tmp_path / "cfg", error_handling=FAST_RECOVERY,
        job_processor={"stuck_job_threshold": 1.0, "recovery": {
            "stuck_job_check_interval": 0.5, "auto_retry_stuck_jobs": False}},
    )
    with running_daemon(config, share, runner="tests.jobs:silent_job"):
        drop_job(share, "silent")
        final = wait_for(lambda: _final(share, "silent"), timeout=60, message="final")
    assert final["status"] == "failed" and final["attempts"] == 1
    assert final["error"]["code"] == "JOB_STUCK"
    assert "automatic retry is off" in final["error"]["message"]


def test_crash_is_failed_at_once_when_daemon_recovery_is_off(tmp_path: Path, share: Path) -> None:
    config = make_config_dir(tmp_path / "cfg", error_handling=FAST_RECOVERY,
                             job_processor={"recovery": {"enabled": False}})
    with running_daemon(config, share, runner="tests.jobs:crash_once_job"):
        drop_job(share, "crashy")
        final = wait_for(lambda: _final(share, "crashy"), timeout=60, message="final")
    assert final["status"] == "failed" and final["attempts"] == 1
    assert final["error"]["code"] == "JOB_CRASHED"


def test_second_sigterm_hurries_the_drain(tmp_path: Path, share: Path) -> None:
    config = make_config_dir(tmp_path / "cfg", job_processor={"drain_timeout": 120})
    daemon = DaemonProcess(config, share, runner="tests.jobs:sleepy_job").start()
    try:
        daemon.wait_ready()
        drop_job(share, "endless", sleep_seconds=120)
        wait_for(lambda: _status(share, "endless").get("pid"), timeout=30, message="running")
        # When a first SIGTERM starts a long drain and a second one follows
        daemon.signal(signal.SIGTERM)
        time.sleep(0.5)  # the first signal's drain has begun
        started = time.monotonic()
        daemon.signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
        hurried_seconds = time.monotonic() - started
    finally:
        daemon.close()
    # Then it did not wait out the 120 s drain: the job was checkpointed and requeued
    assert code == 0 and hurried_seconds < 30
    queued = record(share, "queue", "endless")
    assert queued is not None and queued["resume"] is True
