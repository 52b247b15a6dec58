"""The daemon's job runner: the optimisation workflow run inside a job process.

Kept apart from :mod:`daemon.worker` (the process protocol) so tests can run other job
functions through the same worker, as rq's fixtures do.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daemon.config import load_settings
from daemon.error_handling.config import NotificationsConfig
from daemon.share import ShareLayout
from daemon.workflow.backends.heavydb import OutageTracker
from daemon.workflow.backends.selection import select_source
from daemon.workflow.pipeline import JobRequest, run_job

#: Exists in the share's state folder while a HeavyDB outage is known (one alert per outage).
HEAVYDB_OUTAGE_MARKER = "heavydb_outage.json"


def _send_alert(config: NotificationsConfig, job_id: str, title: str, message: str,
                severity: str) -> None:
    """Send one alert from this job process and wait (bounded) until it is out.

    The daemon's notifier lives in the parent process; this one keeps no outbox (the
    daemon's outbox has one writer) and is closed before the job goes on.
    """
    from daemon.error_handling.notifier import ErrorNotifier

    notifier = ErrorNotifier(dataclasses.replace(config, outbox_directory=""))
    try:
        notifier.notify(title, message, severity, {"job_id": job_id, "stage": "load"})
    finally:
        notifier.close(timeout=10.0)


def run_optimization_job(
    payload: dict[str, Any],
    heartbeat: Callable[[dict[str, Any]], None],
    stop_check: Callable[[], BaseException | None],
) -> dict[str, Any]:
    """Run the workflow for one claimed job; returns what the completed record shows.

    ``payload`` holds ``job_id``, ``share_root``, ``config_dir``, ``input_file`` (empty for a
    job reading a HeavyDB table or query), ``portfolio_sizes``, ``spec`` (the job file:
    ``execution_mode``, ``input_table``, ``input_query``) and the optional ``algorithms``,
    ``fitness``, ``seed``, ``resume`` and ``adjustments`` (e.g. a population scale after a
    memory failure).
    """
    settings = load_settings(payload.get("config_dir"), share_root=payload["share_root"])
    # Under the daemon, job_processor.checkpoint_interval sets the algorithms' mid-run
    # checkpoint interval (the optimizer file's value applies to run-job).
    optimizer = dataclasses.replace(settings.optimizer, optimizer=dataclasses.replace(
        settings.optimizer.optimizer, checkpoint_interval=settings.jobs.checkpoint_interval))
    layout = ShareLayout(Path(payload["share_root"]))
    job_id = payload["job_id"]
    spec = payload.get("spec") or {}
    adjustments = payload.get("adjustments") or {}
    input_file = payload.get("input_file")
    request = JobRequest.resolve(
        optimizer,
        job_id=job_id,
        input_path=layout.input / input_file if input_file else None,
        output_dir=layout.output_dir(job_id),
        portfolio_sizes=tuple(payload["portfolio_sizes"]),
        algorithms=tuple(payload["algorithms"]) if payload.get("algorithms") else None,
        fitness_metric=payload.get("fitness"),
        seed=payload.get("seed"),
        population_scale=float(adjustments.get("population_scale", 1.0)),
        execution_mode=spec.get("execution_mode"),
        input_table=spec.get("input_table"),
        input_query=spec.get("input_query"),
    )
    alert = None
    if settings.jobs.enable_notifications:
        alert = functools.partial(_send_alert, settings.error_handling.notifications, job_id)
    source = select_source(
        request.input_spec(settings.optimizer), execution_mode=request.execution_mode,
        config=settings.optimizer.heavydb, retry_config=settings.error_handling.retry,
        outage=OutageTracker(marker=layout.state / HEAVYDB_OUTAGE_MARKER, alert=alert),
    )
    outcome = run_job(
        request,
        config=optimizer,
        checkpoint_dir=layout.checkpoints,
        error_config=settings.error_handling,
        resume=bool(payload.get("resume")),
        progress=heartbeat,
        stop_check=stop_check,
        source=source,
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
        "backend": summary["data"]["backend"]["name"],
    }
