"""The optimisation job: load → validate → preprocess → one stage per algorithm → report.

Each stage ends with a checkpoint holding a small *journal* (stages done, algorithm results,
timings), never the strategy matrix: on resume the input is read again and must have the same
sha256. Where the matrix comes from is the backend's business (:mod:`.backends`): the load
stage asks a ``StrategySource`` for ``StrategyData`` (the CSV parsed here, or the data passed
through HeavyDB) and the report stage hands it the outcome to publish. Algorithms checkpoint
their own state every ``checkpoint_interval`` seconds, so a long search resumes mid-way.
Because every algorithm has its own generator derived from the job seed and its name, and
evaluation budgets are exact, a resumed job gives the same result as an uninterrupted one.

Stopping is cooperative: ``stop_check`` is asked at safe points (between stages and after
every algorithm iteration); when it returns an exception the pipeline saves a checkpoint of
where it is and raises it. A signal therefore never tears an algorithm's state mid-update.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from daemon.error_handling.checkpoint import CheckpointManager
from daemon.error_handling.config import ErrorHandlingConfig
from daemon.error_handling.errors import (
    AlgorithmError,
    CheckpointError,
    DataValidationError,
)
from daemon.error_handling.notifier import ErrorNotifier
from daemon.error_handling.recovery import ErrorRecoveryManager
from daemon.error_handling.recovery_actions import AdjustParameters

from .algorithms import make_algorithm
from .algorithms.base import SearchAlgorithm, SearchProgress, algorithm_rng
from .algorithms.params import reduce_population
from .algorithms.termination import budget_termination
from .backends.base import StrategySource
from .backends.numpy_backend import CsvSource
from .backends.selection import select_source
from .data import StrategyData, check_portfolio_size, infer_periods_per_year
from .fitness import PortfolioProblem
from .metrics import per_strategy_metrics
from .outputs import write_outputs
from .request import JobRequest
from .results import AlgorithmRun, JobOutcome, RunStatus
from .settings import OptimizerConfig

logger = logging.getLogger(__name__)

#: Receives heartbeat payloads: stage, algorithm, iteration, evaluations, best, progress.
ProgressSink = Callable[[dict[str, Any]], None]
#: Asked at safe points; returns the exception to stop with (shutdown, deadline) or None.
StopCheck = Callable[[], BaseException | None]


def _checkpoint_name(index: int, stage: str, partial: bool = False) -> str:
    slug = stage.replace(":", "-")
    return f"{index:03d}-{slug}{'-partial' if partial else ''}"


class OptimizationPipeline:
    """Runs one :class:`JobRequest`, checkpointing after every stage.

    Args:
        request: The job.
        config: The site's optimizer config (budgets, algorithm parameters, data rules).
        checkpoints: Where stage checkpoints go (one folder per job).
        recovery: Decides what to do when an algorithm fails.
        progress: Receives heartbeat payloads; must be cheap.
        stop_check: See the module docstring.
        source: The backend giving the data and taking the results (default: the CSV,
            parsed in this process).
    """

    def __init__(
        self,
        request: JobRequest,
        *,
        config: OptimizerConfig,
        checkpoints: CheckpointManager,
        recovery: ErrorRecoveryManager,
        progress: ProgressSink | None = None,
        stop_check: StopCheck | None = None,
        clock: Callable[[], float] = time.monotonic,
        source: StrategySource | None = None,
    ) -> None:
        self.request = request
        self._spec = request.input_spec(config)
        self._source: StrategySource = source or CsvSource()
        self.config = config
        self.checkpoints = checkpoints
        self.recovery = recovery
        self._progress = progress
        self._stop_check = stop_check
        self._clock = clock
        self._stages = request.stages()
        self._done: list[str] = []
        self._runs: list[AlgorithmRun] = []
        self._stage_seconds: dict[str, float] = {}
        self._partial: dict[str, Any] | None = None
        self._data: StrategyData | None = None
        self._periods_per_year = 52.0
        self._strategy_metrics: dict[str, np.ndarray] = {}
        self._resume_sha256: str | None = None

    # -- journal ---------------------------------------------------------------------------

    def _journal(self, stage: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {
            "job_id": self.request.job_id,
            "stage": stage,
            "input_sha256": self._data.sha256 if self._data else None,
            "completed_stages": list(self._done),
            "runs": [run.to_dict() for run in self._runs],
            "stage_seconds": dict(self._stage_seconds),
            **(extra or {}),
        }

    def _save(self, stage: str, *, partial_state: dict[str, Any] | None = None) -> None:
        if not self.checkpoints.should_save(stage):
            return
        index = self._stages.index(stage)
        extra = {"partial": {"stage": stage, "state": partial_state}} if partial_state else None
        self.checkpoints.save_checkpoint(
            self._journal(stage, extra),
            _checkpoint_name(index, stage, partial=partial_state is not None),
            description=f"{'inside' if partial_state else 'after'} {stage}",
        )

    def _restore(self) -> None:
        found = self.checkpoints.load_latest_valid()
        if found is None:
            logger.info("%s: no checkpoint to resume from; starting afresh", self.request.job_id)
            return
        info, state = found
        self._done = [s for s in state.get("completed_stages", []) if s in self._stages]
        self._runs = [AlgorithmRun.from_dict(r) for r in state.get("runs", [])]
        self._stage_seconds = {k: float(v) for k, v in state.get("stage_seconds", {}).items()}
        self._resume_sha256 = state.get("input_sha256")
        partial = state.get("partial")
        if isinstance(partial, dict) and partial.get("stage") not in self._done:
            self._partial = partial
        logger.info("%s: resuming from checkpoint %s after %d completed stages",
                    self.request.job_id, info.name, len(self._done))

    # -- running ---------------------------------------------------------------------------

    def run(self, *, resume: bool = False) -> JobOutcome:
        """Run every stage not yet done; returns the outcome written by the report stage.

        Raises:
            DataError: The input cannot be used (names file, column, row).
            AlgorithmError: Every algorithm failed (not recoverable).
            BaseException: Whatever ``stop_check`` returned, after a checkpoint was saved.
        """
        self._resume_sha256 = None
        if resume:
            self._restore()
        for stage in self._stages:
            if stage in self._done and stage not in ("load", "validate", "preprocess"):
                continue
            self._check_stop(stage)
            started = self._clock()
            self._run_stage(stage)
            self._stage_seconds[stage] = round(self._clock() - started, 6)
            if stage not in self._done:
                self._done.append(stage)
            self._save(stage)
        return self._outcome()

    def _check_stop(
        self, stage: str, state: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        """Raise the stop reason, if any, after checkpointing ``state()`` of a running stage."""
        if self._stop_check is None:
            return
        reason = self._stop_check()
        if reason is not None:
            logger.warning("%s: stopping at %s (%s); checkpoint saved", self.request.job_id,
                           stage, type(reason).__name__)
            if state is not None:
                self._save(stage, partial_state=state())
            raise reason

    def _emit(self, stage: str, **fields: Any) -> None:
        if self._progress is None:
            return
        done = sum(1 for s in self._stages if s in self._done)
        within = float(fields.pop("stage_progress", 0.0))
        self._progress({
            "stage": stage,
            "progress": round((done + within) / len(self._stages), 4),
            **fields,
        })

    def _run_stage(self, stage: str) -> None:
        self._emit(stage)
        if stage == "load":
            self._load()
        elif stage == "validate":
            check_portfolio_size(self._require_data(), max(self.request.portfolio_sizes))
        elif stage == "preprocess":
            data = self._require_data()
            self._periods_per_year = infer_periods_per_year(data.dates)
            self._strategy_metrics = per_strategy_metrics(data.pnl, self._periods_per_year)
        elif stage == "report":
            self._report()
        else:
            _, name, size = stage.split(":")
            self._runs = [r for r in self._runs if r.stage != stage]
            self._runs.append(self._run_algorithm(stage, name, int(size[1:])))

    def _load(self) -> None:
        self._data = self._source.load(self._spec)
        if self._resume_sha256 and self._resume_sha256 != self._data.sha256:
            where = self.request.input_path or self._spec.label
            raise DataValidationError(
                f"{where}: the input changed since this job's checkpoints were written; "
                "submit it as a new job",
                context={"file": str(where)},
            )

    def _require_data(self) -> StrategyData:
        if self._data is None:
            raise AlgorithmError("internal: data used before the load stage", recoverable=False)
        return self._data

    # -- algorithms ------------------------------------------------------------------------

    def _problem(self, k: int) -> PortfolioProblem:
        data = self._require_data()
        return PortfolioProblem(
            data.pnl,
            k,
            metric=self.request.fitness_metric,
            correlation_penalty_weight=self.request.correlation_penalty_weight,
            periods_per_year=self._periods_per_year,
            names=data.names,
        )

    def _run_algorithm(self, stage: str, name: str, k: int) -> AlgorithmRun:
        params = self.config.algorithms.params_for(name)
        if self.request.population_scale < 1.0:
            params = reduce_population(params, self.request.population_scale)
        partial = self._partial if self._partial and self._partial.get("stage") == stage else None
        self._partial = None
        note: str | None = None
        problem = self._problem(k)
        budget = self.config.optimizer.budget
        while True:
            algorithm = make_algorithm(name, params)
            algorithm.setup(
                problem,
                algorithm_rng(self.request.seed, f"{name}@k{k}"),
                budget_termination(max_evaluations=budget.evaluations_for(name),
                                   max_seconds=budget.max_seconds),
            )
            if partial is not None:
                try:
                    algorithm.set_state(partial["state"])
                    logger.info("%s: %s resumes at evaluation %d", self.request.job_id, stage,
                                algorithm.evaluations)
                except CheckpointError as exc:
                    logger.warning("%s: cannot resume %s mid-way (%s); restarting it",
                                   self.request.job_id, stage, exc)
            try:
                result = algorithm.run(
                    progress=functools.partial(self._on_iteration, stage, algorithm),
                    on_checkpoint=lambda state: self._save(stage, partial_state=state),
                    checkpoint_interval_seconds=self.config.optimizer.checkpoint_interval,
                )
            except Exception as exc:  # isolated: one algorithm's failure never ends the job
                action = self.recovery.handle_error(exc, {
                    "stage": stage, "algorithm": name, "population_size": _population(params),
                })
                if isinstance(action, AdjustParameters):
                    factor = float(action.changes.get("reduce_factor", 0.5))
                    params = reduce_population(params, factor)
                    note = f"population reduced x{factor} after {type(exc).__name__}"
                    partial = None
                    continue
                self.recovery.record_outcome(False)
                logger.error("%s: %s failed and is skipped: %s", self.request.job_id, stage, exc)
                return AlgorithmRun(name, k, RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}",
                                    recovery_note=action.reason or None)
            if note:
                self.recovery.record_outcome(True)
            detail = problem.evaluate_detailed(result.best_x[np.newaxis, :])
            return AlgorithmRun(
                algorithm=name,
                portfolio_size=k,
                status=RunStatus.COMPLETED,
                best_indices=tuple(int(i) for i in result.best_x),
                best_fitness=float(detail.fitness[0]),
                raw_metric=float(detail.raw_metric[0]),
                mean_correlation=float(detail.mean_correlation[0]),
                evaluations=result.evaluations,
                seconds=round(result.elapsed_seconds, 4),
                recovery_note=note,
            )

    def _on_iteration(self, stage: str, algorithm: SearchAlgorithm, report: SearchProgress) -> None:
        self._emit(stage, algorithm=report.algorithm, iteration=report.iteration,
                   evaluations=report.evaluations, best_fitness=report.best_fitness,
                   stage_progress=report.progress)
        self._check_stop(stage, state=algorithm.get_state)

    # -- report ----------------------------------------------------------------------------

    def _outcome(self) -> JobOutcome:
        data = self._require_data()
        request = self.request
        return JobOutcome(
            job_id=request.job_id,
            input_file=self._spec.label,
            input_sha256=data.sha256,
            seed=request.seed,
            fitness_metric=request.fitness_metric,
            correlation_penalty_weight=request.correlation_penalty_weight,
            runs=list(self._runs),
            data_info={
                "days": data.days,
                "strategies": data.n_strategies,
                "first_date": str(data.dates[0]),
                "last_date": str(data.dates[-1]),
                "periods_per_year": self._periods_per_year,
                "excluded_columns": list(data.excluded_columns),
                "warnings": list(data.warnings),
                "backend": self._source.describe(),
            },
            config={
                **self.config.to_dict(),
                "job": {
                    "portfolio_sizes": list(request.portfolio_sizes),
                    "algorithms": list(request.algorithms),
                    "population_scale": request.population_scale,
                },
            },
            stage_seconds=dict(self._stage_seconds),
        )

    def _report(self) -> None:
        outcome = self._outcome()
        if outcome.best is None:
            reasons = "; ".join(f"{r.algorithm}: {r.error}" for r in outcome.failed_runs)
            raise AlgorithmError(f"every algorithm failed: {reasons}", recoverable=False)
        write_outputs(outcome, self._require_data(), self._strategy_metrics,
                      self.request.output_dir)
        self._source.publish(outcome, self._require_data(), self._strategy_metrics)
        if self.recovery.history:
            self.recovery.save_recovery_report(self.request.output_dir)


def _population(params: object) -> int | None:
    fields: tuple[str, ...] = getattr(params, "population_fields", ())
    return int(getattr(params, fields[0])) if fields else None


def run_job(
    request: JobRequest,
    *,
    config: OptimizerConfig,
    checkpoint_dir: Path,
    error_config: ErrorHandlingConfig,
    resume: bool = False,
    notifier: ErrorNotifier | None = None,
    progress: ProgressSink | None = None,
    stop_check: StopCheck | None = None,
    source: StrategySource | None = None,
) -> JobOutcome:
    """Run a job with its checkpoints and recovery manager wired up (CLI and daemon alike).

    The recovery history lives beside the job's checkpoints, so attempts made by different
    processes (a crash, then a retry) count against the same ``max_recovery_attempts``.
    ``source`` defaults to the backend :func:`.backends.selection.select_source` picks for
    the request's execution mode and input (HeavyDB retries use ``error_config.retry``).

    Raises:
        ConfigurationError: The job needs HeavyDB and ``heavydb.mode`` is ``off``.
    """
    if source is None:
        source = select_source(request.input_spec(config), execution_mode=request.execution_mode,
                               config=config.heavydb, retry_config=error_config.retry)
    checkpoints = CheckpointManager(
        job_id=request.job_id, base_dir=checkpoint_dir, config=error_config.checkpoint
    )
    recovery = ErrorRecoveryManager(
        checkpoints, notifier, request.job_id, config=error_config.recovery,
        history_path=checkpoint_dir / request.job_id / "recovery_history.json",
    )
    pipeline = OptimizationPipeline(
        request, config=config, checkpoints=checkpoints, recovery=recovery,
        progress=progress, stop_check=stop_check, source=source,
    )
    return pipeline.run(resume=resume)
