"""Load and validate a strategy P&L CSV into a ``StrategyData`` matrix.

Column rule: the Date column is found by name; a column is *metadata* when its name matches an
entry of ``exclude_columns`` (``DEFAULT_EXCLUDED``: Day, zone, regime, confidence, threshold,
capital, start/end times); every other column is a *strategy* and must be numeric. A text cell
in a strategy column is therefore an error naming column and line, never a silent exclusion.
Matching is by whole words, case-insensitively: a name is split into words at non-alphanumeric
characters and camelCase humps, and an entry matches when its words appear consecutively, so
"Regime_Confidence_%" matches "regime" but "SENSEX 1336-1406 SL71%" and "Intraday" match
nothing.

Rows are kept as they are, one row per period: files with several rows per date (one per zone,
as in zones_regimes_88x29.csv) load unchanged, so dates must be non-decreasing, not strictly
increasing. Errors are one line naming the file, the column and the row as the 1-based *line
number in the file* (header = line 1; blank lines, which the parser skips, are counted);
``context`` holds ``{"file", "column", "row"}`` with that line.

Loading uses the pandas C engine with ``low_memory=False`` and the Date/metadata columns as the
index. Measured on the 82 x 25,544 production file (benchmarks/bench_data_fitness.py): C engine
~0.5 s raw, ~0.9 s for this whole validated load, default chunked C engine ~1.5 s, pyarrow
engine and pyarrow.csv ~8 s — pyarrow is slow on very wide files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from daemon.error_handling.errors import DataLoadError, DataValidationError

from .columns import DATE_COLUMN, DEFAULT_EXCLUDED

logger = logging.getLogger(__name__)

#: Cell texts read as blank (then handled by ``nan_policy``), in addition to the empty cell.
BLANK_TOKENS: tuple[str, ...] = ("", "NA", "N/A", "NaN", "nan", "null", "NULL")
#: Accepted date formats, tried by the shape of the first date.
_DATE_FORMATS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^\d{4}-\d{2}-\d{2}$"), "%Y-%m-%d"),
    (re.compile(r"^\d{2}-\d{2}-\d{4}$"), "%d-%m-%Y"),
)
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")

NanPolicy = Literal["fail", "zero"]


@dataclass(frozen=True)
class StrategyData:
    """A validated P&L matrix with its provenance.

    Attributes:
        dates: ``(days,)`` ``datetime64[D]``, non-decreasing.
        names: Strategy column names, in file order.
        pnl: ``(days, n_strategies)`` float64, C-contiguous, finite.
        source: The file read.
        sha256: Hex digest of the file's bytes (recorded in summary.json).
        excluded_columns: Metadata columns left out, in file order (the Date column not included).
        warnings: Human-readable notes, e.g. blank cells treated as 0.
    """

    dates: np.ndarray
    names: tuple[str, ...]
    pnl: np.ndarray
    source: Path
    sha256: str
    excluded_columns: tuple[str, ...]
    warnings: tuple[str, ...]

    @property
    def n_strategies(self) -> int:
        """Number of strategy columns."""
        return len(self.names)

    @property
    def days(self) -> int:
        """Number of rows (periods)."""
        return int(self.pnl.shape[0])


def _words(text: str) -> str:
    return " ".join(w.lower() for w in _WORD.findall(text))


def _metadata_matcher(exclude_columns: Sequence[str]) -> re.Pattern[str] | None:
    entries = [w for w in (_words(e) for e in exclude_columns) if w]
    if not entries:
        return None
    return re.compile(r"(?:^| )(?:" + "|".join(map(re.escape, entries)) + r")(?: |$)")


def is_metadata_column(name: str, exclude_columns: Sequence[str] = DEFAULT_EXCLUDED) -> bool:
    """Return whether ``name`` matches an exclusion entry as consecutive whole words."""
    matcher = _metadata_matcher(exclude_columns)
    return matcher is not None and matcher.search(_words(name)) is not None


class _LineNumbers:
    """Map a 0-based data row to its 1-based line in the file, skipping blank lines.

    The parser skips blank lines, so row i is not always line i + 2; the mapping is built only
    when an error needs it. Quoted fields spanning lines are not supported by this count.
    """

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._lines: list[int] | None = None

    def __call__(self, data_row: int) -> int:
        if self._lines is None:
            lines = self._raw.splitlines()
            self._lines = [n for n, text in enumerate(lines[1:], start=2) if text.strip()]
        return self._lines[data_row] if data_row < len(self._lines) else data_row + 2


def _fail(
    cls: type[DataLoadError] | type[DataValidationError],
    path: Path,
    message: str,
    *,
    column: str | None = None,
    row: int | None = None,
) -> DataLoadError | DataValidationError:
    where = f"{path}"
    if column is not None:
        where += f", column {column!r}"
    if row is not None:
        where += f", line {row}"
    return cls(f"{where}: {message}", context={"file": str(path), "column": column, "row": row})


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _fail(DataLoadError, path, "file not found") from None
    except IsADirectoryError:
        raise _fail(DataLoadError, path, "is a directory, not a CSV file") from None
    except OSError as exc:
        raise _fail(DataLoadError, path, f"cannot read file: {exc.strerror or exc}") from exc
    if not raw.strip():
        raise _fail(DataLoadError, path, "file is empty")
    return raw


def _read_header(path: Path, raw: bytes) -> list[str]:
    end = raw.find(b"\n")
    first_line = raw if end < 0 else raw[:end]
    try:
        text = first_line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(DataLoadError, path, f"header is not UTF-8 text ({exc.reason})", row=1) from exc
    header = next(csv.reader([text.rstrip("\r")]))
    seen: dict[str, int] = {}
    for position, name in enumerate(header, start=1):
        if not name.strip():
            raise _fail(DataValidationError, path, f"column {position} has an empty name", row=1)
        if name in seen:
            raise _fail(
                DataValidationError,
                path,
                f"duplicate column name (columns {seen[name]} and {position})",
                column=name,
                row=1,
            )
        seen[name] = position
    return header


def _parse_frame(path: Path, raw: bytes, index_positions: list[int]) -> pd.DataFrame:
    """Parse the CSV with the Date and metadata columns as the index.

    Putting them in the index leaves a frame of strategy columns only, whose ``to_numpy`` is
    cheap; selecting 25k columns out of a wider frame measured ~0.4 s.
    """
    try:
        return pd.read_csv(
            io.BytesIO(raw),
            encoding="utf-8-sig",
            low_memory=False,
            keep_default_na=False,
            na_values=list(BLANK_TOKENS),
            index_col=index_positions,
        )
    except pd.errors.ParserError as exc:
        match = re.search(r"line (\d+)", str(exc))
        row = int(match.group(1)) if match else None
        detail = " ".join(str(exc).split("C error: ")[-1].split())
        raise _fail(DataLoadError, path, f"malformed CSV: {detail}", row=row) from exc
    except UnicodeDecodeError as exc:
        raise _fail(DataLoadError, path, f"not UTF-8 text ({exc.reason})") from exc


def _parse_dates(path: Path, column: str, values: pd.Series, line: _LineNumbers) -> np.ndarray:
    text = values.astype("string").str.strip()
    blank = text.isna() | (text == "")
    if blank.any():
        i = int(np.argmax(blank.to_numpy()))
        raise _fail(DataValidationError, path, "blank date", column=column, row=line(i))
    first = str(text.iloc[0])
    fmt = next((f for pattern, f in _DATE_FORMATS if pattern.match(first)), None)
    parsed = pd.to_datetime(text, format=fmt or "%Y-%m-%d", errors="coerce")
    bad = parsed.isna().to_numpy()
    if fmt is None or bad.any():
        i = 0 if fmt is None else int(np.argmax(bad))
        raise _fail(
            DataValidationError,
            path,
            f"unparseable date {text.iloc[i]!r} (expected YYYY-MM-DD or DD-MM-YYYY, one format "
            "for the whole file)",
            column=column,
            row=line(i),
        )
    dates = parsed.to_numpy().astype("datetime64[D]")
    backwards = np.flatnonzero(dates[1:] < dates[:-1])
    if backwards.size:
        i = int(backwards[0]) + 1
        raise _fail(
            DataValidationError,
            path,
            f"dates not sorted: {text.iloc[i]} comes after {text.iloc[i - 1]}",
            column=column,
            row=line(i),
        )
    return dates


def _strategy_matrix(path: Path, frame: pd.DataFrame, line: _LineNumbers) -> np.ndarray:
    """Return the (strategy-only) frame as a float64 matrix; a text cell is an error."""
    kinds = [dt.kind for dt in frame.dtypes]
    for position in (i for i, kind in enumerate(kinds) if kind not in "iuf"):
        name = str(frame.columns[position])
        col = frame.iloc[:, position]
        numbers = pd.to_numeric(col, errors="coerce") if kinds[position] != "b" else col * np.nan
        bad = (numbers.isna() & col.notna()).to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise _fail(
                DataValidationError,
                path,
                f"non-numeric value {str(col.iloc[i])!r} in a strategy column (add the column "
                "to exclude_columns if it is metadata)",
                column=name,
                row=line(i),
            )
        # Only reachable for texts that parse as numbers but the C parser left as text
        # ("inf", "1e999"); they are converted here and rejected as non-finite later.
        frame.isetitem(position, numbers.to_numpy())
    return np.ascontiguousarray(frame.to_numpy(dtype=np.float64))


def load_strategy_csv(
    path: str | Path,
    *,
    exclude_columns: Sequence[str] = DEFAULT_EXCLUDED,
    nan_policy: NanPolicy = "fail",
) -> StrategyData:
    """Read and validate a strategy CSV.

    Args:
        path: CSV with a Date column, optional metadata columns and numeric strategy columns.
        exclude_columns: Metadata names (whole-word match, see module docstring).
        nan_policy: ``"fail"`` on a blank cell in a strategy column, or ``"zero"`` to read it
            as 0 and add a warning listing the affected columns.

    Returns:
        The validated ``StrategyData``.

    Raises:
        DataLoadError: Missing, unreadable, empty or malformed file.
        DataValidationError: No Date column, bad or unsorted dates, duplicate or empty column
            names, no strategy columns, fewer than 2 rows, non-numeric, non-finite or (with
            ``nan_policy="fail"``) blank cells. The message names file, column and line.
    """
    if nan_policy not in ("fail", "zero"):
        raise ValueError(f"nan_policy must be 'fail' or 'zero', got {nan_policy!r}")
    source = Path(path)
    raw = _read_bytes(source)
    header = _read_header(source, raw)
    date_col = next((c for c in header if c.strip().lower() == DATE_COLUMN), None)
    if date_col is None:
        raise _fail(DataValidationError, source, "no Date column in the header", row=1)
    matcher = _metadata_matcher(exclude_columns)
    excluded = tuple(
        c
        for c in header
        if c != date_col and matcher is not None and matcher.search(_words(c)) is not None
    )
    index_names = {date_col, *excluded}
    strategies = [c for c in header if c not in index_names]
    if not strategies:
        raise _fail(
            DataValidationError, source, "no strategy columns (all columns are Date or metadata)"
        )
    frame = _parse_frame(source, raw, [i for i, c in enumerate(header) if c in index_names])
    if [str(c) for c in frame.columns] != strategies:
        raise _fail(DataLoadError, source, "header could not be parsed consistently", row=1)
    if len(frame) < 2:
        raise _fail(DataValidationError, source, f"{len(frame)} data row(s); at least 2 needed")
    line = _LineNumbers(raw)
    dates = _parse_dates(source, date_col, frame.index.get_level_values(date_col).to_series(), line)
    pnl = _strategy_matrix(source, frame, line)
    warnings = _apply_nan_policy(source, pnl, strategies, nan_policy, line)
    infinite = np.isinf(pnl)
    if infinite.any():
        r, c = np.argwhere(infinite)[0]
        raise _fail(
            DataValidationError,
            source,
            "non-finite value (inf)",
            column=strategies[c],
            row=line(int(r)),
        )
    digest = hashlib.sha256(raw).hexdigest()
    logger.info(
        "Loaded %s: %d rows x %d strategies (%d metadata columns excluded)",
        source,
        pnl.shape[0],
        pnl.shape[1],
        len(excluded),
    )
    return StrategyData(
        dates=dates,
        names=tuple(strategies),
        pnl=pnl,
        source=source,
        sha256=digest,
        excluded_columns=excluded,
        warnings=tuple(warnings),
    )


def _apply_nan_policy(
    path: Path, pnl: np.ndarray, names: list[str], nan_policy: NanPolicy, line: _LineNumbers
) -> list[str]:
    blank = np.isnan(pnl)
    if not blank.any():
        return []
    if nan_policy == "fail":
        r, c = np.argwhere(blank)[0]
        raise _fail(
            DataValidationError,
            path,
            f"blank cell in a strategy column ({int(blank.sum())} in total; "
            "nan_policy='zero' reads them as 0)",
            column=names[c],
            row=line(int(r)),
        )
    counts = blank.sum(axis=0)
    affected = [f"{names[c]} ({int(counts[c])})" for c in np.flatnonzero(counts)]
    pnl[blank] = 0.0
    message = f"{int(counts.sum())} blank cells read as 0 in columns: {', '.join(affected)}"
    logger.warning("%s: %s", path, message)
    return [message]


def check_portfolio_size(data: StrategyData, k: int) -> None:
    """Raise unless a portfolio of ``k`` distinct strategies can be drawn from ``data``.

    Raises:
        DataValidationError: ``k < 1`` or more than ``data.n_strategies``.
    """
    if k < 1:
        raise _fail(DataValidationError, data.source, f"portfolio size must be >= 1, got {k}")
    if k > data.n_strategies:
        raise _fail(
            DataValidationError,
            data.source,
            f"portfolio size {k} exceeds the {data.n_strategies} strategy columns",
        )


def infer_periods_per_year(dates: np.ndarray) -> float:
    """Estimate rows per year from the dates, for annualising Sharpe, Sortino and returns.

    Uses the median gap between distinct dates: ``365.25 / gap`` (weekly -> ~52.2). A median
    gap of one day means daily data: 252 when no date falls on a weekend (trading days),
    else 365.25. The result is multiplied by the mean number of rows per date (zone files
    hold several rows per date) and clamped to at least 1. Fewer than two distinct dates
    cannot be measured and give 252.
    """
    days = np.unique(np.asarray(dates, dtype="datetime64[D]"))
    if days.size < 2:
        return 252.0
    rows_per_date = len(dates) / days.size
    gap = float(np.median(np.diff(days).astype(np.float64)))
    if gap <= 1.0:
        weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday (weekday 3)
        per_date_year = 365.25 if (weekday >= 5).any() else 252.0
    else:
        per_date_year = 365.25 / gap
    return max(1.0, per_date_year * rows_per_date)
