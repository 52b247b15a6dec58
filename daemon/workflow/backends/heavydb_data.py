"""Moving strategy data between ``StrategyData`` and a long-form HeavyDB table.

Out: a CSV already validated by :func:`..data.load_strategy_csv` becomes Arrow batches of
(row_no, trade_date, strategy_no, strategy, pnl), strategy-major, for the client's bulk loader.
Back: the per-job table is checked (complete, no duplicates, no missing dates or names), read
with one Arrow select and scattered into the ``(days, strategies)`` matrix by its ordinals, so
the matrix is exactly the one loaded and a portfolio's column indices mean the same thing as on
the numpy path. Per-strategy statistics and the correlation screen are computed by the server
and cross-checked against the matrix read back.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from daemon.error_handling.errors import DatabaseError, DataValidationError

from ..data import NanPolicy, StrategyData
from ..metrics import FLAT_RELATIVE_TOLERANCE
from . import heavydb_sql as sql
from .heavydb_client import HeavyDBSession

#: Arrow types of :data:`heavydb_sql.LONG_COLUMNS`, in order.
LONG_SCHEMA = pa.schema([
    ("row_no", pa.int32()),
    ("trade_date", pa.date32()),
    ("strategy_no", pa.int32()),
    ("strategy", pa.string()),
    ("pnl", pa.float64()),
])
#: Server totals may differ from numpy's by summation order; more than this is corruption.
TOTAL_RELATIVE_TOLERANCE = 1e-9
#: Names listed per screen finding in warnings (the summary keeps counts).
LISTED_NAMES = 10


def long_form_batches(data: StrategyData, batch_rows: int) -> Iterator[pa.Table]:
    """Yield ``data`` as long-form Arrow tables of at most ``batch_rows`` rows each."""
    days, n_strategies = data.pnl.shape
    names = pa.array(data.names, pa.string())
    dates = data.dates.astype("datetime64[D]")
    total = days * n_strategies
    for start in range(0, total, batch_rows):
        cells = np.arange(start, min(total, start + batch_rows), dtype=np.int64)
        strategy, row = np.divmod(cells, days)
        yield pa.Table.from_arrays([
            pa.array(row.astype(np.int32)),
            pa.array(dates[row], pa.date32()),
            pa.array(strategy.astype(np.int32)),
            pa.DictionaryArray.from_arrays(pa.array(strategy.astype(np.int32)),
                                           names).cast(pa.string()),
            pa.array(data.pnl[row, strategy], pa.float64()),
        ], schema=LONG_SCHEMA)


@dataclass(frozen=True)
class TableShape:
    """Counts of the per-job table (see :func:`heavydb_sql.shape_sql`)."""

    rows: int
    values: int
    days: int
    strategies: int
    no_date: int
    no_strategy: int

    @classmethod
    def read(cls, session: HeavyDBSession, table: str) -> TableShape:
        """Ask the server."""
        (row,) = session.execute(sql.shape_sql(table))
        return cls(*(int(v or 0) for v in row))


def check_loaded(shape: TableShape, data: StrategyData) -> None:
    """Raise unless the server holds every cell that was sent (a load cut short, retried)."""
    days, n_strategies = data.pnl.shape
    if (shape.rows, shape.days, shape.strategies) != (days * n_strategies, days, n_strategies):
        raise DatabaseError(
            f"HeavyDB holds {shape.rows} rows ({shape.days} dates x {shape.strategies} "
            f"strategies) of the {days * n_strategies} sent; the load was incomplete"
        )


def check_source(shape: TableShape, session: HeavyDBSession, table: str, label: str) -> None:
    """Raise ``DataValidationError`` unless a table/query input is usable long-form data."""
    where = f"{label}:"
    if shape.rows == 0:
        raise DataValidationError(f"{where} the input has no rows", context={"file": label})
    if shape.no_date or shape.no_strategy:
        raise DataValidationError(
            f"{where} {shape.no_date} row(s) without a date and {shape.no_strategy} without a "
            "strategy name; every row needs both", context={"file": label})
    if shape.rows > shape.days * shape.strategies:
        duplicates = session.execute(sql.duplicate_cell_sql(table))
        name, date, count = duplicates[0] if duplicates else ("?", "?", "several")
        raise DataValidationError(
            f"{where} strategy {name!r} has {count} rows for {date}; each (date, strategy) "
            "pair must appear once", context={"file": label, "column": name})
    if shape.days < 2:
        raise DataValidationError(f"{where} {shape.days} date(s); at least 2 needed",
                                  context={"file": label})


def read_matrix(session: HeavyDBSession, table: str, shape: TableShape) -> np.ndarray:
    """The ``(days, strategies)`` matrix of the table; missing and NULL cells are NaN."""
    frame = session.select_frame(sql.cells_sql(table))
    pnl = np.full((shape.days, shape.strategies), np.nan)
    rows = frame["row_no"].to_numpy(dtype=np.int64)
    columns = frame["strategy_no"].to_numpy(dtype=np.int64)
    pnl[rows, columns] = frame["pnl"].to_numpy(dtype=np.float64, na_value=np.nan)
    return pnl


def read_labels(session: HeavyDBSession, table: str,
                shape: TableShape) -> tuple[np.ndarray, tuple[str, ...]]:
    """Dates per row and names per strategy, by ordinal."""
    dates = np.empty(shape.days, dtype="datetime64[D]")
    for row_no, day in session.execute(sql.dates_sql(table)):
        dates[int(row_no)] = np.datetime64(day, "D")
    names = [""] * shape.strategies
    for strategy_no, name in session.execute(sql.names_sql(table)):
        names[int(strategy_no)] = str(name)
    return dates, tuple(names)


def apply_nan_policy(pnl: np.ndarray, dates: np.ndarray, names: Sequence[str], label: str,
                     nan_policy: NanPolicy) -> list[str]:
    """Blank (missing or NULL) cells: an error naming the first, or 0 with a warning."""
    blank = np.isnan(pnl)
    if not blank.any():
        return []
    row, column = (int(v) for v in np.argwhere(blank)[0])
    if nan_policy == "fail":
        raise DataValidationError(
            f"{label}: strategy {names[column]!r} has no P&L for {dates[row]} "
            f"({int(blank.sum())} blank cells in total; nan_policy='zero' reads them as 0)",
            context={"file": label, "column": names[column], "row": str(dates[row])})
    counts = blank.sum(axis=0)
    pnl[blank] = 0.0
    affected = [f"{names[int(c)]} ({int(counts[c])})" for c in np.flatnonzero(counts)]
    return [f"{int(counts.sum())} blank cells read as 0 in columns: {', '.join(affected)}"]


def check_finite(pnl: np.ndarray, dates: np.ndarray, names: Sequence[str], label: str) -> None:
    """Raise on an infinite P&L value (NaN has been handled by the blank-cell policy)."""
    infinite = np.isinf(pnl)
    if infinite.any():
        row, column = (int(v) for v in np.argwhere(infinite)[0])
        raise DataValidationError(
            f"{label}: strategy {names[column]!r} has a non-finite P&L on {dates[row]}",
            context={"file": label, "column": names[column], "row": str(dates[row])})


def content_sha256(dates: np.ndarray, names: Sequence[str], pnl: np.ndarray) -> str:
    """Digest of a table input's content, so a resumed job notices a changed source."""
    digest = hashlib.sha256()
    digest.update("\x00".join(names).encode("utf-8"))
    digest.update(np.ascontiguousarray(dates.astype("datetime64[D]")).tobytes())
    digest.update(np.ascontiguousarray(pnl).tobytes())
    return digest.hexdigest()


def build_data(pnl: np.ndarray, dates: np.ndarray, names: tuple[str, ...], label: str,
               warnings: Sequence[str]) -> StrategyData:
    """``StrategyData`` for a table/query input (no metadata columns: long form has none)."""
    return StrategyData(dates=dates, names=names, pnl=np.ascontiguousarray(pnl),
                        source=Path(label), sha256=content_sha256(dates, names, pnl),
                        excluded_columns=(), warnings=tuple(warnings))


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def screen(session: HeavyDBSession, table: str, pnl: np.ndarray, names: Sequence[str],
           threshold: float) -> tuple[dict[str, Any], list[str]]:
    """Server statistics, cross-checked against ``pnl`` (blank cells NaN), and the screen.

    Returns:
        ``(facts, warnings)``: counts for the summary, and one warning per finding that lists
        up to ``LISTED_NAMES`` strategies.

    Raises:
        DatabaseError: The server's per-strategy totals disagree with the matrix.
    """
    stats = session.execute(sql.statistics_sql(table))
    totals = np.full(len(names), np.nan)
    for row in stats:
        totals[int(row[0])] = _number(row[3])
    expected = np.nansum(pnl, axis=0)
    scale = np.nanmax(np.abs(pnl), axis=0, initial=0.0) * pnl.shape[0]
    checked = np.isfinite(totals)  # a NULL-only or NaN-holding series has no usable total
    if len(stats) != len(names) or (
            np.abs(totals - expected)[checked] > scale[checked] * TOTAL_RELATIVE_TOLERANCE
            + 1e-12).any():
        raise DatabaseError("HeavyDB's per-strategy totals disagree with the data read back "
                            "from it")
    flat = [names[int(r[0])] for r in stats
            if not _number(r[5]) > max(abs(_number(r[6])), abs(_number(r[7])))
            * FLAT_RELATIVE_TOLERANCE]
    correlated = [names[int(no)] for no, value in session.execute(sql.field_correlation_sql(table))
                  if value is not None and math.isfinite(value) and value >= threshold]
    facts = {"strategies": len(names), "flat_strategies": len(flat),
             "field_correlation_threshold": threshold,
             "high_field_correlation": len(correlated)}
    warnings = []
    if flat:
        warnings.append(f"{len(flat)} strategies have no variance (flat P&L): "
                        f"{_listing(flat)}")
    if correlated:
        warnings.append(f"{len(correlated)} strategies move with the field (correlation >= "
                        f"{threshold} with the equal-weight mean of all strategies): "
                        f"{_listing(correlated)}")
    return facts, warnings


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:LISTED_NAMES])
    return shown + (f" and {len(names) - LISTED_NAMES} more" if len(names) > LISTED_NAMES else "")


__all__ = [
    "LONG_SCHEMA",
    "TableShape",
    "apply_nan_policy",
    "build_data",
    "check_finite",
    "check_loaded",
    "check_source",
    "long_form_batches",
    "read_labels",
    "read_matrix",
    "screen",
]
