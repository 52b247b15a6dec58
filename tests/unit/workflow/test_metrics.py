"""Metrics: every function against a plain per-series Python loop, plus the edge cases."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from daemon.workflow import metrics

pytestmark = pytest.mark.timeout(30)

PPY = 52.0


def reference_metrics(series: list[float], ppy: float) -> dict[str, float]:
    """The definitions in the docstrings, written as a loop over one series."""
    n = len(series)
    cum = peak = worst = 0.0
    for x in series:
        cum += x
        peak = max(peak, cum)
        worst = max(worst, peak - cum)
    roi = sum(series)
    gross_profit = sum(x for x in series if x > 0)
    gross_loss = -sum(x for x in series if x < 0)
    mean = roi / n
    std = statistics.stdev(series) if n >= 2 else 0.0
    downside = math.sqrt(sum(min(x, 0.0) ** 2 for x in series) / n)
    fallback = roi * 100 if roi > 0 else roi * 10
    ratio = roi / worst if worst > 0 else fallback
    return {
        "total_roi": roi,
        "max_drawdown": worst,
        "ratio": ratio,
        "win_percentage": 100.0 * sum(1 for x in series if x > 0) / n,
        "profit_factor": gross_profit / gross_loss if gross_loss > 0 else gross_profit,
        "expectancy": mean,
        "sharpe": mean / std * math.sqrt(ppy) if std > 0 else 0.0,
        "sortino": mean / downside * math.sqrt(ppy) if downside > 0 else 0.0,
        "annualized_return": mean * ppy,
    }


def assert_close(actual: float, expected: float) -> None:
    assert actual == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_every_metric_matches_the_loop_on_random_series() -> None:
    # Given random P&L with wins, losses and exact zeros
    rng = np.random.default_rng(7)
    pnl = rng.normal(0.2, 3.0, size=(40, 30))
    pnl[rng.random(pnl.shape) < 0.2] = 0.0
    # When every metric is computed for all columns at once
    got = metrics.per_strategy_metrics(pnl, PPY)
    # Then each column equals the per-series loop
    assert list(got) == list(metrics.METRIC_FUNCTIONS)
    for j in range(pnl.shape[1]):
        expected = reference_metrics(pnl[:, j].tolist(), PPY)
        for name, value in expected.items():
            assert_close(float(got[name][j]), value)


def test_portfolio_metrics_returns_plain_floats() -> None:
    series = [3.0, -1.0, 2.0, -4.0, 5.0]
    got = metrics.portfolio_metrics(series, 252.0)
    assert all(type(v) is float for v in got.values())
    for name, value in reference_metrics(series, 252.0).items():
        assert_close(got[name], value)


def test_first_day_loss_is_a_drawdown() -> None:
    # The peak starts at 0 before day 1 (older tools started it at day 1 and reported 2 here).
    assert float(metrics.max_drawdown([-5.0, 2.0, 1.0])) == 5.0


def test_no_drawdown_uses_the_documented_ratio_fallback() -> None:
    gains = np.array([1.0, 0.0, 2.0, 3.0])
    assert float(metrics.max_drawdown(gains)) == 0.0
    assert float(metrics.roi_drawdown_ratio(gains)) == 600.0  # ROI 6 x 100
    assert float(metrics.profit_factor(gains)) == 6.0  # capped at gross profit
    assert float(metrics.sortino(gains, PPY)) == 0.0  # no downside deviation


def test_all_losses() -> None:
    losses = np.array([-1.0, -2.0, -3.0])
    assert float(metrics.max_drawdown(losses)) == 6.0
    assert float(metrics.roi_drawdown_ratio(losses)) == -1.0
    assert float(metrics.win_percentage(losses)) == 0.0
    assert float(metrics.profit_factor(losses)) == 0.0
    assert float(metrics.sortino(losses, PPY)) < 0.0


def test_all_zero_series_is_all_zeros_and_finite() -> None:
    got = metrics.portfolio_metrics(np.zeros(10), PPY)
    assert got == dict.fromkeys(metrics.METRIC_FUNCTIONS, 0.0)


def test_one_day_series() -> None:
    got = metrics.portfolio_metrics([4.0], PPY)
    assert got["total_roi"] == 4.0
    assert got["max_drawdown"] == 0.0
    assert got["sharpe"] == 0.0  # std(ddof=1) of one value is undefined -> 0
    assert got["ratio"] == 400.0
    assert got["annualized_return"] == 4.0 * PPY


def test_constant_nonzero_series_has_zero_sharpe_not_rounding_noise() -> None:
    # std of 82 copies of 0.1 is ~1e-17 in floating point; Sharpe must still be 0.
    assert float(metrics.sharpe(np.full(82, 0.1), PPY)) == 0.0


def test_rounding_dip_is_not_a_drawdown() -> None:
    # 0.1 + 0.2 - 0.3 is 5.6e-17, not 0; either sign of that residue is rounding, not risk.
    for first_day in (0.1 + 0.2 - 0.3, 0.3 - 0.2 - 0.1):
        series = np.array([first_day, 0.0, 1.0])
        assert float(metrics.max_drawdown(series)) == 0.0


def test_zero_strategy_columns_give_empty_arrays() -> None:
    got = metrics.per_strategy_metrics(np.zeros((5, 0)), PPY)
    assert all(v.shape == (0,) for v in got.values())


def test_empty_series_and_wrong_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one period"):
        metrics.total_roi([])
    with pytest.raises(ValueError, match="one P&L series"):
        metrics.portfolio_metrics(np.zeros((2, 2)), PPY)
    with pytest.raises(ValueError, match="matrix"):
        metrics.per_strategy_metrics(np.zeros(3), PPY)
