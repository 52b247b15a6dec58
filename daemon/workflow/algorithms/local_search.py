"""Support for local searches (HC, SA): the current portfolio kept with its aggregate, and
scoring of swap neighbours in O(days) each instead of O(k * days), counted by the base."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .base import SearchAlgorithm
from .contract import FloatArray, IntArray
from .operators import sample_subsets


@dataclass
class Incumbent:
    """The current portfolio of a local search, with what makes a swap cost O(days)."""

    x: IntArray
    #: ``(n_strategies,)`` membership mask of ``x``, for drawing outside candidates.
    inside: NDArray[np.bool_]
    #: ``problem.aggregate`` of ``x``, updated incrementally by :meth:`swap`.
    agg: FloatArray
    fitness: float

    def swap(self, position: int, strategy: int, agg: FloatArray, fitness: float) -> None:
        """Move to the neighbour with ``strategy`` at ``position`` (aggregate and fitness known)."""
        self.inside[self.x[position]] = False
        self.inside[strategy] = True
        self.x[position] = strategy
        self.agg = agg.copy()
        self.fitness = float(fitness)

    def to_state(self) -> dict[str, Any]:
        """Return the JSON/numpy form; the aggregate is kept, not recomputed, so a resumed
        search continues bit for bit."""
        return {"x": self.x.copy(), "agg": self.agg.copy(), "fitness": self.fitness}

    @classmethod
    def from_state(cls, state: dict[str, Any], n_strategies: int) -> Incumbent:
        """Rebuild from :meth:`to_state`."""
        x = np.array(state["x"], dtype=np.intp)
        inside = np.zeros(n_strategies, dtype=bool)
        inside[x] = True
        agg = np.array(state["agg"], dtype=np.float64)
        return cls(x=x, inside=inside, agg=agg, fitness=float(state["fitness"]))


class LocalSearch(SearchAlgorithm):
    """A search that moves one swap at a time; subclasses override ``_step``."""

    def evaluate_swaps(
        self, x: IntArray, agg_row: FloatArray, positions: IntArray, candidates: IntArray
    ) -> tuple[FloatArray, FloatArray]:
        """Score the neighbours of ``x`` that put ``candidates[i]`` in place of ``x[positions[i]]``.

        Costs O(days) per neighbour; each neighbour counts as one evaluation, and the pairs are
        trimmed to the budget left.

        Args:
            x: The current portfolio ``(k,)``.
            agg_row: Its aggregate (``problem.aggregate``).
            positions: ``(m,)`` indices into ``x`` of the members leaving.
            candidates: ``(m,)`` strategies outside ``x`` entering.

        Returns:
            ``(aggregates (m', A), fitness (m',))`` in the order given, ``m' <= m``.
        """
        if len(positions) != len(candidates):
            raise ValueError(f"{len(positions)} positions for {len(candidates)} candidates")
        left = self.evaluations_left
        where = np.asarray(positions, dtype=np.intp)[:left]
        incoming = np.asarray(candidates, dtype=np.intp)[:left]
        if incoming.size == 0:
            return np.empty((0, agg_row.shape[0])), np.empty(0)
        # Aggregates are sums of per-strategy rows, so swap_aggregates is affine: swapping
        # against one reference member r and then exchanging r's row for the real leaving
        # member's row handles any mix of leaving members in two vectorised calls.
        ref = int(x[0])
        aggs = self.problem.swap_aggregates(agg_row, ref, incoming)
        members = self.problem.swap_aggregates(np.zeros_like(agg_row), ref, x)  # row(x_p) - row(r)
        aggs -= members[where]
        F = np.asarray(self.problem.fitness_from_aggregate(aggs), dtype=np.float64)

        def neighbour(i: int) -> IntArray:
            out = x.copy()
            out[where[i]] = incoming[i]
            return out

        self._record(F, neighbour)
        return aggs, F

    def random_incumbent(self) -> Incumbent:
        """Return a scored, uniformly random portfolio to start a local search from."""
        x = sample_subsets(self.rng, self.problem.n_strategies, self.problem.k, 1)
        fitness = float(self.evaluate(x)[0])
        inside = np.zeros(self.problem.n_strategies, dtype=bool)
        inside[x[0]] = True
        return Incumbent(x=x[0], inside=inside, agg=self.problem.aggregate(x)[0], fitness=fitness)
