"""Result tables in HeavyDB: one row per job, per best-portfolio strategy, per algorithm run.

Tables (``<prefix>runs``, ``<prefix>portfolios``, ``<prefix>algorithms``) are created when
missing and appended to with the client's Arrow bulk loader; strategy names and error texts
travel as Arrow values, never inside SQL. A job's earlier rows are deleted first (the job id is
a bound parameter), so a report stage that runs again after a crash or a retry replaces its
rows instead of doubling them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..data import StrategyData
from ..outputs import METRIC_COLUMNS, build_summary
from ..results import JobOutcome
from .heavydb_client import HeavyDBSession
from .heavydb_sql import create_table_sql, quote_identifier

_ARROW_TYPES = {
    "TEXT": pa.string(),
    "DOUBLE": pa.float64(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "TIMESTAMP": pa.timestamp("s"),
}
_METRICS = tuple((name, "DOUBLE") for name in METRIC_COLUMNS)

#: Table suffix -> columns (name, SQL type), in load order.
RESULT_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "runs": (
        ("job_id", "TEXT"), ("written_at", "TIMESTAMP"), ("input_source", "TEXT"),
        ("input_sha256", "TEXT"), ("seed", "BIGINT"), ("fitness_metric", "TEXT"),
        ("best_algorithm", "TEXT"), ("portfolio_size", "INTEGER"), ("fitness", "DOUBLE"),
        ("raw_metric", "DOUBLE"), ("mean_correlation", "DOUBLE"), *_METRICS,
    ),
    "portfolios": (
        ("job_id", "TEXT"), ("portfolio_position", "INTEGER"), ("strategy", "TEXT"),
        ("column_index", "INTEGER"), *_METRICS,
    ),
    "algorithms": (
        ("job_id", "TEXT"), ("algorithm", "TEXT"), ("portfolio_size", "INTEGER"),
        ("status", "TEXT"), ("fitness", "DOUBLE"), ("raw_metric", "DOUBLE"),
        ("mean_correlation", "DOUBLE"), ("evaluations", "BIGINT"), ("run_seconds", "DOUBLE"),
        ("error_message", "TEXT"),
    ),
}


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if np.isfinite(number) else None


def result_rows(outcome: JobOutcome, data: StrategyData,
                strategy_metrics: Mapping[str, np.ndarray],
                *, now: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """The rows to append, per table suffix (``runs`` is empty when no algorithm succeeded)."""
    summary = build_summary(outcome, data)
    best = summary.get("best")
    rows: dict[str, list[dict[str, Any]]] = {"runs": [], "portfolios": [], "algorithms": []}
    job = outcome.job_id
    if best is not None:
        rows["runs"].append({
            "job_id": job, "written_at": int(now if now is not None else time.time()),
            "input_source": outcome.input_file, "input_sha256": outcome.input_sha256,
            "seed": outcome.seed, "fitness_metric": outcome.fitness_metric,
            "best_algorithm": best["algorithm"], "portfolio_size": best["portfolio_size"],
            "fitness": best["fitness"], "raw_metric": best["raw_metric"],
            "mean_correlation": best["mean_correlation"], **best["metrics"],
        })
        for position, column in enumerate(best["column_indices"], start=1):
            rows["portfolios"].append({
                "job_id": job, "portfolio_position": position, "strategy": data.names[column],
                "column_index": column,
                **{name: _finite_or_none(strategy_metrics[name][column])
                   for name in METRIC_COLUMNS if name in strategy_metrics},
            })
    for run in outcome.runs:
        rows["algorithms"].append({
            "job_id": job, "algorithm": run.algorithm, "portfolio_size": run.portfolio_size,
            "status": run.status.value, "fitness": run.best_fitness,
            "raw_metric": run.raw_metric, "mean_correlation": run.mean_correlation,
            "evaluations": run.evaluations, "run_seconds": run.seconds, "error_message": run.error,
        })
    return rows


def _arrow(columns: Sequence[tuple[str, str]], rows: list[dict[str, Any]]) -> pa.Table:
    schema = pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in columns])
    return pa.Table.from_pylist(
        [{name: _value(row.get(name), kind) for name, kind in columns} for row in rows],
        schema=schema)


def _value(value: Any, kind: str) -> Any:
    return _finite_or_none(value) if kind == "DOUBLE" else value


def write_results(session: HeavyDBSession, prefix: str, rows: dict[str, list[dict[str, Any]]],
                  job_id: str) -> dict[str, int]:
    """Create missing tables, replace ``job_id``'s rows, append ``rows``; returns rows written."""
    written: dict[str, int] = {}
    for suffix, columns in RESULT_TABLES.items():
        table = f"{prefix}{suffix}"
        session.execute(create_table_sql(table, columns, if_not_exists=True))
        session.execute(f"DELETE FROM {quote_identifier(table)} WHERE job_id = :job_id",
                        {"job_id": job_id})
        if rows[suffix]:
            session.load_arrow(table, _arrow(columns, rows[suffix]))
        written[suffix] = len(rows[suffix])
    return written


__all__ = ["RESULT_TABLES", "result_rows", "write_results"]
