"""Hill climbing: best-improvement swaps with random restarts.

A neighbour replaces one member by one outside strategy. Each step scores the whole
neighbourhood (``k * (n - k)`` swaps) when it fits in ``neighbourhood_size``, and otherwise a
stratified sample of it (the same number of random candidates for every member), then moves to
the best neighbour if it improves. A step that finds nothing better counts as a failure; after
``max_failed_steps`` in a row (one, when the neighbourhood was complete: a proven local
optimum) the climb restarts from a uniformly random portfolio. Neighbours cost O(days) each
through ``evaluate_swaps``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .base import Incumbent, SearchAlgorithm
from .operators import sample_outside
from .params import HCParams


class HillClimbing(SearchAlgorithm):
    """Steepest-ascent swap search with random restarts."""

    name = "HC"
    params_type = HCParams

    def _prepare(self) -> None:
        k, n = self.problem.k, self.problem.n_strategies
        self._full = k * (n - k) <= self.params.neighbourhood_size
        self._per_member = n - k if self._full else math.ceil(self.params.neighbourhood_size / k)

    def _initialize(self) -> None:
        self._failed_steps = 0
        self._current = self.random_incumbent()

    def _step(self) -> None:
        current = self._current
        k = self.problem.k
        positions = np.repeat(np.arange(k), self._per_member)
        candidates = np.concatenate(
            [sample_outside(self.rng, current.inside, self._per_member) for _ in range(k)]
        )
        aggs, F = self.evaluate_swaps(current.x, current.agg, positions, candidates)
        j = int(np.argmax(F)) if F.size else -1
        if j >= 0 and F[j] > current.fitness:
            current.swap(int(positions[j]), int(candidates[j]), aggs[j], float(F[j]))
            self._failed_steps = 0
            return
        self._failed_steps += 1
        restart = self._full or self._failed_steps >= self.params.max_failed_steps
        if restart and self.evaluations_left > 0:
            self._failed_steps = 0
            self._current = self.random_incumbent()

    def _get_state(self) -> dict[str, Any]:
        return {"current": self._current.to_state(), "failed_steps": self._failed_steps}

    def _set_state(self, state: dict[str, Any]) -> None:
        self._current = Incumbent.from_state(state["current"], self.problem.n_strategies)
        self._failed_steps = int(state["failed_steps"])
