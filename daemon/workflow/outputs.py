"""The report stage: every file of ``output/<job_id>/``.

``summary.json`` is for machines (clients, the daemon's result record); the CSVs are for
spreadsheets; ``optimization_summary.txt`` and the charts are for people. Each file is written
atomically so a client polling the share never reads half of one.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from daemon.error_handling.atomic_io import atomic_write_json, atomic_write_text

from . import charts
from .data import StrategyData
from .metrics import portfolio_metrics
from .results import JobOutcome

#: Order of metric columns in the CSVs and the text summary.
METRIC_COLUMNS = (
    "total_roi",
    "max_drawdown",
    "ratio",
    "win_percentage",
    "profit_factor",
    "expectancy",
    "sharpe",
    "sortino",
    "annualized_return",
)


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def build_summary(outcome: JobOutcome, data: StrategyData) -> dict[str, Any]:
    """The JSON document of ``summary.json``; also the result record's ``best`` part."""
    best = outcome.best
    summary: dict[str, Any] = {
        "job_id": outcome.job_id,
        "status": "completed" if best else "failed",
        "input_file": outcome.input_file,
        "input_sha256": outcome.input_sha256,
        "seed": outcome.seed,
        "fitness_metric": outcome.fitness_metric,
        "correlation_penalty_weight": outcome.correlation_penalty_weight,
        "data": outcome.data_info,
        "algorithms": [run.to_dict() for run in outcome.runs],
        "failed_algorithms": [
            {"algorithm": run.algorithm, "portfolio_size": run.portfolio_size,
             "status": run.status.value, "error": run.error}
            for run in outcome.failed_runs
        ],
        "timings_seconds": outcome.stage_seconds,
        "config": outcome.config,
    }
    if best is not None:
        indices = list(best.best_indices)
        series = data.pnl[:, indices].sum(axis=1)
        metrics = portfolio_metrics(series, outcome.data_info["periods_per_year"])
        summary["best"] = {
            "algorithm": best.algorithm,
            "portfolio_size": best.portfolio_size,
            "fitness": best.best_fitness,
            "raw_metric": best.raw_metric,
            "mean_correlation": best.mean_correlation,
            "strategies": [data.names[i] for i in indices],
            "column_indices": indices,
            "metrics": {name: _finite(value) for name, value in metrics.items()},
        }
    return summary


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _metric_row(metrics: Mapping[str, np.ndarray], column: int) -> list[Any]:
    return [f"{float(metrics[name][column]):.10g}" for name in METRIC_COLUMNS if name in metrics]


def write_outputs(
    outcome: JobOutcome,
    data: StrategyData,
    strategy_metrics: Mapping[str, np.ndarray],
    output_dir: Path,
) -> dict[str, Path]:
    """Write every output file; returns their paths by file name."""
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = build_summary(outcome, data)
    columns = [name for name in METRIC_COLUMNS if name in strategy_metrics]
    written = {"summary.json": atomic_write_json(output_dir / "summary.json", summary)}

    all_rows = [[data.names[i], i, *_metric_row(strategy_metrics, i)]
                for i in range(len(data.names))]
    written["strategy_metrics.csv"] = atomic_write_text(
        output_dir / "strategy_metrics.csv", _csv_text(["strategy", "column", *columns], all_rows)
    )
    written["optimization_summary.txt"] = atomic_write_text(
        output_dir / "optimization_summary.txt", render_text_summary(summary)
    )
    best = outcome.best
    if best is None:
        return written

    ranked = sorted(
        best.best_indices,
        key=lambda i: -float(strategy_metrics["total_roi"][i]),
    )
    best_rows = [[rank, data.names[i], i, *_metric_row(strategy_metrics, i)]
                 for rank, i in enumerate(ranked, start=1)]
    written["best_portfolio.csv"] = atomic_write_text(
        output_dir / "best_portfolio.csv",
        _csv_text(["rank", "strategy", "column", *columns], best_rows),
    )
    series = data.pnl[:, list(best.best_indices)].sum(axis=1)
    title = f"{outcome.job_id} ({best.algorithm}, k={best.portfolio_size})"
    written["equity_curve.png"] = charts.equity_curve_chart(
        data.dates, series, title, output_dir / "equity_curve.png"
    )
    written["drawdown.png"] = charts.drawdown_chart(
        data.dates, series, title, output_dir / "drawdown.png"
    )
    written["algorithm_comparison.png"] = charts.algorithm_comparison_chart(
        outcome.runs, outcome.job_id, output_dir / "algorithm_comparison.png"
    )
    return written


def render_text_summary(summary: Mapping[str, Any]) -> str:
    """The people-facing summary: what was chosen, how good it is, what went wrong."""
    data = summary["data"]
    lines = [
        f"Heavy Optimizer result for job {summary['job_id']}",
        "=" * 60,
        f"Input:      {summary['input_file']} (sha256 {summary['input_sha256'][:16]}...)",
        f"Data:       {data['days']} days x {data['strategies']} strategies, "
        f"{data['first_date']} to {data['last_date']}",
        f"Fitness:    {summary['fitness_metric']} minus "
        f"{summary['correlation_penalty_weight']} x mean pairwise correlation",
        f"Seed:       {summary['seed']}",
        "",
    ]
    best = summary.get("best")
    if best is None:
        lines.append("No algorithm produced a portfolio. See failed algorithms below.")
    else:
        lines += [
            f"Best portfolio: {best['algorithm']}, {best['portfolio_size']} strategies, "
            f"fitness {best['fitness']:.4f} (raw {summary['fitness_metric']} "
            f"{best['raw_metric']:.4f}, mean correlation {best['mean_correlation']:.3f})",
            "",
            "Portfolio metrics:",
        ]
        for name, value in best["metrics"].items():
            shown = "n/a" if value is None else f"{value:,.4f}"
            lines.append(f"  {name:<18} {shown}")
        lines += ["", "Strategies:"]
        lines += [f"  {i:>3}. {name}" for i, name in enumerate(best["strategies"], start=1)]
    lines += ["", "Algorithms:",
              f"  {'name':<6} {'k':>4} {'status':<10} {'fitness':>12} {'evals':>10} {'secs':>7}"]
    for run in summary["algorithms"]:
        fitness = "-" if run["best_fitness"] is None else f"{run['best_fitness']:.4f}"
        lines.append(
            f"  {run['algorithm']:<6} {run['portfolio_size']:>4} {run['status']:<10} "
            f"{fitness:>12} {run['evaluations']:>10} {run['seconds']:>7.2f}"
        )
    for failed in summary["failed_algorithms"]:
        lines.append(f"  ! {failed['algorithm']} {failed['status']}: {failed['error']}")
    for warning in data.get("warnings", []):
        lines.append(f"  warning: {warning}")
    return "\n".join(lines) + "\n"
