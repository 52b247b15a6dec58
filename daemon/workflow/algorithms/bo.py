"""Bayesian optimisation of k-subsets, after BOCS (Baptista & Poloczek 2018).

Surrogate: Bayesian linear regression of the fitness on strategy-inclusion features, with
second-order (pairwise) terms as in BOCS: ``f(z) = w0 + sum_i w_i z_i + sum_{i<j} W_ij z_i z_j``
with ``z`` the 0/1 inclusion vector. The prior is conjugate normal-inverse-gamma
(``w | s2 ~ N(0, s2 * prior_variance * I)``, a flat intercept, ``s2`` inverse-gamma), so the
posterior follows exactly from running sufficient statistics (``Phi'Phi``, ``Phi'y``, ``y'y``)
and each batch of new observations is a rank update, not a refit on the whole history.

Acquisition: Thompson sampling. Each new portfolio maximises one posterior draw of the
surrogate: start from the top-k of the draw's first-order weights, then best-improvement swaps
on the drawn surrogate (BOCS uses simulated annealing on it), so a batch of draws gives a
batch of diverse proposals. A swap pass costs O(pool + k * block) per draw, since outside the
pairwise block the best entrant is the same whichever member leaves. Each iteration costs one
Cholesky factorisation and one solve of the ``D x D`` posterior precision, ``D = 1 + pool +
block (block - 1) / 2`` (633 at the defaults), for the whole batch of draws.

The objective is deterministic, so scoring a portfolio twice teaches the model nothing and only
makes the posterior overconfident: a proposal already scored (or repeated within its batch)
takes random swaps inside the pool until it is new, or is replaced by a random new portfolio.

Scale (documented restriction): with 25,544 strategies a full quadratic model has 3e8
coefficients. The surrogate therefore covers a candidate pool, the ``pool_size`` best strategies
by single-strategy quality (``problem.strategy_scores``, at least ``2k``), with pairwise terms
among the ``pairwise_pool_size`` best of them; BO proposes portfolios inside the pool only. On
problems no larger than the pool (the small test instances) the model covers every strategy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import FloatArray, IntArray, SearchAlgorithm
from .operators import sample_subsets
from .params import BOParams

#: Random swaps tried to turn an already-scored proposal into a new one, then random draws.
_NOVELTY_TRIES = 8
#: Prior precision of the intercept (nearly flat) and inverse-gamma prior of the noise.
_INTERCEPT_PRECISION = 1e-6
_NOISE_PRIOR_SHAPE = 1e-3
_NOISE_PRIOR_SCALE = 1e-3


class BayesianOptimization(SearchAlgorithm):
    """BOCS-style Bayesian optimisation with Thompson sampling over a candidate pool."""

    name = "BO"
    params_type = BOParams

    def _prepare(self) -> None:
        p, k, n = self.params, self.problem.k, self.problem.n_strategies
        size = min(n, max(p.pool_size, 2 * k))
        scores = np.asarray(self.problem.strategy_scores(), dtype=np.float64)
        self._pool = np.argsort(-scores, kind="stable")[:size]
        self._pool_position = np.full(n, -1, dtype=np.intp)
        self._pool_position[self._pool] = np.arange(size)
        self._pairwise = min(p.pairwise_pool_size, size)
        self._pair_i, self._pair_j = np.triu_indices(self._pairwise, 1)
        self._n_features = 1 + size + self._pair_i.size
        self._prior_precision = np.full(self._n_features, 1.0 / p.prior_variance)
        self._prior_precision[0] = _INTERCEPT_PRECISION

    # -- model -------------------------------------------------------------------------

    def _features(self, Z: FloatArray) -> FloatArray:
        """Return ``(n, n_features)`` = [1, z, z_i z_j (pairwise block)] for inclusions ``Z``."""
        block = Z[:, : self._pairwise]
        return np.concatenate(
            [np.ones((Z.shape[0], 1)), Z, block[:, self._pair_i] * block[:, self._pair_j]], axis=1
        )

    def _inclusion(self, X: IntArray) -> FloatArray:
        Z = np.zeros((X.shape[0], self._pool.size))
        np.put_along_axis(Z, self._pool_position[X], 1.0, axis=1)
        return Z

    def _observe(self, X: IntArray, F: FloatArray) -> None:
        phi = self._features(self._inclusion(X))
        self._gram += phi.T @ phi
        self._moment += phi.T @ F
        self._sum_squares += float(F @ F)
        self._count += F.size

    def _posterior_draws(self, count: int) -> FloatArray:
        """Return ``(count, n_features)`` coefficient vectors drawn from the posterior.

        With precision ``P = L L'`` and ``e ~ N(0, I)``, ``P^-1 (Phi'y + s L e)`` is a draw
        from ``N(P^-1 Phi'y, s^2 P^-1)``: one Cholesky and one solve for the whole batch.
        """
        precision = self._gram + np.diag(self._prior_precision)
        chol = np.linalg.cholesky(precision)
        shape = _NOISE_PRIOR_SHAPE + 0.5 * self._count
        eps = self.rng.standard_normal((self._n_features, count))
        gammas = self.rng.gamma(shape, 1.0, count)
        solved = np.linalg.solve(precision, np.column_stack([self._moment, chol @ eps]))
        mean, spread = solved[:, 0], solved[:, 1:]
        scale = _NOISE_PRIOR_SCALE + 0.5 * max(0.0, self._sum_squares - float(mean @ self._moment))
        noise_sd = np.sqrt(scale / gammas)
        return np.asarray(mean[np.newaxis, :] + noise_sd[:, np.newaxis] * spread.T)

    def predict_mean(self, X: IntArray) -> FloatArray:
        """Return the posterior mean of the surrogate for pool portfolios ``X (n, k)``.

        For diagnostics and tests: how well the model has learnt the fitness.

        Raises:
            ValueError: A portfolio holds a strategy outside the pool.
        """
        if (self._pool_position[np.asarray(X)] < 0).any():
            raise ValueError("predict_mean needs portfolios of pool strategies")
        precision = self._gram + np.diag(self._prior_precision)
        mean = np.linalg.solve(precision, self._moment)
        return np.asarray(self._features(self._inclusion(np.asarray(X))) @ mean)

    # -- acquisition -----------------------------------------------------------------------

    def _maximise_draws(self, draws: FloatArray) -> IntArray:
        """Return ``(count, k)`` pool positions maximising each drawn surrogate."""
        count, size, m, k = draws.shape[0], self._pool.size, self._pairwise, self.problem.k
        linear = draws[:, 1 : 1 + size]
        pair = np.zeros((count, m, m))
        pair[:, self._pair_i, self._pair_j] = draws[:, 1 + size :]
        pair += pair.transpose(0, 2, 1)
        chosen = np.argsort(-linear, axis=1, kind="stable")[:, :k]
        if m < 2:  # a first-order surrogate: its top-k is the exact maximiser
            return np.asarray(chosen, dtype=np.intp)
        rows = np.arange(count)
        for _ in range(self.params.surrogate_search_steps):
            gain, out_at, enter = best_surrogate_swaps(linear, pair, chosen)
            improving = gain > 1e-12
            if not improving.any():
                break
            chosen[rows[improving], out_at[improving]] = enter[improving]
        return np.asarray(chosen, dtype=np.intp)

    # -- search hooks ----------------------------------------------------------------------

    def _initialize(self) -> None:
        self._gram = np.zeros((self._n_features, self._n_features))
        self._moment = np.zeros(self._n_features)
        self._sum_squares = 0.0
        self._count = 0
        self._scored: set[bytes] = set()
        self._scored_rows: list[IntArray] = []
        positions = sample_subsets(self.rng, self._pool.size, self.problem.k, self.params.n_initial)
        X = self._novel(positions)
        self._tell(X, self.evaluate(X))

    def _ask(self) -> IntArray:
        count = min(self.params.batch_size, self.evaluations_left)
        positions = self._maximise_draws(self._posterior_draws(count))
        return self._novel(positions)

    def _novel(self, positions: IntArray) -> IntArray:
        """Return the proposals (as strategies) made new: see the module docstring."""
        size, k = self._pool.size, self.problem.k
        batch: list[IntArray] = []
        seen = set(self._scored)
        for row in positions:
            candidate = row.copy()
            for attempt in range(2 * _NOVELTY_TRIES):
                key = _key(self._pool[candidate])
                if key not in seen:
                    seen.add(key)
                    batch.append(self._pool[candidate])
                    break
                if attempt < _NOVELTY_TRIES and size > k:  # a random swap inside the pool
                    outside = np.setdiff1d(np.arange(size), candidate)
                    candidate[self.rng.integers(k)] = outside[self.rng.integers(outside.size)]
                else:
                    candidate = sample_subsets(self.rng, size, k, 1)[0]
        if not batch:
            return np.empty((0, k), dtype=np.intp)
        return np.asarray(np.stack(batch), dtype=np.intp)

    def _tell(self, X: IntArray, F: FloatArray) -> None:
        rows = X[: F.size]
        self._observe(rows, F)
        self._scored.update(_key(row) for row in rows)
        self._scored_rows.append(np.sort(rows, axis=1))

    def _get_state(self) -> dict[str, Any]:
        return {
            "gram": self._gram,
            "moment": self._moment,
            "sum_squares": self._sum_squares,
            "count": self._count,
            "scored": np.concatenate(self._scored_rows),
        }

    def _set_state(self, state: dict[str, Any]) -> None:
        self._gram = np.asarray(state["gram"], dtype=np.float64)
        self._moment = np.asarray(state["moment"], dtype=np.float64)
        self._sum_squares = float(state["sum_squares"])
        self._count = int(state["count"])
        scored = np.asarray(state["scored"], dtype=np.intp)
        self._scored_rows = [scored]
        self._scored = {_key(row) for row in scored}


def _key(row: IntArray) -> bytes:
    """Return a hashable identity of a portfolio (its sorted members)."""
    return np.sort(row).astype(np.int64).tobytes()


def best_surrogate_swaps(
    linear: FloatArray, pair: FloatArray, chosen: IntArray
) -> tuple[FloatArray, IntArray, IntArray]:
    """Return, per drawn surrogate, the best single swap: ``(gain, member index, pool entry)``.

    With ``g_j = w_j + sum_l W_jl z_l`` the marginal value of pool entry ``j`` given the
    current members, swapping member ``a`` for ``j`` changes the surrogate by
    ``g_j - g_a - W_aj``. Outside the pairwise block ``W_aj = 0``, so there the best entrant is
    the same for every leaving member: O(pool + k * block) per surrogate, not O(k * pool).
    """
    count, size = linear.shape
    m = pair.shape[1]
    rows = np.arange(count)
    Z = np.zeros((count, size))
    np.put_along_axis(Z, chosen, 1.0, axis=1)
    gain = linear.copy()
    gain[:, :m] += np.einsum("cij,cj->ci", pair, Z[:, :m])
    leave = np.take_along_axis(gain, chosen, axis=1)  # (count, k)
    enter = np.where(Z > 0, -np.inf, gain)
    # Entrants outside the block: one best per surrogate.
    if m < size:
        far = m + np.argmax(enter[:, m:], axis=1)
        far_gain = enter[rows, far]
    else:
        far, far_gain = np.zeros(count, dtype=np.intp), np.full(count, -np.inf)
    far_delta = far_gain[:, np.newaxis] - leave  # (count, k)
    # Entrants inside the block: subtract the pair term with the leaving member.
    near = enter[:, np.newaxis, :m] - leave[:, :, np.newaxis]  # (count, k, m)
    with_leaving = np.take_along_axis(pair, np.minimum(chosen, m - 1)[:, :, np.newaxis], axis=1)
    near -= np.where((chosen < m)[:, :, np.newaxis], with_leaving, 0.0)
    near_flat = near.reshape(count, -1).argmax(axis=1)
    near_out, near_in = np.divmod(near_flat, m)
    near_gain = near[rows, near_out, near_in]
    far_out = np.argmax(far_delta, axis=1)
    use_far = far_delta[rows, far_out] > near_gain
    return (
        np.where(use_far, far_delta[rows, far_out], near_gain),
        np.where(use_far, far_out, near_out),
        np.where(use_far, far, near_in),
    )
