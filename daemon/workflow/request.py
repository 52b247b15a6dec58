"""A job as the workflow sees it: one input, the sizes, the algorithms, the seed.

Built by the CLI (``run-job``) and by the daemon's job runner from a job file; what the job
leaves open comes from the site's ``optimizer_config.json`` (:meth:`JobRequest.resolve`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .backends.base import InputSpec
from .settings import OptimizerConfig


@dataclass(frozen=True)
class JobRequest:
    """One job, fully resolved: which input, which sizes, which algorithms, which seed.

    The input is a CSV (``input_path``) or, for the HeavyDB backend, a server table or
    read-only query (``input_table`` / ``input_query``); exactly one is set.
    """

    job_id: str
    input_path: Path | None
    output_dir: Path
    portfolio_sizes: tuple[int, ...]
    algorithms: tuple[str, ...]
    fitness_metric: str
    seed: int
    correlation_penalty_weight: float
    #: Below 1 after a memory failure: every algorithm's population/batch is scaled by it.
    population_scale: float = 1.0
    #: As the job file says (``server_side_heavydb`` asks for HeavyDB) or the config default.
    execution_mode: str = "numpy"
    input_table: str | None = None
    input_query: str | None = None

    @classmethod
    def resolve(
        cls,
        config: OptimizerConfig,
        *,
        job_id: str,
        input_path: Path | None,
        output_dir: Path,
        portfolio_sizes: tuple[int, ...],
        algorithms: tuple[str, ...] | None = None,
        fitness_metric: str | None = None,
        seed: int | None = None,
        population_scale: float = 1.0,
        execution_mode: str | None = None,
        input_table: str | None = None,
        input_query: str | None = None,
    ) -> JobRequest:
        """Fill what a job leaves open from the site's config."""
        section = config.optimizer
        return cls(
            job_id=job_id,
            input_path=input_path,
            output_dir=output_dir,
            portfolio_sizes=portfolio_sizes,
            algorithms=algorithms or tuple(section.algorithms),
            fitness_metric=fitness_metric or section.fitness_metric,
            seed=section.seed if seed is None else seed,
            correlation_penalty_weight=section.correlation_penalty_weight,
            population_scale=population_scale,
            execution_mode=execution_mode or config.heavydb.default_execution_mode,
            input_table=input_table,
            input_query=input_query,
        )

    def input_spec(self, config: OptimizerConfig) -> InputSpec:
        """What the load stage asks the backend for.

        Raises:
            ValueError: Not exactly one of input_path, input_table, input_query is set.
        """
        return InputSpec(
            job_id=self.job_id, input_path=self.input_path, input_table=self.input_table,
            input_query=self.input_query, exclude_columns=tuple(config.data.exclude_columns),
            nan_policy=config.data.nan_policy,
        )

    def stages(self) -> list[str]:
        runs = [f"algorithm:{name}:k{k}" for k in self.portfolio_sizes for name in self.algorithms]
        return ["load", "validate", "preprocess", *runs, "report"]
