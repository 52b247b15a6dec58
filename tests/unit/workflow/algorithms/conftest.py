"""Problems for the algorithm tests: small structured instances with a known optimum."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest

from daemon.workflow.fitness import PortfolioProblem


def structured_pnl(seed: int, n_strategies: int, days: int = 82) -> np.ndarray:
    """Daily P&L with structure: three correlated families, each strategy with its own drift.

    Correlated families make the correlation penalty matter, drifts make some strategies
    better than others, and the idiosyncratic noise makes drawdowns differ.
    """
    rng = np.random.default_rng(seed)
    factors = rng.normal(0.0, 1.0, (days, 3))
    loading = np.zeros((n_strategies, 3))
    loading[np.arange(n_strategies), np.arange(n_strategies) % 3] = rng.uniform(
        0.5, 1.5, n_strategies
    )
    drift = rng.normal(0.1, 0.15, n_strategies)
    noise = rng.normal(0.0, 1.0, (days, n_strategies))
    return np.asarray(100.0 * (factors @ loading.T + noise + drift))


@dataclass(frozen=True)
class KnownOptimum:
    """A problem small enough to enumerate, with its best portfolio."""

    problem: PortfolioProblem
    best_x: frozenset[int]
    best_fitness: float


def enumerated(seed: int, n_strategies: int = 16, k: int = 4) -> KnownOptimum:
    """Build a structured problem and find its optimum by scoring every k-subset."""
    problem = PortfolioProblem(structured_pnl(seed, n_strategies), k)
    every = np.array(list(itertools.combinations(range(n_strategies), k)))
    fitness = problem.evaluate(every)
    best = int(np.argmax(fitness))
    return KnownOptimum(problem, frozenset(int(i) for i in every[best]), float(fitness[best]))


@pytest.fixture(scope="session")
def medium_problem() -> PortfolioProblem:
    """60 strategies, k = 6: too big for short runs to agree, small enough to be fast."""
    return PortfolioProblem(structured_pnl(7, 60), 6)
