"""Simulated annealing over single swaps, cooling geometrically across the whole budget.

The schedule is set in acceptance terms (Kirkpatrick; Johnson et al. 1989): the probability of
accepting an average worsening move falls geometrically from ``initial_acceptance`` to
``final_acceptance`` as the termination's progress goes from 0 to 1, so the cooling spans the
budget whichever limit (evaluations or seconds) binds. The temperature is that probability
turned into fitness units, ``T = d / ln(1 / p)``, with ``d`` the mean worsening of the moves
tried: first from ``calibration_moves`` random swaps around the starting portfolio, then a
running mean. Fitness scales change by two orders of magnitude between a random portfolio and a
good one (ROI / drawdown), so a temperature fixed from the start would freeze the search within
its first percent; the running scale keeps the schedule meaningful all the way.

Moves (a random member out, a random outside strategy in) are drawn in batches against the
current portfolio and scored at once, O(days) each; the Metropolis test then runs over them in
order and the first accepted move is taken. That is exactly what one-move-at-a-time annealing
does, since every move before the first acceptance was judged against the same portfolio; the
moves after it are discarded (and still counted). The batch size tracks ``1 / acceptance
rate``, so little work is discarded while hot and numpy calls stay large while cold.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .local_search import Incumbent, LocalSearch
from .operators import sample_outside
from .params import SAParams

#: Decay of the running acceptance counts per step (a memory of roughly 20 steps).
_RATE_DECAY = 0.95
#: Weight of each step's mean worsening in the running scale of worsening moves.
_SCALE_RATE = 0.05
#: Mean worsening assumed while no move tried has made things worse.
_MIN_DELTA = 1e-9


class SimulatedAnnealing(LocalSearch):
    """Metropolis acceptance of swap moves under a geometric acceptance schedule."""

    name = "SA"
    params_type = SAParams

    def _initialize(self) -> None:
        self._current = self.random_incumbent()
        _, F = self._try_moves(self.params.calibration_moves)
        worse = self._current.fitness - F[self._current.fitness > F]
        self._mean_worse = float(worse.mean()) if worse.size else _MIN_DELTA
        self._accepted = self.params.initial_acceptance
        self._tried = 1.0

    def _try_moves(
        self, count: int
    ) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
        current = self._current
        candidates = sample_outside(self.rng, current.inside, count)
        positions = self.rng.integers(0, self.problem.k, candidates.size)
        aggs, F = self.evaluate_swaps(current.x, current.agg, positions, candidates)
        return (positions, candidates, aggs), F

    @property
    def temperature(self) -> float:
        """The current temperature, from the budget's progress."""
        p0, p1 = self.params.initial_acceptance, self.params.final_acceptance
        acceptance = p0 * (p1 / p0) ** self.search_progress
        return self._mean_worse / math.log(1.0 / acceptance)

    def _step(self) -> None:
        rate = self._accepted / self._tried
        largest = self.params.max_batch_size
        smallest = min(self.params.min_batch_size, largest)
        size = int(min(largest, max(smallest, round(1.0 / max(rate, 1e-12)))))
        temperature = self.temperature
        (positions, candidates, aggs), F = self._try_moves(size)
        delta = F - self._current.fitness
        worse = delta[delta < 0]
        if worse.size:
            self._mean_worse += _SCALE_RATE * (float(-worse.mean()) - self._mean_worse)
        with np.errstate(over="ignore"):
            accept = (delta >= 0) | (self.rng.random(F.size) < np.exp(delta / temperature))
        self._accepted *= _RATE_DECAY
        self._tried *= _RATE_DECAY
        if accept.any():
            j = int(np.argmax(accept))
            self._current.swap(int(positions[j]), int(candidates[j]), aggs[j], float(F[j]))
            self._accepted += 1.0
            self._tried += j + 1
        else:
            self._tried += F.size

    def _get_state(self) -> dict[str, Any]:
        return {
            "current": self._current.to_state(),
            "mean_worse": self._mean_worse,
            "accepted": self._accepted,
            "tried": self._tried,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self._current = Incumbent.from_state(state["current"], self.problem.n_strategies)
        self._mean_worse = float(state["mean_worse"])
        self._accepted = float(state["accepted"])
        self._tried = float(state["tried"])
