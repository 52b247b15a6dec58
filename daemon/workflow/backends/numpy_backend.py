"""The embedded backend (the default): the CSV is parsed and validated in this process."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from daemon.error_handling.errors import ConfigurationError

from ..data import StrategyData, load_strategy_csv
from ..results import JobOutcome
from .base import InputSpec


class CsvSource:
    """Reads the job's CSV with :func:`..data.load_strategy_csv`; publishes nothing."""

    def load(self, spec: InputSpec) -> StrategyData:
        """Parse and validate ``spec.input_path``.

        Raises:
            ConfigurationError: The job names a server table or query (no server here).
            DataError: See :func:`load_strategy_csv`.
        """
        if spec.input_path is None:
            raise ConfigurationError(
                f"job {spec.job_id} reads {spec.label}, which needs the HeavyDB backend; set "
                "heavydb.mode to 'optional' or 'required' in optimizer_config.json"
            )
        return load_strategy_csv(spec.input_path, exclude_columns=spec.exclude_columns,
                                 nan_policy=spec.nan_policy)

    def describe(self) -> dict[str, Any]:
        """``{"name": "numpy"}``."""
        return {"name": "numpy"}

    def publish(self, outcome: JobOutcome, data: StrategyData,
                strategy_metrics: Mapping[str, np.ndarray]) -> None:
        """Nothing to deliver: the output folder is the whole result."""


__all__ = ["CsvSource"]
