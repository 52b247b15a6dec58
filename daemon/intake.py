"""Intake: turn what clients dropped on the share into ready, valid queue entries.

One :meth:`IntakeScanner.scan` is a full pass over ``jobs/queue/`` and ``input/``; watcher
events only make it happen sooner. A dropped job file is ready as soon as it parses as a JSON
object, validates, names a job id that is not already known, and its input CSV exists and has
settled (size and mtime unchanged for ``settle_seconds``: a job must not start on a
half-copied CSV). The job file itself needs no settle wait: a prefix of a JSON object never
parses, and neither does a file preallocated with NUL bytes, so a file that parses is whole
(this is what lets an atomically dropped job start within milliseconds), and one that parses
but is invalid is failed at once. A job file that does not parse yet is retried on later
scans and failed only once it has settled.
Every CSV in input/ is observed on every scan, so one that has been sitting there is already
settled when a job names it. A CSV in input/ (with ``auto_jobs_from_csv``) becomes one job
file in jobs/queue/, once per upload (see :mod:`daemon.csv_intake`); CSVs named by a job file
(or mentioned by one still being written) are left to that job, and CSVs already there when
CSV intake first starts on a share are not run (an existing share holds every CSV ever
dropped).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.csv_intake import (
    LEDGER_NAME,
    CsvIntakeLedger,
    HeaderState,
    LedgerEntry,
    check_csv_header,
    has_unwritten_tail,
)
from daemon.error_handling.atomic_io import atomic_write_json
from daemon.error_handling.errors import JobSpecError
from daemon.jobs import parse_job_json, portfolio_size_from_csv_name, sanitize_job_id
from daemon.records import QueuedJob, iso_utc, read_job_file
from daemon.registry import JobRegistry
from daemon.share import SettleTracker, ShareLayout, confine_input, list_candidates

logger = logging.getLogger(__name__)

#: How long a valid job file may wait for its input CSV to appear (or stop being empty)
#: before it is failed: clients may drop the job file before the CSV copy starts.
DEFAULT_INPUT_WAIT_SECONDS = 120.0


@dataclass
class ScanReport:
    """What one scan found and did."""

    #: Ready, valid entries by (-priority, submitted_ts, name): what the supervisor claims.
    jobs: list[QueuedJob] = field(default_factory=list)
    #: failed/ records written by this scan.
    rejected: list[Path] = field(default_factory=list)
    #: Job ids of job files written for CSV drops.
    created: list[str] = field(default_factory=list)
    #: Files still settling, or job files waiting for their input CSV.
    pending: int = 0
    #: Seconds the oldest ready entry has waited since it arrived (0 when none is ready).
    oldest_wait_seconds: float = 0.0


def _may_be_unfinished(error: JobSpecError) -> bool:
    """Whether a job file may fail only because it is still being written.

    Only text that does not decode or parse can be a prefix of a good job file; a file that
    parses is whole, so what is wrong with it (not an object, invalid fields) is final.
    """
    return isinstance(error.__cause__, json.JSONDecodeError | UnicodeDecodeError)


class IntakeScanner:
    """Readiness, validation and CSV-drop conversion for one share.

    Args:
        layout: The share's folders.
        registry: Writes rejections and answers "is this job id known".
        settle_seconds: How long size and mtime must stay the same before a file is used.
        auto_jobs_from_csv: Whether a CSV dropped in input/ is itself a job.
        default_portfolio_size: Size for a CSV drop without a ``_ps<N>`` suffix.
        clock: Monotonic seconds for settling and waiting (injectable for tests).
        stat: ``os.lstat``-like function used for every readiness check (injectable).
        input_wait_seconds: See ``DEFAULT_INPUT_WAIT_SECONDS``.
    """

    def __init__(self, layout: ShareLayout, registry: JobRegistry, *, settle_seconds: float,
                 auto_jobs_from_csv: bool, default_portfolio_size: int,
                 clock: Callable[[], float] = time.monotonic,
                 stat: Callable[[Path], os.stat_result] = os.lstat,
                 input_wait_seconds: float = DEFAULT_INPUT_WAIT_SECONDS) -> None:
        self.layout = layout
        self.registry = registry
        self.auto_jobs_from_csv = auto_jobs_from_csv
        self.default_portfolio_size = default_portfolio_size
        self.input_wait_seconds = input_wait_seconds
        self._clock = clock
        self._stat = stat
        self._settle = SettleTracker(settle_seconds=settle_seconds, stat_file=stat, clock=clock)
        #: Job file → monotonic time it started waiting for its input CSV.
        self._waiting: dict[Path, float] = {}
        #: This scan's job files still being written (they may name a CSV being dropped).
        self._unfinished_job_texts: list[bytes] = []
        self._ledger = CsvIntakeLedger(layout.state / LEDGER_NAME)
        if auto_jobs_from_csv and self._ledger.fresh:
            self._adopt_existing_csvs()

    def scan(self) -> ScanReport:
        """One full pass; see the module docstring for the rules."""
        report = ScanReport()
        seen: set[Path] = set()
        self._unfinished_job_texts = []
        referenced: dict[str, str] = {}
        entries = []
        for path in list_candidates(self.layout.queue, ".json"):
            seen.add(path)
            entry = self._check_job_file(path, report, referenced, seen)
            if entry is not None:
                entries.append(entry)
        report.jobs = self._without_duplicates(entries, report)
        if self.auto_jobs_from_csv:
            for record in self.registry.running() + self.registry.retrying():
                referenced.setdefault(record.input_file, record.job_id)
            self._scan_csv_drops(report, referenced, seen)
        else:
            self._observe_inputs(seen)
        self._settle.prune(seen)
        self._waiting = {p: t for p, t in self._waiting.items() if p in seen}
        if report.jobs:
            oldest = min(entry.submitted_ts for entry in report.jobs)
            report.oldest_wait_seconds = max(0.0, self.registry.clock() - oldest)
        return report

    # -- job files ------------------------------------------------------------------------

    def _check_job_file(self, path: Path, report: ScanReport, referenced: dict[str, str],
                        seen: set[Path]) -> QueuedJob | None:
        default_id = sanitize_job_id(path.stem)
        try:
            info = self._stat(path)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode):
            error = JobSpecError(f"{path.name} is a symbolic link; a job file must be a regular "
                                 "file (links are not followed)")
            self._reject(path, error, default_id, None, report)
            return None
        settled = self._settle.is_settled(path)
        data: dict[str, Any] | None = None
        raw = b""
        try:
            raw = read_job_file(path)
            data = parse_job_json(raw, source=path.name)
            entry = self.registry.load_queue_entry(path, data, submitted_ts=info.st_ctime)
        except FileNotFoundError:
            return None
        except JobSpecError as exc:
            if settled or not _may_be_unfinished(exc):
                self._reject(path, exc, str(exc.context.get("job_id") or default_id), data,
                             report)
            else:  # a job file still being written is not failed yet
                report.pending += 1
                self._unfinished_job_texts.append(raw)
            return None
        if entry.spec.input_file:  # empty for a job reading a HeavyDB table or query
            referenced.setdefault(entry.spec.input_file, entry.job_id)
        if entry.record is not None:  # put back by a daemon: written atomically, already run
            return entry
        try:
            if self._is_leftover(entry):
                return None
            self._check_job_id(entry)
            if not self._input_ready(entry, seen):
                report.pending += 1
                return None
        except JobSpecError as exc:
            self._reject(path, exc, entry.job_id, data, report)
            return None
        return entry

    def _is_leftover(self, entry: QueuedJob) -> bool:
        """An identical copy of a job that is already live: the job itself, not a new one.

        This is what a claim interrupted by a crash leaves behind, or a client dropping the
        same file twice; either way the job runs once.
        """
        for name in ("processing", "retry"):
            path = getattr(self.layout, name) / f"{entry.job_id}.json"
            record = self.registry.read_record(path) if path.exists() else None
            if record is not None and record.spec == entry.spec.raw:
                logger.info("Removing %s: job %s is already %s", entry.path.name,
                            entry.job_id, "running" if name == "processing" else "retrying")
                self._discard(entry.path)
                return True
        return False

    def _check_job_id(self, entry: QueuedJob) -> None:
        """Raise if another job already has this id (the CLI's retry verb is the way).

        Two drops with one id in queue/ are settled by ``_without_duplicates`` instead.
        """
        for where in ("processing", "retry", "completed", "failed"):
            path = getattr(self.layout, where) / f"{entry.job_id}.json"
            if not os.path.lexists(path):
                continue
            job = repr(entry.job_id)
            if where in ("completed", "failed"):
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.lstat(path).st_mtime))
                message = (f"job id {job} already {where} on {when}; use a new job_id, or "
                           f"`heavy-optimizer retry {entry.job_id}` to run it again")
            else:
                state = "is already running" if where == "processing" else "is waiting for a retry"
                message = f"job id {job} {state}; use a new job_id"
            raise JobSpecError(f"{entry.path.name}: {message}", error_code="DUPLICATE_JOB_ID",
                               context={"job_id": entry.job_id})

    def _input_ready(self, entry: QueuedJob, seen: set[Path]) -> bool:
        """Whether the job's input CSV is there and settled; raise once waiting is pointless.

        Raises:
            JobSpecError: The input is a link, escapes input/, or is still missing/empty after
                ``input_wait_seconds``.
        """
        name = entry.spec.input_file
        if not name:  # the job reads a HeavyDB table or query: nothing to wait for here
            return True
        path = self.layout.input / name
        seen.add(path)
        try:
            size: int | None = self._stat(path).st_size
        except FileNotFoundError:
            size = None
        if size is not None:
            confine_input(self.layout, name)
            if self._settle.is_settled(path) and not has_unwritten_tail(path):
                self._waiting.pop(entry.path, None)
                return True
        now = self._clock()
        if entry.path not in self._waiting:
            logger.info("Job %s is waiting for its input file input/%s", entry.job_id, name)
        since = self._waiting.setdefault(entry.path, now)
        if now - since < self.input_wait_seconds or (size or 0) > 0:
            return False
        if size is None:
            confine_input(self.layout, name)  # raises the "not found" error
        raise JobSpecError(f"{entry.path.name}: input_file {name!r} is empty (0 bytes); copy "
                           "the CSV into input/ again")

    def _without_duplicates(self, entries: list[QueuedJob], report: ScanReport) -> list[QueuedJob]:
        """Keep one entry per job id (a daemon record first, then the oldest); fail the rest."""
        entries.sort(key=lambda e: (e.record is None, e.submitted_ts, e.path.name))
        kept: dict[str, QueuedJob] = {}
        for entry in entries:
            first = kept.setdefault(entry.job_id, entry)
            if first is entry:
                continue
            if first.spec.raw == entry.spec.raw:
                logger.info("Removing %s: same job as %s", entry.path.name, first.path.name)
                self._discard(entry.path)
                continue
            error = JobSpecError(f"{entry.path.name}: job id {entry.job_id!r} is already queued "
                                 f"as {first.path.name}; use a new job_id",
                                 error_code="DUPLICATE_JOB_ID")
            self._reject(entry.path, error, entry.job_id, entry.spec.raw, report)
        return sorted(kept.values(), key=QueuedJob.sort_key)

    def _discard(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._settle.forget(path)

    def _reject(self, path: Path, error: JobSpecError, job_id: str,
                spec: dict[str, Any] | None, report: ScanReport) -> None:
        report.rejected.append(self.registry.reject(path, error, job_id=job_id, spec=spec))
        self._settle.forget(path)
        self._waiting.pop(path, None)

    def _observe_inputs(self, seen: set[Path]) -> None:
        """Keep settle observations of every CSV, so a job naming an old one needs no wait."""
        for path in list_candidates(self.layout.input, ".csv"):
            seen.add(path)
            with contextlib.suppress(FileNotFoundError):
                self._settle.observe(path, self._stat(path))

    # -- CSV drops ------------------------------------------------------------------------

    def _scan_csv_drops(self, report: ScanReport, referenced: dict[str, str],
                        seen: set[Path]) -> None:
        self._ledger.refresh()
        for path in list_candidates(self.layout.input, ".csv"):
            seen.add(path)
            try:
                info = self._stat(path)
            except FileNotFoundError:
                continue
            self._settle.observe(path, info)  # also for CSVs that jobs name
            known = self._ledger.get(path.name)
            if known is not None and known.matches(info):
                if known.state == "pending" and known.job_id:  # a crash cut the conversion short
                    seen.add(self._queue_csv_job(path, known.job_id, info))
                continue
            if path.name in referenced:
                self._remember(path, info, referenced[path.name], "referenced", durable=False)
                continue
            if not self._settle.is_settled(path) or any(
                    path.name.encode() in text for text in self._unfinished_job_texts):
                report.pending += 1
                continue
            state, reason = (
                (HeaderState.INVALID, f"input/{path.name} is a symbolic link; links are not "
                 "followed") if stat.S_ISLNK(info.st_mode) else check_csv_header(path))
            if state is HeaderState.INCOMPLETE:
                report.pending += 1
                continue
            job_id = self._csv_job_id(path, info, reupload=known is not None)
            if state is HeaderState.INVALID:
                rejected = self.registry.reject(None, JobSpecError(reason), job_id=job_id,
                                                spec=self._csv_spec(path, job_id))
                report.rejected.append(rejected)
                self._remember(path, info, job_id, "rejected")
                continue
            self._remember(path, info, job_id, "pending")  # durable before the job file
            seen.add(self._queue_csv_job(path, job_id, info))
            report.created.append(job_id)
        self._ledger.flush()

    def _csv_spec(self, path: Path, job_id: str) -> dict[str, Any]:
        size = portfolio_size_from_csv_name(path.stem)
        return {"job_id": job_id, "input_file": path.name,
                "portfolio_size": self.default_portfolio_size if size is None else size,
                "job_type": "csv_drop", "source": "csv"}

    def _queue_csv_job(self, path: Path, job_id: str, info: os.stat_result) -> Path:
        job_file = self.layout.queue / f"{job_id}.json"
        if self.registry.find(job_id) is None:
            atomic_write_json(job_file, self._csv_spec(path, job_id))
            logger.info("CSV drop input/%s became job %s", path.name, job_id)
        self._remember(path, info, job_id, "queued", durable=False)
        return job_file

    def _csv_job_id(self, path: Path, info: os.stat_result, *, reupload: bool) -> str:
        """The file stem; for a new upload over a used name (or a taken id), stem_<mtime>."""
        base = sanitize_job_id(path.stem)
        stamp = time.strftime("%Y%m%d%H%M%S", time.localtime(info.st_mtime_ns / 1e9))

        def suffixed(suffix: str) -> str:
            return base[: 128 - len(suffix)] + suffix

        taken = self._ledger.job_ids()
        candidates = itertools.chain(
            [] if reupload else [base], [suffixed(f"_{stamp}")],
            (suffixed(f"_{stamp}-{n}") for n in itertools.count(2)))
        return next(c for c in candidates if c not in taken and self.registry.find(c) is None)

    def _remember(self, path: Path, info: os.stat_result, job_id: str | None, state: str, *,
                  durable: bool = True) -> None:
        """Record what became of an upload; ``durable=False`` waits for the scan's last write."""
        entry = {path.name: LedgerEntry(info.st_size, info.st_mtime_ns, job_id, state)}
        (self._ledger.put if durable else self._ledger.stage)(entry)

    def _adopt_existing_csvs(self) -> None:
        """First start of CSV intake: CSVs already in input/ are not turned into jobs.

        An existing share holds every CSV ever dropped; running them all again would flood
        the queue. Copying a file again (or touching it) makes it a new upload.
        """
        entries = {}
        for path in list_candidates(self.layout.input, ".csv"):
            try:
                info = self._stat(path)
            except FileNotFoundError:
                continue
            entries[path.name] = LedgerEntry(info.st_size, info.st_mtime_ns, None, "preexisting")
        self._ledger.put(entries)
        if entries:
            logger.warning("CSV intake starts on this share now (%s): %d CSV file(s) already in "
                           "input/ are not turned into jobs; copy one again to run it",
                           iso_utc(self.registry.clock()), len(entries))
