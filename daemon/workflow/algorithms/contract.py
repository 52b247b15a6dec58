"""What a search exchanges with its caller: the problem it searches (a protocol satisfied by
``daemon.workflow.fitness.PortfolioProblem``), the progress it reports after each iteration and
the result it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.intp]
FloatArray = NDArray[np.float64]


class Problem(Protocol):
    """What a search needs from ``daemon.workflow.fitness.PortfolioProblem``."""

    n_strategies: int
    k: int

    def evaluate(self, X: IntArray) -> FloatArray: ...

    def aggregate(self, X: IntArray) -> FloatArray: ...

    def fitness_from_aggregate(self, agg: FloatArray) -> FloatArray: ...

    def swap_aggregates(
        self, agg_row: FloatArray, out_idx: int, in_idx: IntArray
    ) -> FloatArray: ...

    def strategy_scores(self) -> FloatArray: ...


@dataclass(frozen=True)
class SearchProgress:
    """One progress report; the heartbeat's algorithm, iteration, best and progress fields."""

    algorithm: str
    iteration: int
    evaluations: int
    best_fitness: float | None
    progress: float
    elapsed_seconds: float


@dataclass(frozen=True)
class AlgorithmResult:
    """What one finished search found."""

    algorithm: str
    #: Best portfolio, sorted strategy indices.
    best_x: IntArray
    best_fitness: float
    evaluations: int
    iterations: int
    elapsed_seconds: float
    #: ``(evaluations, best_fitness)`` each time the best improved, for convergence charts.
    convergence: tuple[tuple[int, float], ...]


ProgressCallback = Callable[[SearchProgress], None]
CheckpointCallback = Callable[[dict[str, Any]], None]
