"""What the pipeline asks of a backend: strategy data in, results out.

The load stage asks a :class:`StrategySource` for ``StrategyData`` and the report stage hands
it the outcome. The pipeline neither knows nor cares whether the matrix was parsed here or
computed on a database server, which keeps the numpy path (the default) free of any database
code and lets the HeavyDB backend fall back to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..data import DEFAULT_EXCLUDED, NanPolicy, StrategyData
from ..results import JobOutcome


@dataclass(frozen=True)
class InputSpec:
    """Where a job's strategy data comes from: exactly one of file, table or query.

    Attributes:
        job_id: Names per-job server tables and log lines.
        input_path: A strategy CSV (wide: Date column, one column per strategy).
        input_table: A server table in long form (date, strategy, P&L columns).
        input_query: A read-only SELECT giving that long form.
        exclude_columns: Metadata columns of a CSV (see :mod:`..data`).
        nan_policy: Blank cells: ``fail`` or read as 0.
    """

    job_id: str
    input_path: Path | None = None
    input_table: str | None = None
    input_query: str | None = None
    exclude_columns: tuple[str, ...] = DEFAULT_EXCLUDED
    nan_policy: NanPolicy = "fail"

    def __post_init__(self) -> None:
        given = [v for v in (self.input_path, self.input_table, self.input_query) if v]
        if len(given) != 1:
            raise ValueError("give exactly one of input_path, input_table, input_query")

    @property
    def needs_server(self) -> bool:
        """Whether only a database server can provide this input."""
        return self.input_path is None

    @property
    def label(self) -> str:
        """How reports name the input: the file name, ``heavydb:<table>`` or ``heavydb:query``."""
        if self.input_path is not None:
            return self.input_path.name
        return f"heavydb:{self.input_table}" if self.input_table else "heavydb:query"


class StrategySource(Protocol):
    """A backend as the pipeline sees it."""

    def load(self, spec: InputSpec) -> StrategyData:
        """Return the validated P&L matrix for ``spec``.

        Raises:
            DataError: The input cannot be used (file, column or row named).
            DatabaseError: A server needed for the input is unreachable (recoverable).
            DatabaseQueryError: The server refused a statement (not recoverable).
        """
        ...

    def describe(self) -> dict[str, Any]:
        """JSON facts for ``summary.json`` (``data.backend``): which backend ran, and how."""
        ...

    def publish(self, outcome: JobOutcome, data: StrategyData,
                strategy_metrics: Mapping[str, np.ndarray]) -> None:
        """Deliver results beyond the output folder (a no-op for the numpy backend)."""
        ...


__all__ = ["InputSpec", "StrategySource"]
