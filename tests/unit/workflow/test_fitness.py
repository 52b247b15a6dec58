"""PortfolioProblem: batch fitness against a per-portfolio loop, the correlation shortcut
against numpy.corrcoef, incremental swaps, and the contract's input checks."""

from __future__ import annotations

import numpy as np
import pytest

from daemon.workflow.data import infer_periods_per_year, load_strategy_csv
from daemon.workflow.fitness import FITNESS_METRICS, PortfolioProblem, standardize_columns
from tests.unit.workflow.test_data import fixture_csv
from tests.unit.workflow.test_metrics import reference_metrics

pytestmark = pytest.mark.timeout(60)

PPY = 52.0

_REFERENCE_NAME = {
    "ratio": "ratio",
    "roi": "total_roi",
    "win_percentage": "win_percentage",
    "profit_factor": "profit_factor",
    "expectancy": "expectancy",
    "sharpe": "sharpe",
    "sortino": "sortino",
}


def reference_raw_metric(series: np.ndarray, metric: str) -> float:
    """The fitness metric of one series, from the plain loop in test_metrics."""
    values = reference_metrics(series.tolist(), PPY)
    if metric == "less_max_dd":
        return -values["max_drawdown"]
    return values[_REFERENCE_NAME[metric]]


def corrcoef_mean(columns: np.ndarray) -> float:
    """Mean off-diagonal of numpy.corrcoef, with zero-variance pairs defined as 0."""
    k = columns.shape[1]
    if k < 2:
        return 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.corrcoef(columns, rowvar=False)
    r = np.nan_to_num(r, nan=0.0)
    return float((r.sum() - np.trace(r)) / (k * (k - 1)))


def reference_fitness(pnl: np.ndarray, row: np.ndarray, metric: str, weight: float) -> float:
    """One portfolio at a time: pandas-free loop over the chosen columns."""
    series = pnl[:, row].sum(axis=1)
    return reference_raw_metric(series, metric) - weight * corrcoef_mean(pnl[:, row])


def random_portfolios(rng: np.random.Generator, n: int, n_strategies: int, k: int) -> np.ndarray:
    return np.argsort(rng.random((n, n_strategies)), axis=1)[:, :k]


@pytest.fixture
def pnl() -> np.ndarray:
    rng = np.random.default_rng(11)
    matrix = rng.normal(0.1, 2.0, size=(50, 40))
    matrix[rng.random(matrix.shape) < 0.1] = 0.0
    matrix[:, 5] = 0.0  # all-zero strategy
    matrix[:, 6] = 0.1  # constant strategy: zero variance (up to rounding), nonzero P&L
    return matrix


@pytest.mark.parametrize("metric", FITNESS_METRICS)
def test_evaluate_matches_the_per_portfolio_loop(pnl: np.ndarray, metric: str) -> None:
    # Given random portfolios, some holding the zero-variance columns
    rng = np.random.default_rng(3)
    X = random_portfolios(rng, 60, pnl.shape[1], 6)
    X[0, :2] = [5, 6] if not np.isin([5, 6], X[0, 2:]).any() else X[0, :2]
    problem = PortfolioProblem(pnl, 6, metric=metric, periods_per_year=PPY)
    # When the batch is evaluated
    got = problem.evaluate(X)
    # Then each fitness equals the loop's
    expected = [reference_fitness(pnl, row, metric, 10.0) for row in X]
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_evaluate_detailed_parts_add_up(pnl: np.ndarray) -> None:
    problem = PortfolioProblem(pnl, 4, correlation_penalty_weight=2.5)
    X = random_portfolios(np.random.default_rng(4), 30, pnl.shape[1], 4)
    detail = problem.evaluate_detailed(X)
    np.testing.assert_allclose(detail.fitness, detail.raw_metric - 2.5 * detail.mean_correlation)
    np.testing.assert_allclose(detail.fitness, problem.evaluate(X))
    for row, raw in zip(X, detail.raw_metric, strict=True):
        expected = reference_raw_metric(pnl[:, row].sum(axis=1), "ratio")
        assert raw == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("k", [2, 3, 10])
def test_correlation_shortcut_equals_corrcoef(pnl: np.ndarray, k: int) -> None:
    # Given portfolios that include the all-zero and the constant column
    rng = np.random.default_rng(k)
    X = random_portfolios(rng, 50, pnl.shape[1], k)
    X[:10, 0] = 5
    X[10:20, 0] = 6
    X = np.array([row if len(set(row)) == k else X[-1] for row in X])
    problem = PortfolioProblem(pnl, k)
    # When the mean pairwise correlation comes from the norm of the standardised sum
    got = problem.evaluate_detailed(X).mean_correlation
    # Then it equals the mean off-diagonal of the full correlation matrix
    np.testing.assert_allclose(got, [corrcoef_mean(pnl[:, row]) for row in X], atol=1e-12)


def test_identical_columns_have_correlation_one() -> None:
    base = np.random.default_rng(0).normal(size=(20, 1))
    pnl = np.hstack([base, base * 3.0, base + 1.0])
    problem = PortfolioProblem(pnl, 3, correlation_penalty_weight=1.0)
    detail = problem.evaluate_detailed(np.array([[0, 1, 2]]))
    assert detail.mean_correlation[0] == pytest.approx(1.0, abs=1e-12)


def test_standardized_columns_have_unit_norm_or_zero(pnl: np.ndarray) -> None:
    z = standardize_columns(pnl)
    norms = np.linalg.norm(z, axis=0)
    assert norms[5] == 0.0 and norms[6] == 0.0
    np.testing.assert_allclose(np.delete(norms, [5, 6]), 1.0, rtol=1e-12)


@pytest.mark.parametrize("metric", ["ratio", "sharpe", "profit_factor"])
def test_swap_aggregates_equal_evaluating_the_swapped_portfolio(
    pnl: np.ndarray, metric: str
) -> None:
    # Given a portfolio and every strategy outside it
    problem = PortfolioProblem(pnl, 5, metric=metric)
    current = np.array([0, 7, 12, 20, 33])
    outside = np.setdiff1d(np.arange(pnl.shape[1]), current)
    agg = problem.aggregate(current[np.newaxis, :])[0]
    # When position 2 (strategy 12) is swapped for each candidate incrementally
    neighbours = problem.swap_aggregates(agg, 12, outside)
    got = problem.fitness_from_aggregate(neighbours)
    # Then each equals a full evaluation of the swapped portfolio
    swapped = np.tile(current, (outside.size, 1))
    swapped[:, 2] = outside
    np.testing.assert_allclose(got, problem.evaluate(swapped), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(neighbours, problem.aggregate(swapped), rtol=1e-9, atol=1e-12)


def test_fitness_from_aggregate_equals_evaluate(pnl: np.ndarray) -> None:
    problem = PortfolioProblem(pnl, 8, metric="sortino")
    X = random_portfolios(np.random.default_rng(9), 25, pnl.shape[1], 8)
    agg = problem.aggregate(X)
    assert agg.shape == (25, problem.aggregate_width) == (25, 2 * pnl.shape[0] + 1)
    np.testing.assert_array_equal(problem.fitness_from_aggregate(agg), problem.evaluate(X))


def test_batches_larger_than_one_block_match_row_by_row() -> None:
    # 82 days -> ~800 portfolios per scoring block; 2000 rows cross two block edges.
    rng = np.random.default_rng(5)
    pnl = rng.normal(size=(82, 60))
    problem = PortfolioProblem(pnl, 5)
    X = random_portfolios(rng, 2000, 60, 5)
    batch = problem.evaluate(X)
    singles = np.concatenate([problem.evaluate(X[i : i + 1]) for i in range(0, 2000, 97)])
    np.testing.assert_allclose(batch[::97], singles, rtol=1e-12)
    assert problem.evaluate(np.zeros((0, 5), dtype=np.int64)).shape == (0,)


def test_order_of_indices_does_not_matter(pnl: np.ndarray) -> None:
    problem = PortfolioProblem(pnl, 4)
    got = problem.evaluate(np.array([[1, 2, 3, 4], [4, 3, 2, 1]]))
    assert got[0] == pytest.approx(got[1], rel=1e-12)


def test_rounding_residue_does_not_explode_the_ratio() -> None:
    # Day 1 sums to +-5.6e-17 depending on order; the ratio must be ROI x 100 for both orders.
    pnl = np.array([[0.1, 0.2, -0.3], [1.0, 1.0, 1.0]])
    problem = PortfolioProblem(pnl, 3, correlation_penalty_weight=0.0)
    got = problem.evaluate(np.array([[0, 1, 2], [2, 1, 0], [1, 2, 0]]))
    np.testing.assert_allclose(got, 300.0, rtol=1e-12)


def test_k_of_one_has_no_correlation_term(pnl: np.ndarray) -> None:
    problem = PortfolioProblem(pnl, 1, metric="roi")
    detail = problem.evaluate_detailed(np.array([[3], [8]]))
    np.testing.assert_array_equal(detail.mean_correlation, 0.0)
    np.testing.assert_allclose(detail.fitness, pnl[:, [3, 8]].sum(axis=0))


@pytest.mark.parametrize("metric", FITNESS_METRICS)
def test_strategy_scores_are_the_metric_of_each_single_column(pnl: np.ndarray, metric: str) -> None:
    problem = PortfolioProblem(pnl, 3, metric=metric)
    scores = problem.strategy_scores()
    assert scores.shape == (pnl.shape[1],) and np.isfinite(scores).all()
    expected = [reference_raw_metric(pnl[:, j], metric) for j in range(pnl.shape[1])]
    np.testing.assert_allclose(scores, expected, rtol=1e-9, atol=1e-9)


def test_metadata_and_names(pnl: np.ndarray) -> None:
    problem = PortfolioProblem(pnl, 3, names=[f"strat{i}" for i in range(40)])
    assert (problem.n_strategies, problem.k, problem.days) == (40, 3, 50)
    assert problem.names[2] == "strat2"
    assert PortfolioProblem(pnl, 3).names[:2] == ("S0", "S1")


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.array([[0, 1]]), r"shape \(n, 3\)"),
        (np.array([0, 1, 2]), r"shape \(n, 3\)"),
        (np.array([[0.0, 1.0, 2.0]]), "integer"),
        (np.array([[0, 1, 40]]), "outside"),
        (np.array([[-1, 1, 2]]), "outside"),
        (np.array([[0, 1, 2], [3, 3, 4]]), "repeated"),
    ],
)
def test_evaluate_refuses_bad_portfolios(pnl: np.ndarray, X: np.ndarray, message: str) -> None:
    problem = PortfolioProblem(pnl, 3)
    with pytest.raises(ValueError, match=message):
        problem.evaluate(X)


def test_swap_aggregates_refuses_out_of_range_indices(pnl: np.ndarray) -> None:
    problem = PortfolioProblem(pnl, 3)
    agg = problem.aggregate(np.array([[0, 1, 2]]))[0]
    with pytest.raises(ValueError, match="swap indices"):
        problem.swap_aggregates(agg, 0, np.array([40]))
    with pytest.raises(ValueError, match="aggregates must have shape"):
        problem.fitness_from_aggregate(np.zeros((1, 7)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "portfolio size"),
        ({"k": 41}, "portfolio size"),
        ({"k": 3, "metric": "calmar"}, "unknown fitness metric"),
        ({"k": 3, "correlation_penalty_weight": -1.0}, "correlation_penalty_weight"),
        ({"k": 3, "periods_per_year": 0.0}, "periods_per_year"),
        ({"k": 3, "names": ["a", "b"]}, "names"),
    ],
)
def test_constructor_refuses_bad_arguments(
    pnl: np.ndarray, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PortfolioProblem(pnl, **kwargs)  # type: ignore[arg-type]


def test_constructor_refuses_non_finite_pnl(pnl: np.ndarray) -> None:
    pnl[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        PortfolioProblem(pnl, 3)


def test_one_day_and_all_zero_matrices_give_finite_fitness() -> None:
    # One day: every column is flat, so no correlation; no loss -> ROI x 100.
    one_day = np.array([[2.0, -1.0, 0.5]])
    detail = PortfolioProblem(one_day, 2).evaluate_detailed(np.array([[0, 2], [1, 2], [0, 1]]))
    np.testing.assert_allclose(detail.fitness, [250.0, -1.0, 100.0])  # -0.5 on day 1 is a DD
    np.testing.assert_array_equal(detail.mean_correlation, 0.0)
    # All-zero P&L: every metric is 0 and so is the fitness.
    for metric in FITNESS_METRICS:
        zeros = PortfolioProblem(np.zeros((10, 6)), 3, metric=metric)
        assert not zeros.evaluate(np.array([[0, 1, 2], [3, 4, 5]])).any()
        assert not zeros.strategy_scores().any()


def test_all_losing_portfolio(pnl: np.ndarray) -> None:
    losses = -np.abs(pnl[:, :4]) - 0.5
    problem = PortfolioProblem(losses, 4, correlation_penalty_weight=0.0)
    got = problem.evaluate_detailed(np.array([[0, 1, 2, 3]])).raw_metric[0]
    assert got == pytest.approx(-1.0, rel=1e-12)  # ROI / MaxDD when every day loses


def test_real_fixture_at_production_portfolio_size() -> None:
    # Given the 82 x 500 SENSEX fixture loaded by the real loader
    data = load_strategy_csv(fixture_csv("sensex_82x500.csv"))
    ppy = infer_periods_per_year(data.dates)
    problem = PortfolioProblem(data.pnl, 35, periods_per_year=ppy, names=data.names)
    X = random_portfolios(np.random.default_rng(35), 15, data.n_strategies, 35)
    # When portfolios of 35 are evaluated, then they match the loop
    expected = [reference_fitness(data.pnl, row, "ratio", 10.0) for row in X]
    np.testing.assert_allclose(problem.evaluate(X), expected, rtol=1e-9, atol=1e-9)
