"""build_daily_summary / render_daily_summary over records written into a tmp share."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from daemon.daily_summary import MAX_RECORD_BYTES, build_daily_summary, render_daily_summary
from daemon.share import ShareLayout

pytestmark = pytest.mark.timeout(20)

NOW = 1_700_000_000.0
DAY = 86400.0
SINCE = NOW - DAY


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


@pytest.fixture
def layout(tmp_path: Path) -> ShareLayout:
    share = ShareLayout(tmp_path / "share")
    share.ensure()
    return share


def _record(
    registry: Path, job_id: str, finished: float, *, attempts: int = 1,
    execution_time: float = 10.0, code: str | None = None, with_ts: bool = True,
) -> None:  # fmt: skip
    record: dict[str, Any] = {
        "job_id": job_id,
        "status": "failed" if code else "completed",
        "attempts": attempts,
        "started_at": _iso(finished - execution_time),
        "finished_at": _iso(finished),
        "execution_time": execution_time,
    }
    if with_ts:
        record["finished_ts"] = finished
    if code:
        record["error"] = {"code": code, "message": "boom", "stage": "load"}
    (registry / f"{job_id}.json").write_text(json.dumps(record), encoding="utf-8")


def _report(layout: ShareLayout, job_id: str, entries: list[tuple[float, str]]) -> None:
    folder = layout.output_dir(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    report = {
        "job_id": job_id,
        "recovery_history": [
            {"time": _iso(t), "outcome": o, "kind": "network"} for t, o in entries
        ],
        "total_attempts": len(entries),
    }
    path = folder / f"recovery_report_{job_id}.json"
    path.write_text(json.dumps(report), encoding="utf-8")
    newest = max(t for t, _ in entries)
    os.utime(path, (newest, newest))


def test_counts_jobs_finished_in_the_window(layout: ShareLayout) -> None:
    # Given records inside and outside the window
    _record(layout.completed, "a", NOW - 100, execution_time=10.0)
    _record(layout.completed, "b", NOW - 200, attempts=2, execution_time=30.0)
    _record(layout.completed, "old", SINCE - 1, execution_time=1000.0)
    _record(layout.completed, "future", NOW + 1)
    _record(layout.completed, "iso_only", NOW - 300, execution_time=20.0, with_ts=False)
    _record(layout.failed, "f1", NOW - 50, code="DATA_VALIDATION_ERROR")
    _record(layout.failed, "f2", NOW - 60, attempts=3, code="NETWORK_ERROR")
    _record(layout.failed, "f3", NOW - 70, code="DATA_VALIDATION_ERROR")
    _record(layout.failed, "f_old", SINCE - 10, code="NETWORK_ERROR")
    (layout.retry / "r1.json").write_text("{}", encoding="utf-8")
    (layout.retry / ".r2.json.tmp").write_text("{}", encoding="utf-8")

    # When the summary is built
    summary = build_daily_summary(layout, since=SINCE, now=NOW)

    # Then only the window's jobs count
    assert summary["completed"] == 3
    assert summary["failed"] == 3
    assert summary["retried"] == 2
    assert summary["waiting_retry"] == 1
    assert summary["mean_execution_seconds"] == pytest.approx(20.0)
    assert summary["failures_by_code"] == {"DATA_VALIDATION_ERROR": 2, "NETWORK_ERROR": 1}
    assert list(summary["failures_by_code"]) == ["DATA_VALIDATION_ERROR", "NETWORK_ERROR"]


def test_counts_recoveries_taken_in_the_window(layout: ShareLayout) -> None:
    _report(layout, "j1", [(SINCE - 500, "failed"), (NOW - 40, "recovered")])
    _report(layout, "j2", [(NOW - 30, "pending"), (NOW - 20, "failed"), (NOW - 10, "recovered")])
    _report(layout, "stale", [(SINCE - 900, "recovered")])
    layout.output_dir("no_report").mkdir()

    summary = build_daily_summary(layout, since=SINCE, now=NOW)

    assert summary["recoveries"] == 4
    assert summary["successful_recoveries"] == 2


def test_empty_share_gives_zeroes(tmp_path: Path) -> None:
    summary = build_daily_summary(ShareLayout(tmp_path / "missing"), since=SINCE, now=NOW)
    assert summary == {
        "since": SINCE, "now": NOW, "completed": 0, "failed": 0, "retried": 0,
        "waiting_retry": 0, "mean_execution_seconds": None, "recoveries": 0,
        "successful_recoveries": 0, "failures_by_code": {},
    }  # fmt: skip


def test_bad_files_are_skipped_and_logged(
    layout: ShareLayout, caplog: pytest.LogCaptureFixture
) -> None:
    # Given one good record and several files that are not records
    _record(layout.completed, "good", NOW - 5)
    (layout.completed / "broken.json").write_text("{not json", encoding="utf-8")
    (layout.completed / "list.json").write_text("[1, 2]", encoding="utf-8")
    (layout.completed / "no_time.json").write_text('{"job_id": "x"}', encoding="utf-8")
    (layout.completed / "huge.json").write_bytes(b" " * (MAX_RECORD_BYTES + 1))
    outside = layout.root / "elsewhere.json"
    _record(layout.root, "elsewhere", NOW - 5)
    (layout.completed / "link.json").symlink_to(outside)

    with caplog.at_level(logging.WARNING, logger="daemon.daily_summary"):
        summary = build_daily_summary(layout, since=SINCE, now=NOW)

    # Then only the real record counts, and each bad file was named in a warning
    assert summary["completed"] == 1
    for name in ("broken.json", "list.json", "no_time.json", "huge.json", "link.json"):
        assert name in caplog.text


def test_render_names_every_fact() -> None:
    summary = {
        "since": SINCE, "now": NOW, "completed": 12, "failed": 2, "retried": 3,
        "waiting_retry": 1, "mean_execution_seconds": 42.25, "recoveries": 4,
        "successful_recoveries": 3, "failures_by_code": {"NETWORK_ERROR": 2},
    }  # fmt: skip
    title, message = render_daily_summary(summary)
    assert title == "Heavy Optimizer daily summary: 12 completed, 2 failed"
    assert message.splitlines() == [
        "Window: 2023-11-13 22:13 UTC to 2023-11-14 22:13 UTC",
        "Completed jobs: 12",
        "Failed jobs: 2",
        "Jobs that needed a retry: 3",
        "Jobs waiting for a retry now: 1",
        "Mean execution time: 42.2 s",
        "Recoveries: 4 (3 successful)",
        "Failures by error code:",
        "  NETWORK_ERROR: 2",
    ]


def test_render_without_completed_jobs(layout: ShareLayout) -> None:
    _, message = render_daily_summary(build_daily_summary(layout, since=SINCE, now=NOW))
    assert "Mean execution time: n/a" in message
    assert "Failures by error code" not in message
