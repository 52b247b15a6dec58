"""The three charts of a job's output folder, drawn with matplotlib's Agg backend.

Analysts open these on Windows without any of our tools, so each chart carries a title that
names the job, dated x axes, labelled units, and a legend where there is more than one line.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on the server; must precede pyplot

import matplotlib.dates as mdates
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from daemon.error_handling.atomic_io import atomic_write_bytes

from .results import AlgorithmRun

#: Pixel density of saved charts: readable when zoomed, small enough for the share.
DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _date_axis(ax: plt.Axes) -> None:
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.grid(True, alpha=0.3)


def equity_curve_chart(dates: np.ndarray, pnl: np.ndarray, title: str, path: Path) -> Path:
    """Cumulative P&L of the portfolio with its running peak (peak starts at 0)."""
    cumulative = np.cumsum(pnl)
    peak = np.maximum.accumulate(np.maximum(cumulative, 0.0))
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.plot(dates, cumulative, label="Cumulative P&L", color="tab:blue", linewidth=1.8)
    ax.plot(dates, peak, label="Running peak", color="tab:green", linestyle="--", linewidth=1)
    ax.fill_between(dates, cumulative, peak, color="tab:red", alpha=0.15, label="Drawdown")
    ax.set_title(f"Equity curve — {title}")
    ax.set_ylabel("Cumulative P&L")
    ax.legend(loc="upper left")
    _date_axis(ax)
    return _save(fig, path)


def drawdown_chart(dates: np.ndarray, pnl: np.ndarray, title: str, path: Path) -> Path:
    """The underwater curve: distance below the running peak on each day."""
    cumulative = np.cumsum(pnl)
    underwater = cumulative - np.maximum.accumulate(np.maximum(cumulative, 0.0))
    worst = int(np.argmin(underwater))
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.fill_between(dates, underwater, 0.0, color="tab:red", alpha=0.4)
    ax.plot(dates, underwater, color="tab:red", linewidth=1)
    ax.annotate(
        f"max drawdown {-underwater[worst]:,.0f}",
        xy=(dates[worst], underwater[worst]),
        xytext=(10, -15),
        textcoords="offset points",
    )
    ax.set_title(f"Drawdown (underwater curve) — {title}")
    ax.set_ylabel("P&L below running peak")
    _date_axis(ax)
    return _save(fig, path)


def algorithm_comparison_chart(runs: Sequence[AlgorithmRun], title: str, path: Path) -> Path:
    """Best fitness and time per algorithm run, failed runs marked as such."""
    labels = [
        run.algorithm if len({r.portfolio_size for r in runs}) == 1
        else f"{run.algorithm} k={run.portfolio_size}"
        for run in runs
    ]
    fitness = [run.best_fitness if run.succeeded else 0.0 for run in runs]
    seconds = [run.seconds for run in runs]
    colours = ["tab:blue" if run.succeeded else "tab:gray" for run in runs]
    fig, (ax_fit, ax_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    positions = np.arange(len(runs))
    ax_fit.bar(positions, fitness, color=colours)
    ax_fit.set_title("Best fitness (higher is better)")
    ax_time.bar(positions, seconds, color="tab:orange")
    ax_time.set_title("Time (seconds)")
    for ax in (ax_fit, ax_time):
        ax.set_xticks(positions, labels, rotation=45, ha="right")
        ax.grid(True, axis="y", alpha=0.3)
    for pos, run in zip(positions, runs, strict=True):
        if not run.succeeded:
            ax_fit.annotate(run.status.value, (pos, 0), ha="center", va="bottom", color="tab:red")
    fig.suptitle(f"Algorithm comparison — {title}")
    return _save(fig, path)
