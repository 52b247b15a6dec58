"""Hill climbing: best-improvement swaps with random restarts.

A neighbour replaces one member by one outside strategy. Each step scores a sample of the
neighbourhood and moves to the best neighbour of the sample if it improves (steepest ascent on
the sample). The sample size adapts, as in adaptive-step random search: it halves after an
improving step (improvements are common; spend little per move) and doubles after a failed one
(improvements are rare; look wider), between ``min_neighbours_per_step`` and
``max_neighbours_per_step``. When the whole neighbourhood (``k * (n - k)`` swaps) fits in a
step it is enumerated, and one failure proves a local optimum. A climb restarts from a uniformly
random portfolio after ``max_failed_steps`` failures in a row at the largest sample size.
Neighbours cost O(days) each through ``evaluate_swaps``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .local_search import Incumbent, LocalSearch
from .operators import sample_outside
from .params import HCParams


class HillClimbing(LocalSearch):
    """Steepest-ascent swap search on adaptive neighbourhood samples, with random restarts."""

    name = "HC"
    params_type = HCParams

    def _prepare(self) -> None:
        k, n = self.problem.k, self.problem.n_strategies
        self._neighbourhood = k * (n - k)
        self._max_sample = min(self.params.max_neighbours_per_step, self._neighbourhood)
        self._min_sample = min(self.params.min_neighbours_per_step, self._max_sample)

    def _initialize(self) -> None:
        self._restarts = -1  # the first climb is not a restart
        self._restart()

    def _restart(self) -> None:
        self._current = self.random_incumbent()
        self._sample = self._min_sample
        self._failed_steps = 0
        self._restarts += 1

    def _neighbours(self) -> tuple[np.ndarray, np.ndarray]:
        current, k = self._current, self.problem.k
        if self._sample >= self._neighbourhood:  # enumerate every swap
            outside = np.flatnonzero(~current.inside)
            return np.repeat(np.arange(k), outside.size), np.tile(outside, k)
        positions = self.rng.integers(0, k, self._sample)
        return positions, sample_outside(self.rng, current.inside, self._sample)

    def _step(self) -> None:
        current = self._current
        positions, candidates = self._neighbours()
        aggs, F = self.evaluate_swaps(current.x, current.agg, positions, candidates)
        j = int(np.argmax(F)) if F.size else -1
        if j >= 0 and F[j] > current.fitness:
            current.swap(int(positions[j]), int(candidates[j]), aggs[j], float(F[j]))
            self._sample = max(self._min_sample, self._sample // 2)
            self._failed_steps = 0
            return
        if self._sample < self._max_sample:
            self._sample = min(self._max_sample, 2 * self._sample)
            return
        self._failed_steps += 1
        exhausted = self._sample >= self._neighbourhood  # a proven local optimum
        if (exhausted or self._failed_steps >= self.params.max_failed_steps) and (
            self.evaluations_left > 0
        ):
            self._restart()

    def _get_state(self) -> dict[str, Any]:
        return {
            "current": self._current.to_state(),
            "sample": self._sample,
            "failed_steps": self._failed_steps,
            "restarts": self._restarts,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self._current = Incumbent.from_state(state["current"], self.problem.n_strategies)
        self._sample = int(state["sample"])
        self._failed_steps = int(state["failed_steps"])
        self._restarts = int(state["restarts"])
