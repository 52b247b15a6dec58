"""Benchmark CSV loading engines and portfolio evaluation throughput; prints tables.

Usage (from the repository root):

    .venv/bin/python benchmarks/bench_data_fitness.py [--production PATH] [--sensex PATH]

The production-scale file (82 x 25,544, ~40 MB) is not part of the repository. Make it with
``python ../shared/tools/make_production_csv.py /path/production.csv`` and pass it with
``--production`` or the ``HEAVY_OPTIMIZER_PRODUCTION_CSV`` environment variable. Evaluation runs
on one core: BLAS/OpenMP threads are pinned to 1 before numpy is imported.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.csv as pacsv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datasets import SENSEX_2500, production_csv  # noqa: E402

from daemon.workflow.data import infer_periods_per_year, load_strategy_csv  # noqa: E402
from daemon.workflow.fitness import PortfolioProblem  # noqa: E402

K = 35
PENALTY = 10.0


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def rate_per_second(fn: Callable[[], object], items_per_call: int, budget_seconds: float) -> float:
    """Items per second of ``fn`` over at least ``budget_seconds`` (after one warm-up call)."""
    fn()
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget_seconds:
            return calls * items_per_call / elapsed


def load_table(files: list[Path], repeats: int) -> None:
    engines: list[tuple[str, Callable[[Path], object]]] = [
        ("load_strategy_csv (ours: C engine, low_memory=False, validated)", load_strategy_csv),
        ("pandas C engine, defaults", lambda p: pd.read_csv(p)),
        ("pandas C engine, low_memory=False", lambda p: pd.read_csv(p, low_memory=False)),
        ("pandas pyarrow engine", lambda p: pd.read_csv(p, engine="pyarrow")),
        ("pyarrow.csv.read_csv (threads)", pacsv.read_csv),
    ]
    print(f"\nCSV load time, best of {repeats} (seconds)")
    header = f"{'engine':66s}" + "".join(f"{p.name:>28s}" for p in files)
    print(header)
    print("-" * len(header))
    ours: list[float] = []
    for label, fn in engines:
        times = [best_seconds(partial(fn, p), repeats) for p in files]
        ours = ours or times
        cells = "".join(
            f"{t:12.3f}  ({t / o:5.2f}x ours)" for t, o in zip(times, ours, strict=True)
        )
        print(f"{label:66s}{cells}")


def naive_fitness(frame: pd.DataFrame, cols: list[str], periods_per_year: float) -> float:
    """Baseline: the per-portfolio pandas code older tools ran (same definition as ours)."""
    del periods_per_year  # the ratio metric does not annualise
    series = frame[cols].sum(axis=1)
    cum = series.cumsum()
    peak = cum.cummax().clip(lower=0.0)
    drawdown = float((peak - cum).max())
    roi = float(series.sum())
    fallback = roi * 100 if roi > 0 else roi * 10
    ratio = roi / drawdown if drawdown > 0 else fallback
    corr = frame[cols].corr().fillna(0.0).to_numpy()
    mean_corr = (corr.sum() - np.trace(corr)) / (K * (K - 1))
    return ratio - PENALTY * mean_corr


def evaluation_table(path: Path, budget_seconds: float) -> None:
    data = load_strategy_csv(path)
    ppy = infer_periods_per_year(data.dates)
    problem = PortfolioProblem(
        data.pnl, K, correlation_penalty_weight=PENALTY, periods_per_year=ppy, names=data.names
    )
    rng = np.random.default_rng(0)
    n_strategies = data.n_strategies

    def portfolios(n: int) -> np.ndarray:
        return np.stack([rng.choice(n_strategies, K, replace=False) for _ in range(n)])

    frame = pd.DataFrame(data.pnl, columns=list(data.names))
    sample = portfolios(20)
    naive = [naive_fitness(frame, [data.names[j] for j in row], ppy) for row in sample]
    deviation = float(np.max(np.abs(problem.evaluate(sample) - naive)))

    naive_rows = iter(portfolios(100_000))
    baseline = rate_per_second(
        lambda: naive_fitness(frame, [data.names[j] for j in next(naive_rows)], ppy),
        1,
        budget_seconds,
    )
    print(
        f"\nPortfolio evaluations per second, k={K}, metric=ratio, penalty={PENALTY}, one core, "
        f"{path.name} ({data.days} days x {n_strategies} strategies)"
    )
    print(
        f"(max |ours - naive| on 20 portfolios: {deviation:.2e}; load average "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)"
    )
    header = f"{'method':52s}{'evals/s':>14s}{'x naive':>10s}"
    print(header)
    print("-" * len(header))
    print(f"{'naive pandas, one portfolio per call':52s}{baseline:14,.0f}{1.0:10.1f}")
    for batch in (1, 64, 1024):
        X = portfolios(batch)
        rate = rate_per_second(partial(problem.evaluate, X), batch, budget_seconds)
        print(
            f"{f'PortfolioProblem.evaluate, batch {batch}':52s}{rate:14,.0f}{rate / baseline:10.1f}"
        )
    current = portfolios(1)[0]
    agg = problem.aggregate(current[np.newaxis, :])[0]
    outside = np.setdiff1d(np.arange(n_strategies), current)[:1024]
    rate = rate_per_second(
        lambda: problem.fitness_from_aggregate(problem.swap_aggregates(agg, current[0], outside)),
        outside.size,
        budget_seconds,
    )
    label = f"swap_aggregates + fitness_from_aggregate, {outside.size} nbrs"
    print(f"{label:52s}{rate:14,.0f}{rate / baseline:10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--production",
        type=Path,
        default=None,
        help="82 x 25,544 CSV (default: $HEAVY_OPTIMIZER_PRODUCTION_CSV, else generated once)",
    )
    parser.add_argument(
        "--sensex",
        type=Path,
        default=SENSEX_2500,
        help="sensex_82x2500.csv (default: the bundled sample)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="load repeats (best is shown)")
    parser.add_argument("--seconds", type=float, default=2.0, help="time budget per rate row")
    args = parser.parse_args()

    files = [args.sensex, production_csv(args.production)]
    load_table(files, args.repeats)
    evaluation_table(files[-1], args.seconds)


if __name__ == "__main__":
    main()
