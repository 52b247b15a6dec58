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
from .columns import DEFAULT_EXCLUDED
from .fitness import FITNESS_METRICS

#: Evaluations that take each algorithm about 0.75 s on the production file (82 x
#: 25,544, k = 35) on one core of the reference machine: searches differ in cost per
#: evaluation (HC and SA score swaps in O(days); BO fits a model per batch).
DEFAULT_EVALUATIONS: dict[str, int] = {
    "GA": 60_000, "PSO": 20_000, "SA": 110_000, "DE": 20_000,
    "ACO": 22_000, "HC": 220_000, "BO": 1_500, "RS": 60_000,
}


@dataclass(frozen=True)
class BudgetConfig:
    """Per-algorithm budget: evaluations (deterministic) and a time cap (a safety net).

    The evaluation budget is what normally ends a search, so the same seed gives the same
    portfolio on any machine and a resumed job equals an uninterrupted one. ``max_seconds``
    only binds on a machine much slower than expected; then results depend on its speed.
    """

    max_evaluations: int = 100_000
    max_seconds: float = 5.0
    #: Per-algorithm evaluation budgets; algorithms not named use ``max_evaluations``.
    evaluations_per_algorithm: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_EVALUATIONS))

    def __post_init__(self) -> None:
        if self.max_evaluations < 1 or self.max_seconds <= 0:
            raise ValueError("budget.max_evaluations and budget.max_seconds must be > 0")
        unknown = sorted(set(self.evaluations_per_algorithm) - set(ALGORITHMS))
        if unknown:
            raise ValueError(f"budget.evaluations_per_algorithm has unknown {unknown}; "
                             f"allowed: {', '.join(ALGORITHMS)}")
        if any(value < 1 for value in self.evaluations_per_algorithm.values()):
            raise ValueError("budget.evaluations_per_algorithm values must be >= 1")

    def evaluations_for(self, algorithm: str) -> int:
        """The evaluation budget of one algorithm run."""
        return self.evaluations_per_algorithm.get(algorithm, self.max_evaluations)


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
