"""``optimizer_config.json``: what a job optimises and with which budgets, validated once.

Sections: ``optimizer`` (seed, fitness, penalty, algorithms to run, per-algorithm budget,
mid-run checkpoint interval), ``data`` (metadata columns, blank-cell policy), ``algorithms``
(each algorithm's parameters, see :mod:`.algorithms.params`) and ``heavydb`` (the optional
HeavyDB backend, see :mod:`.backends.heavydb_config`; its ``HEAVYDB_*`` environment overrides
are applied when the file is loaded). A job file may override the seed, fitness, algorithm list
and execution mode; everything else is the site's policy.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from daemon.error_handling.settings import build_dataclass, read_json_file

from .algorithms import ALGORITHMS
from .algorithms.params import AlgorithmsConfig
from .backends.heavydb_config import HeavyDBConfig
from .data import DEFAULT_EXCLUDED
from .fitness import FITNESS_METRICS


@dataclass(frozen=True)
class BudgetConfig:
    """Per-algorithm budget: evaluations (deterministic) and a time cap (a safety net)."""

    max_evaluations: int = 120_000
    max_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.max_evaluations < 1 or self.max_seconds <= 0:
            raise ValueError("budget.max_evaluations and budget.max_seconds must be > 0")


@dataclass(frozen=True)
class OptimizerSection:
    seed: int = 42
    fitness_metric: str = "ratio"
    correlation_penalty_weight: float = 10.0
    algorithms: list[str] = field(default_factory=lambda: list(ALGORITHMS))
    budget: BudgetConfig = BudgetConfig()
    #: Seconds between an algorithm's own mid-run checkpoints.
    checkpoint_interval: float = 60.0

    def __post_init__(self) -> None:
        if self.fitness_metric not in FITNESS_METRICS:
            raise ValueError(
                f"optimizer.fitness_metric {self.fitness_metric!r} is unknown; allowed: "
                f"{', '.join(FITNESS_METRICS)}"
            )
        unknown = [name for name in self.algorithms if name not in ALGORITHMS]
        if unknown or not self.algorithms:
            raise ValueError(
                f"optimizer.algorithms must name some of {', '.join(ALGORITHMS)}; "
                f"unknown: {unknown}"
            )
        if self.correlation_penalty_weight < 0:
            raise ValueError("optimizer.correlation_penalty_weight must be >= 0")


@dataclass(frozen=True)
class DataSection:
    exclude_columns: list[str] = field(default_factory=lambda: list(DEFAULT_EXCLUDED))
    nan_policy: Literal["fail", "zero"] = "fail"


@dataclass(frozen=True)
class OptimizerConfig:
    """The whole of ``optimizer_config.json``."""

    optimizer: OptimizerSection = OptimizerSection()
    data: DataSection = DataSection()
    algorithms: AlgorithmsConfig = AlgorithmsConfig()
    heavydb: HeavyDBConfig = HeavyDBConfig()

    def to_dict(self) -> dict[str, Any]:
        """JSON form, recorded in each job's summary as the effective config (no secrets)."""
        data = dataclasses.asdict(self)
        data["heavydb"] = self.heavydb.redacted()
        return data


def load_optimizer_config(
    path: str | Path | None,
    *,
    unknown: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> OptimizerConfig:
    """Load ``optimizer_config.json``; ``None`` means the built-in defaults.

    ``HEAVYDB_*`` variables of ``environ`` (default: the process environment, read now)
    override the ``heavydb`` section.

    Raises:
        ConfigurationError: Unreadable, not JSON, or a wrong type/value (file and key named).
    """
    config = OptimizerConfig() if path is None else build_dataclass(
        OptimizerConfig, read_json_file(Path(path)), source=str(path), unknown=unknown
    )
    heavydb = config.heavydb.with_environment(os.environ if environ is None else environ)
    return dataclasses.replace(config, heavydb=heavydb)
