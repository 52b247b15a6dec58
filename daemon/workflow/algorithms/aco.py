"""Ant colony optimisation: a max-min ant system in the hypercube framework (Blum & Dorigo).

Each ant builds a portfolio by adding strategies one at a time, choosing strategy ``j`` with
probability proportional to ``tau_j ** alpha * eta_j ** beta`` among those not yet chosen. The
heuristic ``eta`` comes from each strategy's own quality (``problem.strategy_scores``) as a
rank in ``(0, 1]`` — ranks, because single-strategy ratios have outliers (a near-zero drawdown)
that would otherwise swamp every other term; ``beta`` sets how strongly ants follow it.

After each iteration the pheromone evaporates and is reinforced on the iteration-best and the
best-so-far portfolios: ``tau <- (1 - rho) tau + rho d`` with ``d`` the (weighted) membership of
those portfolios, which keeps ``tau`` in [0, 1]; the max-min floor (``pheromone_min_share``)
keeps every strategy reachable.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import FloatArray, IntArray, SearchAlgorithm
from .operators import sample_weighted_subsets
from .params import ACOParams


def rank_heuristic(scores: FloatArray) -> FloatArray:
    """Return ``(rank + 1) / n`` of each score (ties by index): 1 for the best, 1/n the worst."""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(scores.size)
    ranks[order] = np.arange(1, scores.size + 1)
    return np.asarray(ranks / scores.size)


class AntColony(SearchAlgorithm):
    """MMAS-style ant colony for k-subsets."""

    name = "ACO"
    params_type = ACOParams

    def _prepare(self) -> None:
        heuristic = rank_heuristic(np.asarray(self.problem.strategy_scores(), dtype=np.float64))
        self._heuristic_weight = heuristic**self.params.beta
        k, n, share = self.problem.k, self.problem.n_strategies, self.params.pheromone_min_share
        self._pheromone_min = min(1.0, share * k / ((1.0 - share) * max(1, n - k)))

    def _initialize(self) -> None:
        self._pheromone = np.ones(self.problem.n_strategies)
        self._step()

    def _ask(self) -> IntArray:
        weights = self._pheromone**self.params.alpha * self._heuristic_weight
        return sample_weighted_subsets(self.rng, weights, self.problem.k, self.params.n_ants)

    def _tell(self, X: IntArray, F: FloatArray) -> None:
        p = self.params
        best_so_far = self.best_x
        deposit = np.zeros(self.problem.n_strategies)
        deposit[X[int(np.argmax(F))]] += 1.0 - p.best_so_far_weight
        deposit[best_so_far] += p.best_so_far_weight
        self._pheromone *= 1.0 - p.evaporation_rate
        self._pheromone += p.evaporation_rate * deposit
        np.clip(self._pheromone, self._pheromone_min, 1.0, out=self._pheromone)

    def _get_state(self) -> dict[str, Any]:
        return {"pheromone": self._pheromone}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._pheromone = np.asarray(state["pheromone"], dtype=np.float64)
