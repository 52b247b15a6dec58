"""The whole workflow in-process: stages, outputs, determinism, resume, isolation, recovery."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.error_handling.config import ErrorHandlingConfig
from daemon.error_handling.errors import TerminationRequested
from daemon.workflow.algorithms.ga import GeneticAlgorithm
from daemon.workflow.algorithms.sa import SimulatedAnnealing
from daemon.workflow.pipeline import JobRequest, run_job
from daemon.workflow.settings import BudgetConfig, OptimizerConfig, OptimizerSection
from tests.paths import SAMPLES_DIR

pytestmark = pytest.mark.timeout(120)

SENSEX = SAMPLES_DIR / "sensex_82x500.csv"
FAST = OptimizerConfig(
    optimizer=OptimizerSection(budget=BudgetConfig(max_evaluations=4000, max_seconds=60.0,
                                                   evaluations_per_algorithm={"BO": 600}))
)


def _request(tmp_path: Path, **changes: Any) -> JobRequest:
    request = JobRequest.resolve(
        FAST, job_id="job-1", input_path=SENSEX, output_dir=tmp_path / "out",
        portfolio_sizes=(10,), seed=7,
    )
    return dataclasses.replace(request, **changes)


def _run(tmp_path: Path, request: JobRequest, **kwargs: Any) -> dict[str, Any]:
    run_job(request, config=FAST, checkpoint_dir=tmp_path / "ckpt",
            error_config=ErrorHandlingConfig(), **kwargs)
    return json.loads((request.output_dir / "summary.json").read_text())


def _best(summary: dict[str, Any]) -> tuple[str, list[int], float]:
    best = summary["best"]
    return best["algorithm"], best["column_indices"], best["fitness"]


def test_job_writes_every_output(tmp_path: Path) -> None:
    progress: list[dict[str, Any]] = []
    summary = _run(tmp_path, _request(tmp_path), progress=progress.append)
    out = tmp_path / "out"
    for name in ("summary.json", "best_portfolio.csv", "optimization_summary.txt",
                 "strategy_metrics.csv", "equity_curve.png", "drawdown.png",
                 "algorithm_comparison.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "equity_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = summary["best"]
    assert len(best["strategies"]) == 10 == len(set(best["column_indices"]))
    assert summary["input_sha256"] and summary["seed"] == 7
    assert {run["algorithm"] for run in summary["algorithms"]} == set(FAST.optimizer.algorithms)
    assert all(run["evaluations"] <= 4000 for run in summary["algorithms"])
    # the report stage writes summary.json, so its own time is not in it
    assert set(summary["timings_seconds"]) >= {"load", "validate", "preprocess"}
    assert len((out / "best_portfolio.csv").read_text().splitlines()) == 11
    assert len((out / "strategy_metrics.csv").read_text().splitlines()) == 501
    # progress reached the end and never went backwards
    values = [p["progress"] for p in progress]
    assert values == sorted(values) and values[-1] >= 0.9
    assert "Best portfolio" in (out / "optimization_summary.txt").read_text()


def test_same_seed_same_result_and_other_seed_differs(tmp_path: Path) -> None:
    first = _run(tmp_path / "a", _request(tmp_path / "a", algorithms=("GA", "SA", "RS")))
    again = _run(tmp_path / "b", _request(tmp_path / "b", algorithms=("GA", "SA", "RS")))
    other = _run(tmp_path / "c", _request(tmp_path / "c", algorithms=("GA", "SA", "RS"), seed=8))
    assert [r["best_indices"] for r in first["algorithms"]] == \
        [r["best_indices"] for r in again["algorithms"]]
    assert [r["best_indices"] for r in first["algorithms"]] != \
        [r["best_indices"] for r in other["algorithms"]]


class _StopAt:
    """Stops the job the n-th time it reaches a safe point (like SIGTERM arriving there)."""

    def __init__(self, n: int) -> None:
        self.calls = 0
        self.n = n

    def __call__(self) -> BaseException | None:
        self.calls += 1
        return TerminationRequested("test stop") if self.calls == self.n else None


@pytest.mark.parametrize("stop_at", [1, 2, 3, 4, 6, 25, 60])
def test_resume_after_stop_at_any_point_equals_uninterrupted(tmp_path: Path, stop_at: int) -> None:
    algorithms = ("GA", "HC", "RS")
    plain = _run(tmp_path / "plain", _request(tmp_path / "plain", algorithms=algorithms))
    request = _request(tmp_path / "resumed", algorithms=algorithms)
    with pytest.raises(TerminationRequested):
        _run(tmp_path / "resumed", request, stop_check=_StopAt(stop_at))
    resumed = _run(tmp_path / "resumed", request, resume=True)
    assert _best(resumed) == _best(plain)
    assert [r["best_indices"] for r in resumed["algorithms"]] == \
        [r["best_indices"] for r in plain["algorithms"]]


def test_failing_algorithm_is_isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Any) -> None:
        raise ZeroDivisionError("injected failure")

    monkeypatch.setattr(SimulatedAnnealing, "_step", broken)
    summary = _run(tmp_path, _request(tmp_path, algorithms=("GA", "SA", "RS")))
    failed = {f["algorithm"]: f for f in summary["failed_algorithms"]}
    assert set(failed) == {"SA"} and "injected failure" in failed["SA"]["error"]
    assert summary["best"]["algorithm"] in ("GA", "RS")
    report = json.loads((tmp_path / "out" / "recovery_report_job-1.json").read_text())
    assert report["recovery_history"][0]["error_type"] == "AlgorithmError"


def test_memory_error_retries_algorithm_with_halved_population(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = GeneticAlgorithm._initialize
    default = FAST.algorithms.GA.population_size
    sizes: list[int] = []

    def hungry(self: GeneticAlgorithm) -> None:
        sizes.append(self.params.population_size)
        if self.params.population_size > default // 2:
            raise MemoryError("injected: population too large")
        original(self)

    monkeypatch.setattr(GeneticAlgorithm, "_initialize", hungry)
    summary = _run(tmp_path, _request(tmp_path, algorithms=("GA",)))
    assert sizes == [default, default // 2]
    run = summary["algorithms"][0]
    assert run["status"] == "completed" and "population reduced" in run["recovery_note"]
    report = json.loads((tmp_path / "out" / "recovery_report_job-1.json").read_text())
    assert report["successful_recoveries"] == 1


def test_changed_input_refuses_resume(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(SENSEX.read_bytes())
    request = _request(tmp_path, input_path=data, algorithms=("RS",))
    with pytest.raises(TerminationRequested):
        _run(tmp_path, request, stop_check=_StopAt(3))
    data.write_text(SENSEX.read_text().replace("2024-01-04", "2024-01-03", 1))
    with pytest.raises(Exception, match="changed since"):
        _run(tmp_path, request, resume=True)


def test_portfolio_size_range_keeps_best_size(tmp_path: Path) -> None:
    summary = _run(tmp_path, _request(tmp_path, algorithms=("HC",), portfolio_sizes=(10, 11, 12)))
    sizes = [r["portfolio_size"] for r in summary["algorithms"]]
    assert sizes == [10, 11, 12]
    best_fitness = max(r["best_fitness"] for r in summary["algorithms"])
    assert summary["best"]["fitness"] == pytest.approx(best_fitness)
    assert len(summary["best"]["strategies"]) == summary["best"]["portfolio_size"]


def test_best_metrics_match_the_chosen_columns(tmp_path: Path) -> None:
    summary = _run(tmp_path, _request(tmp_path, algorithms=("RS",)))
    import pandas as pd

    frame = pd.read_csv(SENSEX)
    series = frame[summary["best"]["strategies"]].sum(axis=1).to_numpy()
    assert summary["best"]["metrics"]["total_roi"] == pytest.approx(float(np.sum(series)))
