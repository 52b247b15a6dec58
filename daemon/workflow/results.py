"""What a job produces: one record per algorithm run and the job's outcome.

These records cross three boundaries — checkpoints (a resumed job reads back finished
algorithm runs), the output files, and the daemon's result records — so each converts to and
from plain JSON values and nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class RunStatus(str, Enum):
    """How one algorithm run ended."""

    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class AlgorithmRun:
    """The result of one algorithm at one portfolio size."""

    algorithm: str
    portfolio_size: int
    status: RunStatus
    best_indices: tuple[int, ...] = ()
    best_fitness: float | None = None
    raw_metric: float | None = None
    mean_correlation: float | None = None
    evaluations: int = 0
    seconds: float = 0.0
    error: str | None = None
    #: What the recovery manager changed to get this run through (e.g. a halved population).
    recovery_note: str | None = None

    @property
    def stage(self) -> str:
        """The checkpoint stage name of this run (unique within a job)."""
        return f"algorithm:{self.algorithm}:k{self.portfolio_size}"

    @property
    def succeeded(self) -> bool:
        return self.status is RunStatus.COMPLETED and self.best_fitness is not None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["status"] = self.status.value
        data["best_indices"] = list(self.best_indices)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlgorithmRun:
        values = dict(data)
        values["status"] = RunStatus(values["status"])
        values["best_indices"] = tuple(int(i) for i in values.get("best_indices", ()))
        return cls(**values)


@dataclass
class JobOutcome:
    """Everything the report stage writes; ``summary.json`` is its JSON form."""

    job_id: str
    input_file: str
    input_sha256: str
    seed: int
    fitness_metric: str
    correlation_penalty_weight: float
    runs: list[AlgorithmRun]
    data_info: dict[str, Any]
    config: dict[str, Any]
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> AlgorithmRun | None:
        """The run with the highest penalised fitness; ties go to the earlier run."""
        done = [run for run in self.runs if run.succeeded]
        if not done:
            return None
        return max(done, key=lambda run: run.best_fitness or float("-inf"))

    @property
    def failed_runs(self) -> list[AlgorithmRun]:
        return [run for run in self.runs if run.status is not RunStatus.COMPLETED]
