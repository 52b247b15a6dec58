"""Benchmark the eight search algorithms at their documented defaults; prints tables.

Usage (from the repository root):

    .venv/bin/python benchmarks/bench_algorithms.py [CSV] [--production PATH] [-k 35]

Default input: the bundled sensex 82 x 2,500 extract; ``--production`` (or
``HEAVY_OPTIMIZER_PRODUCTION_CSV``) selects the 82 x 25,544 production-scale file. Budgets and
parameters come from ``config/optimizer_config.json``. For each algorithm the table shows wall
seconds, evaluations, evaluations per second, best penalised fitness, its raw ratio and mean
correlation, and the best fitness as a multiple of a uniform random-search baseline with
1,000,000 samples run in the same process. A second table repeats the run with
``correlation_penalty_weight = 0`` and reports the best raw ratio. Evaluation runs on one
core: BLAS/OpenMP threads are pinned to 1 before numpy is imported.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datasets import SENSEX_2500, production_csv  # noqa: E402

from daemon.workflow.algorithms import (  # noqa: E402
    ALGORITHMS,
    MaxEvaluations,
    algorithm_rng,
    budget_termination,
    make_algorithm,
)
from daemon.workflow.data import load_strategy_csv  # noqa: E402
from daemon.workflow.fitness import PortfolioProblem  # noqa: E402
from daemon.workflow.settings import OptimizerConfig, load_optimizer_config  # noqa: E402

CONFIG = REPO / "config" / "optimizer_config.json"
#: Samples of the random-search baseline.
BASELINE_SAMPLES = 1_000_000


@dataclass(frozen=True)
class Row:
    name: str
    seconds: float
    evaluations: int
    fitness: float
    raw_ratio: float
    correlation: float


def run_one(
    problem: PortfolioProblem, name: str, config: OptimizerConfig, seed: int, baseline: bool
) -> Row:
    """Run one algorithm (or the 1M-sample RS baseline) and describe its best portfolio."""
    budget = config.optimizer.budget
    algorithm = make_algorithm(name, config.algorithms.params_for(name))
    termination = (
        MaxEvaluations(BASELINE_SAMPLES)
        if baseline
        else budget_termination(
            max_evaluations=budget.evaluations_for(name), max_seconds=budget.max_seconds
        )
    )
    algorithm.setup(problem, algorithm_rng(seed, name), termination)
    start = time.perf_counter()
    result = algorithm.run()
    seconds = time.perf_counter() - start
    detail = problem.evaluate_detailed(result.best_x[None, :])
    return Row(
        name=f"{name} ({BASELINE_SAMPLES:,} samples)" if baseline else name,
        seconds=seconds,
        evaluations=result.evaluations,
        fitness=float(detail.fitness[0]),
        raw_ratio=float(detail.raw_metric[0]),
        correlation=float(detail.mean_correlation[0]),
    )


def print_table(title: str, rows: list[Row], baseline: Row | None) -> None:
    """Print one results table; the last column compares with the baseline's fitness."""
    print(f"\n{title}")
    header = (
        f"{'algorithm':<22} {'seconds':>8} {'evals':>10} {'evals/s':>10} "
        f"{'best fitness':>13} {'raw ratio':>10} {'mean corr':>9} {'x RS-1M':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        versus = (
            f"{row.fitness / baseline.fitness:8.1f}"
            if baseline is not None and baseline.fitness > 0
            else f"{'-':>8}"
        )
        print(
            f"{row.name:<22} {row.seconds:8.2f} {row.evaluations:10,d} "
            f"{row.evaluations / row.seconds:10,.0f} {row.fitness:13.3f} {row.raw_ratio:10.3f} "
            f"{row.correlation:9.3f} {versus}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", type=Path, default=None, help="strategy CSV")
    parser.add_argument(
        "--production",
        type=Path,
        nargs="?",
        const=Path(""),
        default=None,
        help="use the 82 x 25,544 production-scale file (optionally its path)",
    )
    parser.add_argument("-k", type=int, default=35, help="portfolio size (default 35)")
    parser.add_argument("--seed", type=int, default=None, help="job seed (default from config)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the 1M-sample RS row")
    args = parser.parse_args(argv)

    if args.production is not None:
        path = production_csv(args.production if str(args.production) else None)
    else:
        path = args.csv or SENSEX_2500
    config = load_optimizer_config(CONFIG)
    seed = config.optimizer.seed if args.seed is None else args.seed
    budget = config.optimizer.budget

    start = time.perf_counter()
    data = load_strategy_csv(path)
    load_seconds = time.perf_counter() - start
    print(
        f"{path.name}: {data.days} days x {data.n_strategies} strategies, k={args.k}, "
        f"seed={seed}, loaded in {load_seconds:.2f} s"
    )
    print(
        f"budget per algorithm: {budget.max_evaluations:,} evaluations or "
        f"{budget.max_seconds:g} s, whichever comes first"
    )

    for penalty in (config.optimizer.correlation_penalty_weight, 0.0):
        problem = PortfolioProblem(
            data.pnl,
            args.k,
            metric=config.optimizer.fitness_metric,
            correlation_penalty_weight=penalty,
        )
        rows = [run_one(problem, name, config, seed, baseline=False) for name in ALGORITHMS]
        baseline = None
        if not args.no_baseline and penalty != 0.0:
            baseline = run_one(problem, "RS", config, seed, baseline=True)
        total = sum(row.seconds for row in rows)
        print_table(
            f"correlation_penalty_weight = {penalty:g}: all eight in {total:.2f} s",
            rows + ([baseline] if baseline else []),
            baseline,
        )
        best = max(rows, key=lambda row: row.raw_ratio)
        print(f"best raw ratio: {best.raw_ratio:.3f} ({best.name})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
