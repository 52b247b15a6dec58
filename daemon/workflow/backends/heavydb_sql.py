"""Every SQL statement the HeavyDB backend sends, and the checks on SQL that comes from jobs.

Rules that keep data out of the statement text: strategy names are *values* of a long-form
table (date, strategy, pnl), loaded with the client's Arrow bulk loader and never written
into SQL; table and column names come from the config or are generated from a sanitised job
id, and are always double-quoted (``"`` doubled inside). The only SQL a job may bring is a
read-only ``input_query``, which :func:`query_problem` checks and which is only ever used as
a subquery of our own ``CREATE TABLE ... AS SELECT``.

The statements stay in a small common subset (CREATE/DROP TABLE, CTAS, GROUP BY with COUNT,
SUM, AVG, MIN, MAX, STDDEV_SAMP and CORR, a join, DENSE_RANK) that HeavyDB documents.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

#: Columns of the per-job long-form table: row of the input, date, strategy ordinal, name, P&L.
#: Ordinals keep the input's row and column order, so the matrix read back is the one loaded.
LONG_COLUMNS: tuple[tuple[str, str], ...] = (
    ("row_no", "INTEGER"),
    ("trade_date", "DATE"),
    ("strategy_no", "INTEGER"),
    ("strategy", "TEXT"),
    ("pnl", "DOUBLE"),
)
#: Longest ``input_query`` accepted (a query, not a data payload).
MAX_QUERY_CHARS = 20_000
#: Words that make a statement something other than a read-only SELECT.
FORBIDDEN_WORDS = frozenset({
    "alter", "archive", "call", "comment", "copy", "create", "delete", "drop", "dump",
    "execute", "export", "grant", "insert", "into", "merge", "optimize", "reassign", "rename",
    "restore", "revoke", "set", "truncate", "update", "validate",
})
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: String literals ('' escapes a quote) and quoted identifiers ("" escapes a quote).
_LITERALS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_WORDS = re.compile(r"[A-Za-z_]+")


def quote_identifier(name: str) -> str:
    """Return ``name`` as a double-quoted SQL identifier (inner ``"`` doubled).

    Raises:
        ValueError: Empty, or containing a NUL or a line break (never a valid name here).
    """
    if not name or any(ch in name for ch in "\x00\r\n"):
        raise ValueError(f"not a usable SQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def job_table_name(prefix: str, job_id: str) -> str:
    """The per-job table: prefix, the job id reduced to ``[a-z0-9_]``, and a short hash.

    The hash keeps ids that sanitise alike (``a.b`` and ``a-b``) apart; the length stays
    well under common identifier limits.
    """
    cleaned = re.sub(r"[^a-z0-9_]", "_", job_id.lower())[:40]
    digest = hashlib.sha256(job_id.encode("utf-8")).hexdigest()[:10]
    return f"{prefix}{cleaned}_{digest}"


def table_name_problem(name: object) -> str | None:
    """Why ``name`` is not an acceptable ``input_table``, or None when it is."""
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        return ("'input_table' must be a table name of letters, digits and '_' (not starting "
                "with a digit), at most 128 characters")
    return None


def query_problem(query: object) -> str | None:
    """Why ``query`` is not an acceptable read-only ``input_query``, or None when it is.

    Accepted: one SELECT (optionally ``WITH ... SELECT``) without semicolons, comments or
    any data-changing keyword outside string literals and quoted identifiers.
    """
    if not isinstance(query, str) or not query.strip():
        return "'input_query' must be a non-empty SELECT statement"
    if len(query) > MAX_QUERY_CHARS:
        return f"'input_query' is longer than {MAX_QUERY_CHARS} characters"
    if ";" in query:
        return "'input_query' must be a single statement without ';'"
    if "\x00" in query:
        return "'input_query' contains a NUL character"
    unquoted = _LITERALS.sub(" ", query)
    if "'" in unquoted or '"' in unquoted:
        return "'input_query' has an unterminated quote"
    if "--" in unquoted or "/*" in unquoted:
        return "'input_query' must not contain comments"
    words = [w.lower() for w in _WORDS.findall(unquoted)]
    if not words or words[0] not in ("select", "with"):
        return "'input_query' must start with SELECT (or WITH ... SELECT)"
    forbidden = sorted(set(words) & FORBIDDEN_WORDS)
    if forbidden:
        return (f"'input_query' may only read data; it contains {', '.join(forbidden).upper()}")
    return None


def from_item_sql(*, table: str | None, query: str | None) -> str:
    """The FROM item of a table/query input, after its checks.

    Raises:
        ValueError: The table name or query is not acceptable (the reason).
    """
    problem = table_name_problem(table) if table is not None else query_problem(query)
    if problem is not None:
        raise ValueError(problem)
    return quote_identifier(table) if table is not None else f"({query})"


# -- per-job table -----------------------------------------------------------------------


def drop_table_sql(table: str) -> str:
    """Drop a table if it exists (a leftover of a crashed attempt, or our own cleanup)."""
    return f"DROP TABLE IF EXISTS {quote_identifier(table)}"


def create_table_sql(table: str, columns: Sequence[tuple[str, str]], *,
                     if_not_exists: bool = False) -> str:
    """``CREATE TABLE`` with quoted column names and types from our own schemas."""
    body = ", ".join(f"{quote_identifier(name)} {kind}" for name, kind in columns)
    guard = "IF NOT EXISTS " if if_not_exists else ""
    return f"CREATE TABLE {guard}{quote_identifier(table)} ({body})"


def long_table_from_source_sql(table: str, from_item: str, *, date_column: str,
                               strategy_column: str, pnl_column: str) -> str:
    """Copy a long-form table or query into the per-job table, numbering dates and strategies.

    ``from_item`` is a quoted table name, or a query accepted by :func:`query_problem` in
    parentheses (see :func:`from_item_sql`). Dates
    and strategies are numbered in sorted order (DENSE_RANK), which fixes the matrix layout.
    """
    date, strategy, pnl = (f"src.{quote_identifier(c)}"
                           for c in (date_column, strategy_column, pnl_column))
    return (
        f"CREATE TABLE {quote_identifier(table)} AS SELECT "
        f"CAST(DENSE_RANK() OVER (ORDER BY {date}) - 1 AS INTEGER) AS row_no, "
        f"CAST({date} AS DATE) AS trade_date, "
        f"CAST(DENSE_RANK() OVER (ORDER BY {strategy}) - 1 AS INTEGER) AS strategy_no, "
        f"CAST({strategy} AS TEXT) AS strategy, "
        f"CAST({pnl} AS DOUBLE) AS pnl "
        f"FROM {from_item} AS src"
    )


def shape_sql(table: str) -> str:
    """Rows, P&L values, dates, strategies and rows missing a date or strategy."""
    return (
        "SELECT COUNT(*) AS n_rows, COUNT(pnl) AS n_values, MAX(row_no) + 1 AS n_days, "
        "MAX(strategy_no) + 1 AS n_strategies, "
        "COUNT(*) - COUNT(trade_date) AS no_date, COUNT(*) - COUNT(strategy) AS no_strategy "
        f"FROM {quote_identifier(table)}"
    )


def duplicate_cell_sql(table: str) -> str:
    """One (strategy, date) that appears more than once, if any."""
    return (
        "SELECT strategy, trade_date, COUNT(*) AS n FROM "
        f"{quote_identifier(table)} GROUP BY strategy, trade_date HAVING COUNT(*) > 1 "
        "ORDER BY strategy, trade_date LIMIT 1"
    )


def statistics_sql(table: str) -> str:
    """Per strategy: rows, values, total, mean, sample std, min, max, winning periods."""
    return (
        "SELECT strategy_no, COUNT(*) AS n_rows, COUNT(pnl) AS n_values, SUM(pnl) AS total, "
        "AVG(pnl) AS mean, STDDEV_SAMP(pnl) AS std, MIN(pnl) AS worst, MAX(pnl) AS best, "
        "COUNT(CASE WHEN pnl > 0 THEN 1 END) AS wins "
        f"FROM {quote_identifier(table)} GROUP BY strategy_no ORDER BY strategy_no"
    )


def field_correlation_sql(table: str) -> str:
    """Per strategy: Pearson correlation with the equal-weight field (mean P&L per row)."""
    quoted = quote_identifier(table)
    return (
        "SELECT t.strategy_no, CORR(t.pnl, f.field_pnl) AS field_correlation "
        f"FROM {quoted} AS t JOIN (SELECT row_no, AVG(pnl) AS field_pnl FROM {quoted} "
        "GROUP BY row_no) AS f ON t.row_no = f.row_no "
        "GROUP BY t.strategy_no ORDER BY t.strategy_no"
    )


def cells_sql(table: str) -> str:
    """Every cell as (row, strategy, P&L): what the optimiser's matrix is built from."""
    return f"SELECT row_no, strategy_no, pnl FROM {quote_identifier(table)}"


def names_sql(table: str) -> str:
    """Strategy name per ordinal."""
    return (f"SELECT strategy_no, MIN(strategy) AS strategy FROM {quote_identifier(table)} "
            "GROUP BY strategy_no ORDER BY strategy_no")


def dates_sql(table: str) -> str:
    """Date per row ordinal."""
    return (f"SELECT row_no, MIN(trade_date) AS trade_date FROM {quote_identifier(table)} "
            "GROUP BY row_no ORDER BY row_no")


__all__ = [
    "LONG_COLUMNS",
    "cells_sql",
    "create_table_sql",
    "dates_sql",
    "drop_table_sql",
    "duplicate_cell_sql",
    "field_correlation_sql",
    "from_item_sql",
    "job_table_name",
    "long_table_from_source_sql",
    "names_sql",
    "query_problem",
    "quote_identifier",
    "shape_sql",
    "statistics_sql",
    "table_name_problem",
]
