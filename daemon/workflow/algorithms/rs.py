"""Random search: uniform random k-subsets, the baseline every other search must beat."""

from __future__ import annotations

from typing import Any

from .base import FloatArray, IntArray, SearchAlgorithm
from .operators import sample_subsets
from .params import RSParams


class RandomSearch(SearchAlgorithm):
    """Score batches of uniformly random portfolios; keeps no state beyond the base's."""

    name = "RS"
    params_type = RSParams

    def _initialize(self) -> None:
        self._step()

    def _ask(self) -> IntArray:
        batch = min(self.params.batch_size, self.evaluations_left)
        return sample_subsets(self.rng, self.problem.n_strategies, self.problem.k, batch)

    def _tell(self, X: IntArray, F: FloatArray) -> None:
        """Nothing to learn: the base already keeps the best."""

    def _get_state(self) -> dict[str, Any]:
        return {}

    def _set_state(self, state: dict[str, Any]) -> None:
        """Stateless."""
