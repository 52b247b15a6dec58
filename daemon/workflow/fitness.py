"""The portfolio-selection problem: choose k distinct strategy columns maximising a fitness.

A portfolio's fitness is a function of one "aggregate" row: the sum of its chosen rows of a
precomputed ``(n_strategies, 2*days + 1)`` matrix holding, per strategy, its P&L series, its
standardised series ``z = (x - mean) / ||x - mean||`` and ``|z|^2`` (1, or 0 for a flat column).
For a portfolio with standardised sum ``s`` and ``m`` non-flat members::

    |s|^2 = m + 2 * sum_{i<j} r_ij   =>   mean r = (|s|^2 - m) / (k (k - 1))

so the mean pairwise Pearson correlation costs one gather-and-sum, like the P&L itself, and no
k x k matrix. A zero-variance (flat) column has ``z = 0``: its correlation with anything is
defined as 0, which is what the formula gives because it contributes neither to ``|s|^2`` nor
to ``m``. Swapping one member changes the aggregate by one row difference, so local search
scores a neighbour in O(days) (``swap_aggregates``).

Storage is strategy-major, so gathering a portfolio reads whole contiguous rows, and batches are
evaluated in chunks so the temporaries stay in cache. At k = 35 on the 82 x 25,544 production
file one core scores ~120-145k portfolios/s in batches of 64+ and ~800k swap neighbours/s
(benchmarks/bench_data_fitness.py); the gather of 35 rows x 165 doubles is most of the cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from daemon.workflow import metrics

FloatArray = NDArray[np.float64]

#: Selectable fitness metrics; every one is "higher is better".
FITNESS_METRICS = (
    "ratio",
    "roi",
    "less_max_dd",
    "win_percentage",
    "profit_factor",
    "expectancy",
    "sharpe",
    "sortino",
)

_METRIC_FUNCTIONS: dict[str, Callable[[FloatArray, float], FloatArray]] = {
    "ratio": lambda p, _ppy: metrics.roi_drawdown_ratio(p),
    "roi": lambda p, _ppy: metrics.total_roi(p),
    "less_max_dd": lambda p, _ppy: -metrics.max_drawdown(p),
    "win_percentage": lambda p, _ppy: metrics.win_percentage(p),
    "profit_factor": lambda p, _ppy: metrics.profit_factor(p),
    "expectancy": lambda p, _ppy: metrics.expectancy(p),
    "sharpe": metrics.sharpe,
    "sortino": metrics.sortino,
}

#: Portfolios gathered per step; 8-16 measured fastest at k=35 on 82 days (buffer ~400 kB).
_GATHER_ROWS = 16
#: Aggregate bytes scored per metric call; large enough to amortise numpy call overhead,
#: small enough to stay in L2.
_BLOCK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class FitnessBreakdown:
    """Per-portfolio parts of the fitness: ``fitness = raw_metric - weight * mean_correlation``."""

    fitness: FloatArray
    raw_metric: FloatArray
    mean_correlation: FloatArray


def standardize_columns(pnl: ArrayLike) -> FloatArray:
    """Return ``(x - mean) / ||x - mean||`` per column of a ``(days, n)`` matrix; flat columns -> 0.

    The dot product of two standardised columns is their Pearson correlation.
    """
    matrix = np.asarray(pnl, dtype=np.float64)
    centred = matrix - matrix.mean(axis=0)
    norms = np.sqrt(np.einsum("ij,ij->j", centred, centred))
    # Columns whose spread is rounding noise relative to their scale count as flat.
    scale = np.abs(matrix).max(axis=0, initial=0.0) * np.sqrt(matrix.shape[0])
    flat = norms <= scale * metrics.FLAT_RELATIVE_TOLERANCE
    return np.asarray(np.where(flat, 0.0, centred / np.where(flat, 1.0, norms)))


class PortfolioProblem:
    """Choose k distinct strategy columns maximising fitness; higher is always better.

    Args:
        pnl: ``(days, n_strategies)`` P&L matrix (``StrategyData.pnl``).
        k: Portfolio size, ``1 <= k <= n_strategies``.
        metric: One of ``FITNESS_METRICS``.
        correlation_penalty_weight: Subtracted per unit of mean pairwise correlation (>= 0).
        periods_per_year: Used by Sharpe and Sortino (``infer_periods_per_year``).
        names: Strategy names, for reports; defaults to ``"S0", "S1", ...``.
    """

    def __init__(
        self,
        pnl: np.ndarray,
        k: int,
        *,
        metric: str = "ratio",
        correlation_penalty_weight: float = 10.0,
        periods_per_year: float = 52.0,
        names: Sequence[str] | None = None,
    ) -> None:
        matrix = np.asarray(pnl, dtype=np.float64)
        if matrix.ndim != 2 or matrix.shape[0] < 1:
            raise ValueError(
                f"pnl must be a non-empty (days, strategies) matrix, got {matrix.shape}"
            )
        if not np.isfinite(matrix).all():
            raise ValueError("pnl contains NaN or infinite values")
        days, n_strategies = matrix.shape
        if not 1 <= k <= n_strategies:
            raise ValueError(f"portfolio size k={k} must be in 1..{n_strategies}")
        if metric not in _METRIC_FUNCTIONS:
            raise ValueError(f"unknown fitness metric {metric!r}; choose one of {FITNESS_METRICS}")
        if not correlation_penalty_weight >= 0.0:
            raise ValueError("correlation_penalty_weight must be >= 0")
        if not periods_per_year > 0.0:
            raise ValueError("periods_per_year must be > 0")
        if names is not None and len(names) != n_strategies:
            raise ValueError(f"{len(names)} names for {n_strategies} strategy columns")

        self.n_strategies = n_strategies
        self.k = int(k)
        self.days = days
        self.metric = metric
        self.correlation_penalty_weight = float(correlation_penalty_weight)
        self.periods_per_year = float(periods_per_year)
        self.names: tuple[str, ...] = (
            tuple(names) if names is not None else tuple(f"S{i}" for i in range(n_strategies))
        )
        self._metric_fn = _METRIC_FUNCTIONS[metric]
        z = standardize_columns(matrix)
        self._rows = np.empty((n_strategies, 2 * days + 1))
        self._rows[:, :days] = matrix.T
        self._rows[:, days : 2 * days] = z.T
        self._rows[:, 2 * days] = np.einsum("ij,ij->j", z, z).round()
        self._block_rows = max(_GATHER_ROWS, _BLOCK_BYTES // (self._rows.shape[1] * 8))
        self._ones_k = np.ones(self.k)

    @property
    def aggregate_width(self) -> int:
        """Columns of an aggregate row: P&L (days), standardised sum (days), non-flat count."""
        return int(self._rows.shape[1])

    def _check(self, X: ArrayLike) -> NDArray[np.intp]:
        idx = np.asarray(X)
        if idx.ndim != 2 or idx.shape[1] != self.k:
            raise ValueError(f"X must have shape (n, {self.k}), got {idx.shape}")
        if idx.dtype.kind not in "iu":
            raise ValueError(f"X must hold integer column indices, got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_strategies):
            raise ValueError(f"X holds column indices outside 0..{self.n_strategies - 1}")
        if self.k > 1 and idx.shape[0]:
            ordered = np.sort(idx, axis=1)
            if (ordered[:, 1:] == ordered[:, :-1]).any():
                raise ValueError("X has a row with a repeated column index")
        return idx.astype(np.intp, copy=False)

    def aggregate(self, X: ArrayLike) -> FloatArray:
        """Return the ``(n, aggregate_width)`` aggregate rows of the portfolios in ``X (n, k)``."""
        return self._aggregate(self._check(X))

    def _aggregate(self, idx: NDArray[np.intp]) -> FloatArray:
        # Gather GATHER_ROWS portfolios' rows at a time into one small buffer and sum each
        # portfolio's k rows with a (k,) @ (c, k, A) matmul: measured ~1.5x faster than
        # add.reduce over axis 1 or k in-place adds. mode="clip" skips numpy's slow buffered
        # bounds check with out=; _check has already validated every index. The buffer is
        # per call so that concurrent evaluations never share scratch memory.
        n, width = idx.shape[0], self._rows.shape[1]
        out = np.empty((n, width))
        gather_buf = np.empty((min(n, _GATHER_ROWS) * self.k, width))
        for start in range(0, n, _GATHER_ROWS):
            stop = min(n, start + _GATHER_ROWS)
            buf = gather_buf[: (stop - start) * self.k]
            np.take(self._rows, idx[start:stop].ravel(), axis=0, out=buf, mode="clip")
            np.matmul(self._ones_k, buf.reshape(stop - start, self.k, width), out=out[start:stop])
        return out

    def _breakdown(self, agg: FloatArray) -> FitnessBreakdown:
        days = self.days
        raw = np.asarray(self._metric_fn(agg[:, :days], self.periods_per_year), dtype=np.float64)
        if self.k > 1:
            z_sum = agg[:, days : 2 * days]
            norm2 = np.einsum("ij,ij->i", z_sum, z_sum)
            corr = (norm2 - agg[:, 2 * days]) / (self.k * (self.k - 1))
        else:
            corr = np.zeros(agg.shape[0])
        fitness = raw - self.correlation_penalty_weight * corr
        return FitnessBreakdown(fitness=fitness, raw_metric=raw, mean_correlation=corr)

    def _blocks(self, n: int) -> range:
        return range(0, n, self._block_rows)

    def evaluate(self, X: ArrayLike) -> FloatArray:
        """Return the penalised fitness ``(n,)`` of the portfolios in ``X (n, k)``.

        Raises:
            ValueError: ``X`` has the wrong shape or dtype, an out-of-range or repeated index.
        """
        return self.evaluate_detailed(X).fitness

    def evaluate_detailed(self, X: ArrayLike) -> FitnessBreakdown:
        """Return fitness, raw metric and mean pairwise correlation of each portfolio.

        Raises:
            ValueError: As ``evaluate``.
        """
        idx = self._check(X)
        blocks = self._blocks(idx.shape[0])
        return _concat(
            [self._breakdown(self._aggregate(idx[s : s + self._block_rows])) for s in blocks]
        )

    def fitness_from_aggregate(self, agg: ArrayLike) -> FloatArray:
        """Return the penalised fitness ``(n,)`` of aggregate rows ``(n, aggregate_width)``.

        A single ``(aggregate_width,)`` row is accepted and scored as ``(1,)``.
        """
        rows = np.asarray(agg, dtype=np.float64)
        if rows.ndim == 1:
            rows = rows[np.newaxis, :]
        if rows.ndim != 2 or rows.shape[1] != self._rows.shape[1]:
            raise ValueError(
                f"aggregates must have shape (n, {self._rows.shape[1]}), got {rows.shape}"
            )
        blocks = self._blocks(rows.shape[0])
        return _concat([self._breakdown(rows[s : s + self._block_rows]) for s in blocks]).fitness

    def swap_aggregates(self, agg_row: ArrayLike, out_idx: int, in_idx: ArrayLike) -> FloatArray:
        """Return aggregates of the portfolio with column ``out_idx`` replaced by each ``in_idx``.

        Args:
            agg_row: The current portfolio's aggregate, ``(aggregate_width,)``.
            out_idx: Strategy index (not position) leaving the portfolio.
            in_idx: ``(m,)`` strategy indices entering; callers keep them outside the portfolio.

        Returns:
            ``(m, aggregate_width)`` aggregates, one per candidate, in O(m * days).
        """
        incoming = np.asarray(in_idx).reshape(-1)
        if incoming.dtype.kind not in "iu":
            raise ValueError(f"in_idx must hold integer column indices, got {incoming.dtype}")
        if not 0 <= out_idx < self.n_strategies or (
            incoming.size and (incoming.min() < 0 or incoming.max() >= self.n_strategies)
        ):
            raise ValueError(f"swap indices must be in 0..{self.n_strategies - 1}")
        base = np.asarray(agg_row, dtype=np.float64)
        if base.shape != (self._rows.shape[1],):
            raise ValueError(f"agg_row must have shape ({self._rows.shape[1]},), got {base.shape}")
        base = base - self._rows[int(out_idx)]
        out = np.take(self._rows, incoming, axis=0)
        out += base
        return out

    def strategy_scores(self) -> FloatArray:
        """Return the raw metric of each single column ``(n_strategies,)``, finite.

        Used as the ACO heuristic and for greedy seeding; no correlation term (one column).
        """
        scores = self._metric_fn(self._rows[:, : self.days], self.periods_per_year)
        return np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)


def _concat(parts: list[FitnessBreakdown]) -> FitnessBreakdown:
    if len(parts) == 1:
        return parts[0]
    if not parts:
        empty = np.zeros(0)
        return FitnessBreakdown(fitness=empty, raw_metric=empty, mean_correlation=empty)
    return FitnessBreakdown(
        fitness=np.concatenate([p.fitness for p in parts]),
        raw_metric=np.concatenate([p.raw_metric for p in parts]),
        mean_correlation=np.concatenate([p.mean_correlation for p in parts]),
    )
