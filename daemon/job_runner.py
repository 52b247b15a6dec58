"""The daemon's job runner: the optimisation workflow run inside a job process.

Kept apart from :mod:`daemon.worker` (the process protocol) so tests can run other job
functions through the same worker, as rq's fixtures do.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.config import load_settings
from daemon.share import ShareLayout
from daemon.workflow.pipeline import JobRequest, run_job


def run_optimization_job(
    payload: dict[str, Any],
    heartbeat: Callable[[dict[str, Any]], None],
    stop_check: Callable[[], BaseException | None],
) -> dict[str, Any]:
    """Run the workflow for one claimed job; returns what the completed record shows.

    ``payload`` holds ``job_id``, ``share_root``, ``config_dir``, ``input_file``,
    ``portfolio_sizes`` and the optional ``algorithms``, ``fitness``, ``seed``, ``resume``
    and ``adjustments`` (e.g. a population scale after a memory failure).
    """
    settings = load_settings(payload.get("config_dir"), share_root=payload["share_root"])
    layout = ShareLayout(Path(payload["share_root"]))
    job_id = payload["job_id"]
    adjustments = payload.get("adjustments") or {}
    request = JobRequest.resolve(
        settings.optimizer,
        job_id=job_id,
        input_path=layout.input / payload["input_file"],
        output_dir=layout.output_dir(job_id),
        portfolio_sizes=tuple(payload["portfolio_sizes"]),
        algorithms=tuple(payload["algorithms"]) if payload.get("algorithms") else None,
        fitness_metric=payload.get("fitness"),
        seed=payload.get("seed"),
        population_scale=float(adjustments.get("population_scale", 1.0)),
    )
    outcome = run_job(
        request,
        config=settings.optimizer,
        checkpoint_dir=layout.checkpoints,
        error_config=settings.error_handling,
        resume=bool(payload.get("resume")),
        progress=heartbeat,
        stop_check=stop_check,
    )
    summary = json.loads((request.output_dir / "summary.json").read_text(encoding="utf-8"))
    best = summary["best"]
    return {
        "output_dir": f"output/{job_id}",  # relative: clients see the share elsewhere
        "best_algorithm": best["algorithm"],
        "best_fitness": best["fitness"],
        "best_raw_metric": best["raw_metric"],
        "portfolio_size": best["portfolio_size"],
        "best_portfolio": best["strategies"],
        "failed_algorithms": [run.algorithm for run in outcome.failed_runs],
    }
