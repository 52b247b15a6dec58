"""Performance metrics of P&L series, vectorised over many series at once.

Every function takes ``pnl`` of shape ``(..., days)`` — one P&L series per leading index, in
currency per period (not returns) — and reduces over the last axis, so the same code scores one
portfolio, a population of portfolios or every strategy column. Undefined cases (no losses, zero
variance) get documented finite values rather than ``inf``/``nan``, because the search
algorithms compare, sort and checkpoint these numbers.

Max drawdown starts the running peak at 0 *before* the first period, so a loss on the first day
is already a drawdown. Older tools started the peak at the first day's cumulative P&L, which
reports a smaller drawdown for series that open with a loss.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray

FloatArray = NDArray[np.float64]

#: Multiplier for ROI when the drawdown is 0 and ROI is positive (a portfolio that never fell).
RATIO_NO_DRAWDOWN_GAIN_FACTOR = 100.0
#: Multiplier for ROI when the drawdown is 0 and ROI is not positive (flat portfolio: ROI = 0).
RATIO_NO_DRAWDOWN_LOSS_FACTOR = 10.0
#: A spread below this fraction of the series' largest magnitude is rounding noise: the series
#: is flat (e.g. the std of 82 copies of 0.1 is ~1e-17, not 0, and would give Sharpe ~1e16).
FLAT_RELATIVE_TOLERANCE = 1e-12
#: A drawdown below this fraction of the largest |cumulative P&L| is summation rounding (0.1 +
#: 0.2 - 0.3 != 0) and counts as none; otherwise ROI / MaxDD would explode to ~1e17.
DRAWDOWN_RELATIVE_TOLERANCE = 1e-9


def _as_float(pnl: ArrayLike) -> FloatArray:
    arr = np.asarray(pnl, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] == 0:
        raise ValueError("a P&L series needs at least one period")
    return arr


def total_roi(pnl: ArrayLike) -> FloatArray:
    """Return the total P&L (the sum over periods), called ROI in the reports."""
    return np.asarray(_as_float(pnl).sum(axis=-1))


def _roi_and_drawdown(arr: FloatArray) -> tuple[FloatArray, FloatArray]:
    cum = np.cumsum(arr, axis=-1)
    peak = np.maximum.accumulate(cum, axis=-1)
    np.maximum(peak, 0.0, out=peak)
    # peak[..., -1] = max(0, max C) so this is max |C| without another pass over abs(C).
    noise = np.maximum(peak[..., -1], -cum.min(axis=-1)) * DRAWDOWN_RELATIVE_TOLERANCE
    peak -= cum
    drawdown = peak.max(axis=-1)
    return cum[..., -1], np.asarray(np.where(drawdown > noise, drawdown, 0.0))


def max_drawdown(pnl: ArrayLike) -> FloatArray:
    """Return the largest fall of cumulative P&L below its running peak (>= 0).

    The peak starts at 0 before the first period: ``max_t(max(0, max_{s<=t} C_s) - C_t)`` with
    ``C`` the cumulative P&L, so a first-day loss of 5 is a drawdown of 5. Drawdowns below
    ``DRAWDOWN_RELATIVE_TOLERANCE`` x max |C| are rounding noise and returned as 0.
    """
    return _roi_and_drawdown(_as_float(pnl))[1]


def ratio_from_roi_and_drawdown(roi: ArrayLike, drawdown: ArrayLike) -> FloatArray:
    """Return ROI / MaxDD, or ROI x 100 (ROI > 0) / ROI x 10 (ROI <= 0) where MaxDD is 0.

    The fallback keeps a portfolio that never fell ahead of every portfolio that did (for
    realistic scales) while staying finite.
    """
    roi = np.asarray(roi, dtype=np.float64)
    drawdown = np.asarray(drawdown, dtype=np.float64)
    no_dd = drawdown <= 0.0
    fallback = np.where(
        roi > 0.0, roi * RATIO_NO_DRAWDOWN_GAIN_FACTOR, roi * RATIO_NO_DRAWDOWN_LOSS_FACTOR
    )
    return np.asarray(np.where(no_dd, fallback, roi / np.where(no_dd, 1.0, drawdown)))


def roi_drawdown_ratio(pnl: ArrayLike) -> FloatArray:
    """Return the default fitness metric ROI / MaxDD (see ``ratio_from_roi_and_drawdown``).

    ROI here is the last cumulative P&L, equal to ``total_roi`` up to summation order.
    """
    return ratio_from_roi_and_drawdown(*_roi_and_drawdown(_as_float(pnl)))


def win_percentage(pnl: ArrayLike) -> FloatArray:
    """Return 100 x (periods with P&L > 0) / (all periods); flat periods count as not won."""
    arr = _as_float(pnl)
    return np.asarray(np.count_nonzero(arr > 0.0, axis=-1) * (100.0 / arr.shape[-1]))


def profit_factor(pnl: ArrayLike) -> FloatArray:
    """Return gross profit / gross loss, capped at gross profit when there is no loss.

    Gross profit is the sum of positive periods, gross loss the absolute sum of negative ones.
    With no losing period the ratio is infinite; we return the gross profit instead (0 for an
    all-flat series), which is finite and still grows with the profit.
    """
    arr = _as_float(pnl)
    gross_profit = np.where(arr > 0.0, arr, 0.0).sum(axis=-1)
    gross_loss = -np.where(arr < 0.0, arr, 0.0).sum(axis=-1)
    no_loss = gross_loss <= 0.0
    return np.asarray(
        np.where(no_loss, gross_profit, gross_profit / np.where(no_loss, 1.0, gross_loss))
    )


def expectancy(pnl: ArrayLike) -> FloatArray:
    """Return the mean P&L per period (= win rate x average win - loss rate x average loss)."""
    return np.asarray(_as_float(pnl).mean(axis=-1))


def sharpe(pnl: ArrayLike, periods_per_year: float) -> FloatArray:
    """Return mean / std(ddof=1) x sqrt(periods_per_year), and 0 where std is 0 or days < 2.

    "std is 0" means below ``FLAT_RELATIVE_TOLERANCE`` x the largest |P&L| of the series.

    No risk-free rate is subtracted: the series is P&L in currency, not returns.
    """
    arr = _as_float(pnl)
    days = arr.shape[-1]
    if days < 2:
        return np.zeros(arr.shape[:-1])
    mean = arr.mean(axis=-1)
    std = arr.std(axis=-1, ddof=1)
    ok = std > np.abs(arr).max(axis=-1) * FLAT_RELATIVE_TOLERANCE
    return np.asarray(np.where(ok, mean / np.where(ok, std, 1.0), 0.0) * np.sqrt(periods_per_year))


def sortino(pnl: ArrayLike, periods_per_year: float) -> FloatArray:
    """Return mean / downside deviation x sqrt(periods_per_year), and 0 where that is 0.

    Downside deviation is ``sqrt(mean(min(pnl, 0)^2))`` over *all* periods (target 0), the
    usual definition; a series without a losing period gets 0, as Sharpe does for zero variance.
    """
    arr = _as_float(pnl)
    mean = arr.mean(axis=-1)
    downside = np.minimum(arr, 0.0)
    dd = np.sqrt(np.mean(downside * downside, axis=-1))
    ok = dd > 0.0
    return np.asarray(np.where(ok, mean / np.where(ok, dd, 1.0), 0.0) * np.sqrt(periods_per_year))


def annualized_return(pnl: ArrayLike, periods_per_year: float) -> FloatArray:
    """Return the mean P&L per period x periods_per_year (currency per year, not compounded)."""
    return np.asarray(_as_float(pnl).mean(axis=-1) * periods_per_year)


MetricFunction = Callable[[FloatArray, float], FloatArray]

#: Every reported metric, in report column order, as ``fn(pnl, periods_per_year)``.
METRIC_FUNCTIONS: dict[str, MetricFunction] = {
    "total_roi": lambda p, _ppy: total_roi(p),
    "max_drawdown": lambda p, _ppy: max_drawdown(p),
    "ratio": lambda p, _ppy: roi_drawdown_ratio(p),
    "win_percentage": lambda p, _ppy: win_percentage(p),
    "profit_factor": lambda p, _ppy: profit_factor(p),
    "expectancy": lambda p, _ppy: expectancy(p),
    "sharpe": sharpe,
    "sortino": sortino,
    "annualized_return": annualized_return,
}


def per_strategy_metrics(pnl: ArrayLike, periods_per_year: float) -> dict[str, FloatArray]:
    """Return every metric for every strategy column at once.

    Args:
        pnl: ``(days, n_strategies)`` matrix, as in ``StrategyData.pnl``.
        periods_per_year: From ``infer_periods_per_year`` on the dates.

    Returns:
        Metric name -> ``(n_strategies,)`` array, in ``METRIC_FUNCTIONS`` order.
    """
    matrix = np.asarray(pnl, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"expected a (days, strategies) matrix, got shape {matrix.shape}")
    series = np.ascontiguousarray(matrix.T)
    return {name: fn(series, periods_per_year) for name, fn in METRIC_FUNCTIONS.items()}


def portfolio_metrics(pnl_series: ArrayLike, periods_per_year: float) -> dict[str, float]:
    """Return every metric of one P&L series as plain floats (for summary.json)."""
    series = np.asarray(pnl_series, dtype=np.float64)
    if series.ndim != 1:
        raise ValueError(f"expected one P&L series, got shape {series.shape}")
    return {name: float(fn(series, periods_per_year)) for name, fn in METRIC_FUNCTIONS.items()}
