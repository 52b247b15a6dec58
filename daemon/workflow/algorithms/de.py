"""Differential evolution (DE/rand/1/bin) on k-subsets.

Vector arithmetic becomes set arithmetic, as in set-based DE variants:

* difference ``x_r2 - x_r3``: the members ``x_r2`` has and ``x_r3`` lacks (to add) and those
  ``x_r3`` has and ``x_r2`` lacks (to remove);
* scaling by ``F``: each member of the difference is applied with probability ``F``;
* mutant ``x_r1 + F (x_r2 - x_r3)``: the kept additions enter ``x_r1``, displacing its members
  that ``x_r3`` has and ``x_r2`` lacks first, then random ones, so the size stays ``k``;
* binomial crossover: each mutant member the target lacks enters the trial with probability
  ``CR`` (at least one does), displacing target members the mutant lacks;
* one-to-one selection: a trial replaces its target when it is at least as fit.

Once every member is the same portfolio, every difference is empty and DE cannot move again
(its usual stagnation). The next generation then restarts: the best member stays and the
others are replaced by uniformly random portfolios.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import FloatArray, IntArray, SearchAlgorithm
from .operators import insert_members, sample_subsets, shared_members
from .params import DEParams


def donor_indices(rng: np.random.Generator, n: int) -> IntArray:
    """Return ``(n, 3)``: for each target ``i``, three distinct donors other than ``i``."""
    keys = rng.random((n, n))
    np.fill_diagonal(keys, np.inf)
    return np.asarray(np.argsort(keys, axis=1)[:, :3], dtype=np.intp)


def set_difference_mutation(
    rng: np.random.Generator, base: IntArray, plus: IntArray, minus: IntArray, weight: float
) -> IntArray:
    """Return ``base + weight * (plus - minus)`` for k-subsets (rows)."""
    plus_in_minus, _ = shared_members(plus, minus)
    additions = ~plus_in_minus & (rng.random(plus.shape) < weight)
    removable = shared_members(base, minus)[0] & ~shared_members(base, plus)[0]
    keep_priority = rng.random(base.shape) - removable  # removable members leave first
    return insert_members(base, plus, additions, keep_priority)


def binomial_set_crossover(
    rng: np.random.Generator, target: IntArray, mutant: IntArray, rate: float
) -> IntArray:
    """Return trials: mutant members missing from the target enter with probability ``rate``;
    one of them always does (DE's ``j_rand``)."""
    n = target.shape[0]
    target_in_mutant, mutant_in_target = shared_members(target, mutant)
    novel = ~mutant_in_target
    enter = novel & (rng.random(mutant.shape) < rate)
    forced = np.argmax(np.where(novel, rng.random(mutant.shape), -1.0), axis=1)
    enter[np.arange(n), forced] |= novel[np.arange(n), forced]
    keep_priority = rng.random(target.shape) + 2.0 * target_in_mutant
    return insert_members(target, mutant, enter, keep_priority)


class DifferentialEvolution(SearchAlgorithm):
    """DE/rand/1/bin with set-based difference, scaling and crossover."""

    name = "DE"
    params_type = DEParams

    def _initialize(self) -> None:
        X = sample_subsets(
            self.rng, self.problem.n_strategies, self.problem.k, self.params.population_size
        )
        F = self.evaluate(X)
        self._pop, self._fit = X[: F.size], F
        self._restarting = False

    def _collapsed(self) -> bool:
        ordered = np.sort(self._pop, axis=1)
        return bool((ordered == ordered[0]).all())

    def _ask(self) -> IntArray:
        pop = self._pop
        self._restarting = self._collapsed()
        if self._restarting:
            n, k = pop.shape
            return sample_subsets(self.rng, self.problem.n_strategies, k, n - 1)
        donors = donor_indices(self.rng, pop.shape[0])
        mutant = set_difference_mutation(
            self.rng,
            pop[donors[:, 0]],
            pop[donors[:, 1]],
            pop[donors[:, 2]],
            self.params.differential_weight,
        )
        return binomial_set_crossover(self.rng, pop, mutant, self.params.crossover_rate)

    def _tell(self, X: IntArray, F: FloatArray) -> None:
        if self._restarting:
            best = int(np.argmax(self._fit))
            self._pop = np.concatenate([self._pop[best : best + 1], X])
            self._fit = np.concatenate([self._fit[best : best + 1], F])
            return
        n = F.size
        better = self._fit[:n] <= F
        self._pop[:n][better] = X[better]
        self._fit[:n][better] = F[better]

    def _get_state(self) -> dict[str, Any]:
        return {"population": self._pop, "fitness": self._fit}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._pop = np.asarray(state["population"], dtype=np.intp)
        self._fit = np.asarray(state["fitness"], dtype=np.float64)
        self._restarting = False
