"""Job runners for daemon tests: each misbehaves in one specific way, for real.

The daemon runs them through the same worker protocol as the optimisation job (selected by
``HEAVY_OPTIMIZER_JOB_RUNNER=tests.jobs:<name>``), so a test of "a job that ignores SIGTERM"
exercises the real signals, process groups and timeouts. Behaviour knobs come from the job
file's fields (``sleep_seconds`` ...), which only these test runners read.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.error_handling.errors import DatabaseQueryError, DataValidationError

Heartbeat = Callable[[dict[str, Any]], None]
StopCheck = Callable[[], BaseException | None]


def _output(payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out = Path(payload["share_root"]) / "output" / payload["job_id"]
    out.mkdir(parents=True, exist_ok=True)
    result = {"job_id": payload["job_id"], "attempt": payload["attempt"],
              "resume": payload["resume"], "pid": os.getpid(), **extra}
    (out / "result.json").write_text(json.dumps(result))
    return {"output_dir": str(out), **result}


def quick_job(
    payload: dict[str, Any], heartbeat: Heartbeat, stop_check: StopCheck
) -> dict[str, Any]:
    """Succeeds at once (throughput and exactly-once tests)."""
    heartbeat({"stage": "work", "progress": 1.0})
    return _output(payload)


def timed_job(
    payload: dict[str, Any], heartbeat: Heartbeat, stop_check: StopCheck
) -> dict[str, Any]:
    """Works ``sleep_seconds`` (default 20 ms) and records when it ran, for overlap checks.

    ``*_monotonic`` are ``time.monotonic()``: on Linux one clock for every process on the
    host, so intervals of different job processes compare. ``*_wall`` are ``time.time()``, to
    compare with the daemon's records (claim and finish times are wall-clock there).
    """
    start, start_wall = time.monotonic(), time.time()
    heartbeat({"stage": "work", "progress": 0.0})
    time.sleep(float(payload["spec"].get("sleep_seconds", 0.02)))
    return _output(payload, start_monotonic=start, end_monotonic=time.monotonic(),
                   start_wall=start_wall, end_wall=time.time())


def sleepy_job(
    payload: dict[str, Any], heartbeat: Heartbeat, stop_check: StopCheck
) -> dict[str, Any]:
    """Works for ``sleep_seconds`` with progress, honouring stop requests at safe points."""
    duration = float(payload["spec"].get("sleep_seconds", 1.0))
    start = time.monotonic()
    step = 0
    while time.monotonic() - start < duration:
        step += 1
        heartbeat({"stage": "work", "iteration": step,
                   "progress": min(1.0, (time.monotonic() - start) / duration)})
        reason = stop_check()
        if reason is not None:
            checkpoint = Path(payload["share_root"]) / "checkpoints" / payload["job_id"]
            checkpoint.mkdir(parents=True, exist_ok=True)
            (checkpoint / "emergency.json").write_text(json.dumps({"step": step}))
            raise reason
        time.sleep(0.02)
    return _output(payload, steps=step)


def ignore_sigterm_job(payload: dict[str, Any], heartbeat: Heartbeat,
                       stop_check: StopCheck) -> dict[str, Any]:
    """Ignores SIGTERM and never stops by itself: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    checkpoint = Path(payload["share_root"]) / "checkpoints" / payload["job_id"]
    checkpoint.mkdir(parents=True, exist_ok=True)
    (checkpoint / "progress.json").write_text(json.dumps({"started": True}))
    step = 0
    while True:
        step += 1
        heartbeat({"stage": "work", "iteration": step})
        time.sleep(0.05)


def silent_job(
    payload: dict[str, Any], heartbeat: Heartbeat, stop_check: StopCheck
) -> dict[str, Any]:
    """Hangs without heartbeats on the first attempt (stuck); succeeds on the next."""
    if payload["attempt"] > 1:
        return quick_job(payload, heartbeat, stop_check)
    while True:
        time.sleep(0.5)


def poison_job(
    payload: dict[str, Any], heartbeat: Heartbeat, stop_check: StopCheck
) -> dict[str, Any]:
    """Kills its own process on every attempt."""
    heartbeat({"stage": "work"})
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def crash_once_job(payload: dict[str, Any], heartbeat: Heartbeat,
                   stop_check: StopCheck) -> dict[str, Any]:
    """Dies by SIGKILL on the first attempt, succeeds on a later one."""
    if payload["attempt"] == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return quick_job(payload, heartbeat, stop_check)


def memory_hog_job(payload: dict[str, Any], heartbeat: Heartbeat,
                   stop_check: StopCheck) -> dict[str, Any]:
    """Grows by 32 MB steps until killed, unless a memory recovery scaled it down."""
    scale = float(payload["adjustments"].get("population_scale", 1.0))
    if scale < 1.0:
        return _output(payload, population_scale=scale)
    hoard: list[bytearray] = []
    step = 0
    while True:
        step += 1
        hoard.append(bytearray(32 * 2**20))
        for i in range(0, len(hoard[-1]), 4096):
            hoard[-1][i] = 1  # touch every page so it counts as resident
        heartbeat({"stage": "work", "iteration": step})
        time.sleep(0.02)


def bad_data_job(payload: dict[str, Any], heartbeat: Heartbeat,
                 stop_check: StopCheck) -> dict[str, Any]:
    """Fails permanently like a data error would."""
    raise DataValidationError(f"{payload['input_file']}: column 'S1' line 3 holds 'abc'")


def broken_database_job(
    payload: dict[str, Any], heartbeat: Heartbeat, stop_check: StopCheck
) -> dict[str, Any]:
    """Fails like a site-wide fault would (the database refuses us), on every job."""
    raise DatabaseQueryError("permission denied for table strategy_pnl")
