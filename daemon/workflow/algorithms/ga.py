"""Genetic algorithm over k-subsets: tournament selection, set crossover, swap mutation, elitism.

Each generation breeds ``population_size - n_elite`` children: two parents by tournament,
crossover with probability ``crossover_probability`` (the child keeps what both parents share
and fills up from the rest of their union, so it is distinct without repair), then each member
swaps for an outside strategy with probability ``mutation_swaps_mean / k``. The next
generation is the ``n_elite`` best of the current one plus the children (generational
replacement with elitism).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import FloatArray, IntArray, SearchAlgorithm
from .operators import sample_subsets, set_crossover, swap_mutate
from .params import GAParams


def tournament(rng: np.random.Generator, fitness: FloatArray, size: int, count: int) -> IntArray:
    """Return ``count`` winners' indices of tournaments among ``size`` random individuals."""
    entrants = rng.integers(0, fitness.size, (count, min(size, fitness.size)))
    winners = np.argmax(fitness[entrants], axis=1)
    return np.asarray(entrants[np.arange(count), winners], dtype=np.intp)


class GeneticAlgorithm(SearchAlgorithm):
    """Generational GA with elitism on fixed-size index sets."""

    name = "GA"
    params_type = GAParams

    def _initialize(self) -> None:
        X = sample_subsets(
            self.rng, self.problem.n_strategies, self.problem.k, self.params.population_size
        )
        F = self.evaluate(X)
        self._pop, self._fit = X[: F.size], F

    def _n_elite(self) -> int:
        return min(self.params.n_elite, self._fit.size - 1)

    def _ask(self) -> IntArray:
        p, k, n_strategies = self.params, self.problem.k, self.problem.n_strategies
        count = p.population_size - self._n_elite()
        first = self._pop[tournament(self.rng, self._fit, p.tournament_size, count)]
        second = self._pop[tournament(self.rng, self._fit, p.tournament_size, count)]
        crossed = self.rng.random(count) < p.crossover_probability
        children = np.where(crossed[:, np.newaxis], set_crossover(self.rng, first, second), first)
        swaps = self.rng.binomial(k, min(1.0, p.mutation_swaps_mean / k), count)
        return swap_mutate(self.rng, children, n_strategies, swaps)

    def _tell(self, X: IntArray, F: FloatArray) -> None:
        elite = np.argsort(-self._fit, kind="stable")[: self._n_elite()]
        self._pop = np.concatenate([self._pop[elite], X])
        self._fit = np.concatenate([self._fit[elite], F])

    def _get_state(self) -> dict[str, Any]:
        return {"population": self._pop, "fitness": self._fit}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._pop = np.asarray(state["population"], dtype=np.intp)
        self._fit = np.asarray(state["fitness"], dtype=np.float64)
