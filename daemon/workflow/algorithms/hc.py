"""Hill climbing: best-improvement swaps with random restarts.

A neighbour replaces one member by one outside strategy. Each step scores the whole
neighbourhood (``k * (n - k)`` swaps) when it fits in ``neighbourhood_size``, and otherwise a
stratified sample of it (the same number of candidates for every member), then moves to the
best neighbour if it improves. A step that finds nothing better counts as a failure; after
``max_failed_steps`` in a row (one, when the neighbourhood was complete: a proven local
optimum) the climb restarts from a uniformly random portfolio. Neighbours cost O(days) each
through ``evaluate_swaps``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import IntArray, SearchAlgorithm
from .operators import sample_subsets
from .params import HCParams


def outside_candidates(
    rng: np.random.Generator, x: IntArray, n_strategies: int, count: int
) -> IntArray:
    """Return ``count`` random strategies outside ``x`` (repeats possible), or all of them in
    random order when ``count`` covers the complement."""
    if count >= n_strategies - x.size:
        return rng.permutation(np.setdiff1d(np.arange(n_strategies), x))
    draws = rng.integers(0, n_strategies, count)
    clash = np.isin(draws, x)
    while clash.any():
        draws[clash] = rng.integers(0, n_strategies, int(clash.sum()))
        clash = np.isin(draws, x)
    return draws


class HillClimbing(SearchAlgorithm):
    """Steepest-ascent swap search with random restarts."""

    name = "HC"
    params_type = HCParams

    def _prepare(self) -> None:
        k, n = self.problem.k, self.problem.n_strategies
        self._full = k * (n - k) <= self.params.neighbourhood_size
        self._per_member = math.ceil(self.params.neighbourhood_size / k)

    def _initialize(self) -> None:
        self._failed_steps = 0
        self._restart()

    def _restart(self) -> None:
        self._x = sample_subsets(self.rng, self.problem.n_strategies, self.problem.k, 1)[0]
        self._f = float(self.evaluate(self._x[np.newaxis, :])[0])
        self._agg = self.problem.aggregate(self._x[np.newaxis, :])[0]

    def _step(self) -> None:
        n = self.problem.n_strategies
        best = (self._f, -1, -1)
        best_agg = self._agg
        for position in range(self.problem.k):
            candidates = (
                outside_candidates(self.rng, self._x, n, n)
                if self._full
                else outside_candidates(self.rng, self._x, n, self._per_member)
            )
            aggs, F = self.evaluate_swaps(self._x, self._agg, position, candidates)
            if F.size == 0:
                break
            j = int(np.argmax(F))
            if F[j] > best[0]:
                best = (float(F[j]), position, int(candidates[j]))
                best_agg = aggs[j]
        if best[1] >= 0:
            self._f, self._agg = best[0], best_agg.copy()
            self._x[best[1]] = best[2]
            self._failed_steps = 0
            return
        self._failed_steps += 1
        if (self._full or self._failed_steps >= self.params.max_failed_steps) and (
            self.evaluations_left > 0
        ):
            self._failed_steps = 0
            self._restart()

    def _get_state(self) -> dict[str, Any]:
        return {"x": self._x, "f": self._f, "agg": self._agg, "failed_steps": self._failed_steps}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._x = np.asarray(state["x"], dtype=np.intp)
        self._f = float(state["f"])
        self._agg = np.asarray(state["agg"], dtype=np.float64)
        self._failed_steps = int(state["failed_steps"])
