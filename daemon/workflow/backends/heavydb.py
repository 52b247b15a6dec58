"""The HeavyDB backend: strategy data and results in HeavyDB, through the ``heavyai`` client.

Load stage, one attempt (retried as a whole by ``retry_on_database_error``, each attempt on a
fresh connection): drop a leftover per-job table, fill it — a CSV (parsed and validated here
first, so its errors name file, column and line as on the numpy path) through the Arrow bulk
loader, or an ``input_table``/``input_query`` through ``CREATE TABLE ... AS SELECT`` — check it,
compute per-strategy statistics and the correlation screen in SQL, read the matrix back, and
drop the table, also when anything failed (on a fresh connection if the first one broke). The
table lives only for the load stage: the search runs on the matrix in this process, so nothing
is left on the server if the job later fails or is killed, and a leftover of a killed load is
dropped by the job's next attempt (the table name comes from the job id).

When the server stays unreachable, ``heavydb.mode`` decides: ``optional`` runs a CSV job on the
numpy path and raises one WARNING alert per outage (a marker file makes "once" hold across job
processes); ``required`` raises a recoverable :class:`DatabaseError` naming the endpoint and
the attempts, which sends the job to the daemon's retry queue. Statements the server refuses
(syntax, permission) raise :class:`DatabaseQueryError` at once, with the server's message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from daemon.error_handling.config import RetryConfig
from daemon.error_handling.errors import DatabaseError, HeavyOptimizerError, JobSpecError
from daemon.error_handling.retry import RetryError, retry_on_database_error

from ..data import StrategyData, load_strategy_csv
from ..results import JobOutcome
from . import heavydb_data as dbdata
from .base import InputSpec
from .heavydb_client import INSTALL_HINT, HeavyDBSession, connected, import_heavyai
from .heavydb_config import HeavyDBConfig
from .heavydb_results import result_rows, write_results
from .heavydb_sql import (
    LONG_COLUMNS,
    create_table_sql,
    drop_table_sql,
    from_item_sql,
    job_table_name,
    long_table_from_source_sql,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: ``alert(title, message, severity)``: how an outage reaches people (the notifier in jobs).
AlertSink = Callable[[str, str, str], None]
#: A doctor line: (status "OK" | "WARN" | "FAIL", message, fix hint or "").
CheckResult = tuple[str, str, str]


class OutageTracker:
    """One alert per HeavyDB outage, however many jobs fall back during it.

    Args:
        marker: File that exists while an outage is known (shared by the daemon's job
            processes); ``None`` keeps the state in this object only (one CLI run).
        alert: Receives the alert; ``None`` logs only.
    """

    def __init__(self, *, marker: Path | None = None, alert: AlertSink | None = None) -> None:
        self._marker = marker
        self._alert = alert
        self._down = False

    def server_down(self, endpoint: str, reason: str, job_id: str) -> bool:
        """Record an outage; returns whether this call raised the alert (the first one did)."""
        first = self._claim({"endpoint": endpoint, "since": time.time(), "reason": reason,
                             "first_job": job_id})
        logger.warning("%s: HeavyDB unreachable, running on the numpy path instead: %s",
                       job_id, reason)
        if first and self._alert is not None:
            self._alert("HeavyDB unreachable: jobs fall back to numpy",
                        f"{reason}. heavydb.mode is 'optional', so jobs that asked for HeavyDB "
                        "run on the embedded numpy path until it is back; results are not "
                        "written to HeavyDB meanwhile.", "WARNING")
        return first

    def server_up(self, endpoint: str, job_id: str) -> None:
        """End a recorded outage (no-op when none is recorded)."""
        if not self._release():
            return
        logger.info("%s: HeavyDB at %s is reachable again", job_id, endpoint)
        if self._alert is not None:
            self._alert("HeavyDB reachable again", f"HeavyDB at {endpoint} answered job "
                        f"{job_id}; jobs use it again.", "INFO")

    def _claim(self, facts: dict[str, Any]) -> bool:
        if self._marker is None:
            first, self._down = not self._down, True
            return first
        self._marker.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_EXCL: of several job processes failing at once, exactly one alerts
            fd = os.open(self._marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(facts, handle)
        return True

    def _release(self) -> bool:
        if self._marker is None:
            released, self._down = self._down, False
            return released
        try:
            self._marker.unlink()
        except FileNotFoundError:
            return False
        return True


class HeavyDBSource:
    """Strategy data from HeavyDB (see the module docstring).

    Args:
        config: The ``heavydb`` section (``mode`` must not be ``off``).
        retry_config: Budgets for ``retry_on_database_error`` (``retry.database_errors``).
        outage: Outage memory and alerting; defaults to an in-memory tracker without alerts.
        sleep: Replaces the waits between attempts (tests).
        stop_event: Shutdown: stops further attempts and cuts waits short.
    """

    def __init__(self, config: HeavyDBConfig, *, retry_config: RetryConfig,
                 outage: OutageTracker | None = None,
                 sleep: Callable[[float], Any] | None = None,
                 stop_event: threading.Event | None = None) -> None:
        if config.mode == "off":
            raise ValueError("HeavyDBSource needs heavydb.mode 'optional' or 'required'")
        self.config = config
        self._retry_config = retry_config
        self._outage = outage or OutageTracker()
        self._sleep = sleep
        self._stop_event = stop_event
        self._facts: dict[str, Any] = {"name": "heavydb", "endpoint": config.endpoint}

    # -- retries ---------------------------------------------------------------------------

    def _retrying(self, fn: Callable[[], T]) -> Callable[[], T]:
        return retry_on_database_error(config=self._retry_config, sleep=self._sleep,
                                       stop_event=self._stop_event)(fn)

    def _unreachable_reason(self, exc: RetryError) -> str:
        last = exc.last_exception
        detail = last.message if isinstance(last, HeavyOptimizerError) else str(last)
        return f"{detail} (gave up after {exc.attempts} attempt(s))"

    # -- load ------------------------------------------------------------------------------

    def load(self, spec: InputSpec) -> StrategyData:
        """Load ``spec`` through HeavyDB, or fall back / fail when it is unreachable.

        Raises:
            DataError: The CSV or the table/query data is unusable.
            JobSpecError: ``input_table``/``input_query`` is not acceptable.
            DatabaseError: Unreachable (``required``, or a table/query input); recoverable.
            DatabaseQueryError: The server refused a statement.
            ConfigurationError: heavyai is not installed.
        """
        local = None
        if spec.input_path is not None:
            local = load_strategy_csv(spec.input_path, exclude_columns=spec.exclude_columns,
                                      nan_policy=spec.nan_policy)
        else:
            self._source_sql(spec)  # refuse a bad table name or query before connecting
        try:
            data = self._retrying(lambda: self._load_once(spec, local))()
        except RetryError as exc:
            reason = self._unreachable_reason(exc)
            if self.config.mode == "optional" and local is not None:
                self._outage.server_down(self.config.endpoint, reason, spec.job_id)
                self._facts = {"name": "numpy", "requested": "heavydb",
                               "endpoint": self.config.endpoint, "fallback_reason": reason}
                return local
            why = ("heavydb.mode is 'required'" if local is not None
                   else f"{spec.label} exists only on the server")
            raise DatabaseError(f"{reason}; {why}, so the job waits for HeavyDB",
                                context={"endpoint": self.config.endpoint,
                                         "attempts": exc.attempts}) from exc
        self._outage.server_up(self.config.endpoint, spec.job_id)
        return data

    def _source_sql(self, spec: InputSpec) -> str:
        try:
            return from_item_sql(table=spec.input_table, query=spec.input_query)
        except ValueError as exc:
            raise JobSpecError(f"job {spec.job_id}: {exc}",
                               context={"job_id": spec.job_id}) from None

    def _load_once(self, spec: InputSpec, local: StrategyData | None) -> StrategyData:
        table = job_table_name(self.config.work_table_prefix, spec.job_id)
        with connected(self.config) as session:
            started = time.monotonic()
            session.execute(drop_table_sql(table))  # a leftover of a killed attempt
            try:
                if local is not None:
                    data, facts = self._fill_from_csv(session, table, local)
                else:
                    data, facts = self._fill_from_source(session, table, spec)
            finally:
                self._drop(session, table, spec.job_id)
            elapsed_seconds = round(time.monotonic() - started, 3)
            self._facts = {"name": "heavydb", "endpoint": self.config.endpoint,
                           "database": self.config.database, "server_version": session.version(),
                           "input": "csv" if local is not None else spec.label,
                           "work_table": table, "server_seconds": elapsed_seconds, **facts}
        logger.info("%s: loaded %d x %d through HeavyDB at %s", spec.job_id, data.days,
                    data.n_strategies, self.config.endpoint)
        return data

    def _fill_from_csv(self, session: HeavyDBSession, table: str,
                       local: StrategyData) -> tuple[StrategyData, dict[str, Any]]:
        session.execute(create_table_sql(table, LONG_COLUMNS))
        for batch in dbdata.long_form_batches(local, self.config.load_batch_rows):
            session.load_arrow(table, batch)
        shape = dbdata.TableShape.read(session, table)
        dbdata.check_loaded(shape, local)
        pnl = dbdata.read_matrix(session, table, shape)
        dates, names = dbdata.read_labels(session, table, shape)
        if names != local.names or not np.array_equal(dates, local.dates) or not np.array_equal(
                pnl, local.pnl):
            raise DatabaseError("the data read back from HeavyDB differs from the data loaded")
        facts, warnings = dbdata.screen(session, table, pnl, names,
                                        self.config.screen_correlation_threshold)
        data = dataclasses.replace(local, pnl=np.ascontiguousarray(pnl),
                                   warnings=(*local.warnings, *warnings))
        return data, {"rows_loaded": shape.rows, **facts}

    def _fill_from_source(self, session: HeavyDBSession, table: str,
                          spec: InputSpec) -> tuple[StrategyData, dict[str, Any]]:
        config = self.config
        session.execute(long_table_from_source_sql(
            table, self._source_sql(spec), date_column=config.date_column,
            strategy_column=config.strategy_column, pnl_column=config.pnl_column))
        shape = dbdata.TableShape.read(session, table)
        dbdata.check_source(shape, session, table, spec.label)
        pnl = dbdata.read_matrix(session, table, shape)
        dates, names = dbdata.read_labels(session, table, shape)
        facts, warnings = dbdata.screen(session, table, pnl, names,
                                        config.screen_correlation_threshold)
        warnings = [*dbdata.apply_nan_policy(pnl, dates, names, spec.label, spec.nan_policy),
                    *warnings]
        dbdata.check_finite(pnl, dates, names, spec.label)
        return dbdata.build_data(pnl, dates, names, spec.label, warnings), {
            "rows_loaded": shape.rows, **facts}

    def _drop(self, session: HeavyDBSession, table: str, job_id: str) -> None:
        """Drop the per-job table; after a broken connection, on a fresh one."""
        try:
            session.execute(drop_table_sql(table))
            return
        except DatabaseError as exc:
            logger.info("%s: dropping %s on a new connection (%s)", job_id, table, exc)
        except HeavyOptimizerError as exc:
            logger.warning("%s: HeavyDB refused to drop table %s: %s", job_id, table, exc)
            return
        try:
            with connected(self.config) as fresh:
                fresh.execute(drop_table_sql(table))
        except HeavyOptimizerError as exc:
            logger.warning("%s: could not drop HeavyDB table %s (%s); the job's next attempt "
                           "drops it", job_id, table, exc)

    # -- results ---------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Which backend produced the data, and the server's statistics and screen."""
        return dict(self._facts)

    def publish(self, outcome: JobOutcome, data: StrategyData,
                strategy_metrics: Mapping[str, np.ndarray]) -> None:
        """Append the job's results to the result tables when ``write_results`` is on.

        Skipped after a fallback (the server is known to be down). A failure is a warning in
        ``optional`` mode (the output folder holds the results) and raises in ``required``.

        Raises:
            DatabaseError: ``required`` and the server stayed unreachable (recoverable).
            DatabaseQueryError: ``required`` and the server refused (e.g. no permission).
        """
        if not self.config.write_results or self._facts.get("name") != "heavydb":
            return
        rows = result_rows(outcome, data, strategy_metrics)

        def attempt() -> dict[str, int]:
            with connected(self.config) as session:
                return write_results(session, self.config.results_table_prefix, rows,
                                     outcome.job_id)

        try:
            written = self._retrying(attempt)()
        except (RetryError, HeavyOptimizerError) as exc:
            reason = self._unreachable_reason(exc) if isinstance(exc, RetryError) else str(exc)
            if self.config.mode == "optional":
                logger.warning("%s: results not written to HeavyDB: %s", outcome.job_id, reason)
                return
            if isinstance(exc, RetryError):
                raise DatabaseError(f"writing results to HeavyDB failed: {reason}",
                                    context={"endpoint": self.config.endpoint}) from exc
            raise
        logger.info("%s: results written to HeavyDB (%s)", outcome.job_id,
                    ", ".join(f"{self.config.results_table_prefix}{k}: {v} rows"
                              for k, v in written.items()))


def check_heavydb(config: HeavyDBConfig) -> list[CheckResult]:
    """Doctor checks: client library, reachability and version, permission to write.

    Problems are ``FAIL`` when ``mode`` is ``required`` and ``WARN`` when ``optional`` (jobs
    fall back to numpy). One connection attempt, no retries: the doctor reports, it does not
    wait.
    """
    if config.mode == "off":
        return [("OK", "HeavyDB backend is off (heavydb.mode = 'off')", "")]
    bad = "FAIL" if config.mode == "required" else "WARN"
    try:
        import_heavyai()
    except HeavyOptimizerError:
        return [(bad, "heavyai (the HeavyDB client) is not installed", INSTALL_HINT)]
    results: list[CheckResult] = [("OK", "heavyai client library installed", "")]
    probe = f"{config.work_table_prefix}doctor_{os.getpid()}"
    try:
        with connected(config) as session:
            results.append(("OK", f"HeavyDB {session.version()} reachable at {config.endpoint} "
                            f"(database {config.database!r}, user {config.user!r})", ""))
            try:
                session.execute(create_table_sql(probe, (("probe", "INTEGER"),)))
                session.execute(drop_table_sql(probe))
                results.append(("OK", "HeavyDB user may create and drop tables", ""))
            except HeavyOptimizerError as exc:
                with contextlib.suppress(HeavyOptimizerError):
                    session.execute(drop_table_sql(probe))
                results.append((bad, f"HeavyDB user {config.user!r} cannot create tables: {exc}",
                                f"grant CREATE TABLE and DROP on database {config.database!r} "
                                f"to {config.user!r} (per-job tables and result tables)"))
    except DatabaseError as exc:
        results.append((bad, f"HeavyDB not reachable: {exc}",
                        f"check that HeavyDB runs and heavydb.host/port ({config.endpoint}, "
                        f"protocol {config.protocol}) are right; binary uses port 6274"))
    except HeavyOptimizerError as exc:
        results.append((bad, f"HeavyDB refused the login: {exc}",
                        "check heavydb.user, heavydb.database and HEAVYDB_PASSWORD"))
    return results


__all__ = ["AlertSink", "CheckResult", "HeavyDBSource", "OutageTracker", "check_heavydb"]
