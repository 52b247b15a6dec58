"""Particle swarm optimisation on k-subsets, after set-based PSO (S-PSO, Chen et al. 2010).

A particle's position is a portfolio; its velocity is a set of strategies with possibilities in
[0, 1] (how strongly the particle is pulled to add each one). The velocity update is the usual
``v <- w v + c1 r1 (pbest - x) + c2 r2 (gbest - x)`` in set form: ``pbest - x`` is the set of
personal-best members the particle lacks, a coefficient times a set scales possibilities
(capped at 1), and ``+`` keeps the larger possibility per strategy. ``r1``, ``r2`` are uniform
per element and the inertia ``w`` falls linearly over the budget. As in the original PSO's
"craziness" (Kennedy & Eberhart 1995), each velocity also gains a few random strategies with
random possibilities; without it a swarm only ever recombines the strategies its first
positions held, a vanishing share of 25,544.

The position update takes the velocity's cut at a random level ``alpha``: strategies with
possibility at least ``alpha`` enter, strongest first (at most ``k``), displacing members that
are in neither the personal nor the global best first. A velocity keeps at most ``2k`` entries
(the strongest), which bounds memory at O(swarm * k) regardless of the number of strategies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import FloatArray, IntArray, SearchAlgorithm
from .operators import insert_members, sample_subsets, shared_members
from .params import PSOParams

#: Velocity capacity per particle, in multiples of k.
_VELOCITY_CAPACITY = 2


def merge_possibilities(
    idx: IntArray, possibility: FloatArray, capacity: int
) -> tuple[IntArray, FloatArray]:
    """Return per-row ``(strategies, possibilities)``: one entry per strategy with its largest
    possibility, the ``capacity`` strongest, strongest first; unused entries have possibility 0."""
    # One float sort groups equal strategies with the strongest first (possibility in [0, 1]).
    order = np.argsort(idx + 0.5 * (1.0 - possibility), axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    possibility = np.take_along_axis(possibility, order, axis=1)
    possibility[:, 1:][idx[:, 1:] == idx[:, :-1]] = 0.0  # a weaker repeat of a strategy
    strongest = np.argsort(-possibility, axis=1, kind="stable")[:, :capacity]
    return (
        np.take_along_axis(idx, strongest, axis=1),
        np.take_along_axis(possibility, strongest, axis=1),
    )


class ParticleSwarm(SearchAlgorithm):
    """Set-based PSO with linearly decreasing inertia."""

    name = "PSO"
    params_type = PSOParams

    def _initialize(self) -> None:
        n, k = self.params.swarm_size, self.problem.k
        X = sample_subsets(self.rng, self.problem.n_strategies, k, n)
        F = self.evaluate(X)
        X = X[: F.size]
        self._x = X.copy()
        self._pbest, self._pbest_f = X.copy(), F.copy()
        self._vel_idx = np.zeros((F.size, _VELOCITY_CAPACITY * k), dtype=np.intp)
        self._vel_p = np.zeros((F.size, _VELOCITY_CAPACITY * k))

    def _ask(self) -> IntArray:
        p, x = self.params, self._x
        n, k = x.shape
        gbest = np.broadcast_to(self._pbest[int(np.argmax(self._pbest_f))], (n, k))
        inertia = p.inertia_start + (p.inertia_end - p.inertia_start) * self.search_progress
        pbest_in_x, x_in_pbest = shared_members(self._pbest, x)
        gbest_in_x, x_in_gbest = shared_members(gbest, x)
        pull_own = np.where(pbest_in_x, 0.0, p.cognitive_weight * self.rng.random((n, k)))
        pull_swarm = np.where(gbest_in_x, 0.0, p.social_weight * self.rng.random((n, k)))
        crazy = self.rng.random((n, k)) < p.craziness / k
        random_idx = self.rng.integers(0, self.problem.n_strategies, (n, k))
        random_pull = np.where(crazy, self.rng.random((n, k)), 0.0)
        idx, possibility = merge_possibilities(
            np.concatenate([self._vel_idx, self._pbest, gbest, random_idx], axis=1),
            np.minimum(
                1.0,
                np.concatenate([inertia * self._vel_p, pull_own, pull_swarm, random_pull], axis=1),
            ),
            self._vel_idx.shape[1],
        )
        self._vel_idx, self._vel_p = idx, possibility
        cut = self.rng.random((n, 1))
        enter = (possibility > 0.0) & (possibility >= cut)
        keep_priority = self.rng.random((n, k)) + x_in_gbest + x_in_pbest
        self._x = insert_members(x, idx, enter, keep_priority)
        return self._x

    def _tell(self, X: IntArray, F: FloatArray) -> None:
        n = F.size
        better = self._pbest_f[:n] < F
        self._pbest[:n][better] = X[better]
        self._pbest_f[:n][better] = F[better]

    def _get_state(self) -> dict[str, Any]:
        return {
            "x": self._x,
            "pbest": self._pbest,
            "pbest_fitness": self._pbest_f,
            "velocity_strategies": self._vel_idx,
            "velocity_possibilities": self._vel_p,
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self._x = np.asarray(state["x"], dtype=np.intp)
        self._pbest = np.asarray(state["pbest"], dtype=np.intp)
        self._pbest_f = np.asarray(state["pbest_fitness"], dtype=np.float64)
        self._vel_idx = np.asarray(state["velocity_strategies"], dtype=np.intp)
        self._vel_p = np.asarray(state["velocity_possibilities"], dtype=np.float64)
