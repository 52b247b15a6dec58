"""The daily summary: what the daemon did in a time window, read back from the share.

Everything comes from the durable records (``jobs/completed``, ``jobs/failed``,
``jobs/retry`` and the recovery reports under ``output/``), not from the daemon's memory,
so a summary after a restart still counts the jobs finished before it. Files are read
without following symlinks and with a size cap: the share is writable by its users.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.error_handling.recovery import RECOVERED
from daemon.share import ShareLayout, list_candidates

logger = logging.getLogger(__name__)

#: Largest record read; a real job record is a few KiB, a planted huge file is skipped.
MAX_RECORD_BYTES = 4 * 2**20


def build_daily_summary(layout: ShareLayout, *, since: float, now: float) -> dict[str, Any]:
    """Count the jobs that finished in ``[since, now)`` and the recoveries tried in it.

    Args:
        layout: The share.
        since: Window start, epoch seconds.
        now: Window end, epoch seconds.

    Returns:
        ``completed`` and ``failed`` (jobs finished in the window), ``retried`` (of those,
        the ones that needed more than one attempt), ``waiting_retry`` (jobs in
        ``jobs/retry`` now), ``mean_execution_seconds`` (of completed jobs; ``None`` without
        any), ``recoveries`` (recovery decisions taken in the window),
        ``successful_recoveries``, ``failures_by_code`` (error code -> count, most common
        first) and the window as ``since``/``now``.
    """
    completed = _finished_records(layout.completed, since, now)
    failed = _finished_records(layout.failed, since, now)
    durations = [
        float(r["execution_time"]) for r in completed
        if isinstance(r.get("execution_time"), int | float)
    ]  # fmt: skip
    codes = Counter(_error_code(record) for record in failed)
    recoveries, recovered = _count_recoveries(layout.output, since, now)
    return {
        "since": since,
        "now": now,
        "completed": len(completed),
        "failed": len(failed),
        "retried": sum(1 for r in completed + failed if _attempts(r) > 1),
        "waiting_retry": sum(1 for _ in list_candidates(layout.retry, ".json")),
        "mean_execution_seconds": sum(durations) / len(durations) if durations else None,
        "recoveries": recoveries,
        "successful_recoveries": recovered,
        "failures_by_code": dict(codes.most_common()),
    }


def render_daily_summary(summary: dict[str, Any]) -> tuple[str, str]:
    """Turn a summary into the (title, message) of a notification an operator reads.

    Returns:
        A one-line title with the headline counts, and a message with one fact per line.
    """
    title = (
        f"Heavy Optimizer daily summary: {summary['completed']} completed, "
        f"{summary['failed']} failed"
    )
    mean = summary["mean_execution_seconds"]
    lines = [
        f"Window: {_iso(summary['since'])} to {_iso(summary['now'])}",
        f"Completed jobs: {summary['completed']}",
        f"Failed jobs: {summary['failed']}",
        f"Jobs that needed a retry: {summary['retried']}",
        f"Jobs waiting for a retry now: {summary['waiting_retry']}",
        "Mean execution time: " + (f"{mean:.1f} s" if mean is not None else "n/a"),
        f"Recoveries: {summary['recoveries']} ({summary['successful_recoveries']} successful)",
    ]
    if summary["failures_by_code"]:
        lines.append("Failures by error code:")
        lines += [f"  {code}: {count}" for code, count in summary["failures_by_code"].items()]
    return title, "\n".join(lines)


def _finished_records(folder: Path, since: float, now: float) -> list[dict[str, Any]]:
    records = []
    for path in list_candidates(folder, ".json"):
        record = _read_json(path)
        if record is None:
            continue
        finished = _finished_ts(record)
        if finished is None:
            logger.warning("Daily summary: %s has no finished time; not counted", path)
        elif since <= finished < now:
            records.append(record)
    return records


def _count_recoveries(output: Path, since: float, now: float) -> tuple[int, int]:
    """(recovery decisions in the window, of which recovered) over all recovery reports."""
    total = recovered = 0
    try:
        folders = [e for e in os.scandir(output) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return 0, 0
    for folder in folders:
        path = Path(folder.path) / f"recovery_report_{folder.name}.json"
        try:
            # A report is rewritten after each entry, so one older than the window has
            # no entry in it: skip it without reading (output/ grows with every job).
            if path.lstat().st_mtime < since:
                continue
        except FileNotFoundError:
            continue
        report = _read_json(path)
        history = report.get("recovery_history") if report else None
        for entry in history if isinstance(history, list) else ():
            when = _epoch(entry.get("time")) if isinstance(entry, dict) else None
            if when is not None and since <= when < now:
                total += 1
                recovered += entry.get("outcome") == RECOVERED
    return total, recovered


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` (logged) when it is not one."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            data = handle.read(MAX_RECORD_BYTES + 1)
    except FileNotFoundError:
        return None  # moved or removed since listed
    except OSError as exc:
        logger.warning("Daily summary: cannot read %s: %s", path, exc)
        return None
    if len(data) > MAX_RECORD_BYTES:
        logger.warning("Daily summary: %s is larger than %d bytes; skipped", path, MAX_RECORD_BYTES)
        return None
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        logger.warning("Daily summary: %s is not valid JSON: %s", path, exc)
        return None
    if not isinstance(value, dict):
        logger.warning("Daily summary: %s does not hold a JSON object", path)
        return None
    return value


def _finished_ts(record: dict[str, Any]) -> float | None:
    value = record.get("finished_ts")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return _epoch(record.get("finished_at"))


def _epoch(value: Any) -> float | None:
    """Epoch seconds of an ISO-8601 string (naive means UTC), or ``None``."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _attempts(record: dict[str, Any]) -> int:
    value = record.get("attempts")
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def _error_code(record: dict[str, Any]) -> str:
    error = record.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and code else "UNKNOWN"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


__all__ = ["MAX_RECORD_BYTES", "build_daily_summary", "render_daily_summary"]
