"""``heavy-optimizer run-job``: one optimisation, in this process, without the daemon.

Analysts and operators use it to reproduce a job by hand; it writes the same output folder
and checkpoints the daemon would, under ``--work-dir`` (a local stand-in for the share).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from daemon.config import load_settings
from daemon.error_handling.errors import DataLoadError, JobSpecError
from daemon.jobs import (
    JOB_ID_PATTERN,
    MAX_PORTFOLIO_SIZE,
    MIN_PORTFOLIO_SIZE,
    portfolio_size_from_csv_name,
    sanitize_job_id,
)
from daemon.workflow.algorithms import ALGORITHMS
from daemon.workflow.fitness import FITNESS_METRICS

EXIT_MISSING_INPUT = 2


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("run-job", help="run one optimisation job now, without the daemon")
    parser.add_argument("--input", required=True, type=Path, help="the strategy P&L CSV")
    parser.add_argument("--portfolio-size", default=None,
                        help=f"N or MIN-MAX ({MIN_PORTFOLIO_SIZE}..{MAX_PORTFOLIO_SIZE}); "
                             "default from the file's _ps<N> suffix or the config")
    parser.add_argument("--algorithms", default=None, help="comma-separated, e.g. GA,SA,HC")
    parser.add_argument("--fitness", default=None, help="fitness metric (default: config)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--job-id", default=None, help="default: the input file's stem")
    parser.add_argument("--output", type=Path, default=None,
                        help="output folder (default: WORK_DIR/output/JOB_ID)")
    parser.add_argument("--work-dir", type=Path, default=Path("heavy_optimizer_runs"),
                        help="holds output/ and checkpoints/ (default: ./heavy_optimizer_runs)")
    parser.add_argument("--config-dir", type=Path, default=None)
    parser.add_argument("--resume", action="store_true",
                        help="continue after the last completed stage of this job id")
    parser.add_argument("--quiet", action="store_true", help="print only the result line")
    parser.add_argument("--verbose", action="store_true", help="log every stage (INFO)")
    parser.set_defaults(handler=main)


def parse_portfolio_sizes(text: str) -> tuple[int, ...]:
    """``"35"`` → (35,); ``"35-60"`` → 35..60. Refuses sizes outside 10..100."""
    parts = text.split("-")
    try:
        low, high = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, -1)
    except ValueError:
        low, high = 0, -1
    if not (MIN_PORTFOLIO_SIZE <= low <= high <= MAX_PORTFOLIO_SIZE):
        raise JobSpecError(
            f"--portfolio-size {text!r}: give N or MIN-MAX with "
            f"{MIN_PORTFOLIO_SIZE} <= MIN <= MAX <= {MAX_PORTFOLIO_SIZE}"
        )
    return tuple(range(low, high + 1))


def main(args: argparse.Namespace) -> int:
    # Imported here, not at the top: every command module is imported to build the parser,
    # and the daemon (`run`) must not load the data stack (pandas, matplotlib: ~100 MB).
    from daemon.workflow.pipeline import JobRequest, run_job

    if not args.input.is_file():
        print(f"heavy-optimizer run-job: input file not found: {args.input}", file=sys.stderr)
        return EXIT_MISSING_INPUT
    settings = load_settings(args.config_dir)
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    job_id = args.job_id or sanitize_job_id(args.input.stem)
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise JobSpecError(f"--job-id {job_id!r}: use 1-128 letters, digits, '.', '_' or '-'")
    size_text = args.portfolio_size or str(
        portfolio_size_from_csv_name(args.input.stem) or settings.jobs.default_portfolio_size
    )
    algorithms = None
    if args.algorithms:
        algorithms = tuple(a.strip().upper() for a in args.algorithms.split(",") if a.strip())
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown:
            raise JobSpecError(f"--algorithms: unknown {', '.join(unknown)}; allowed: "
                               f"{', '.join(ALGORITHMS)}")
    output_dir = args.output or args.work_dir / "output" / job_id
    request = JobRequest.resolve(
        settings.optimizer,
        job_id=job_id,
        input_path=args.input,
        output_dir=output_dir,
        portfolio_sizes=parse_portfolio_sizes(size_text),
        algorithms=algorithms,
        fitness_metric=args.fitness,
        seed=args.seed,
    )
    if request.fitness_metric not in FITNESS_METRICS:
        raise JobSpecError(f"--fitness {request.fitness_metric!r} is unknown; allowed: "
                           f"{', '.join(FITNESS_METRICS)}")
    try:
        outcome = run_job(
            request,
            config=settings.optimizer,
            checkpoint_dir=args.work_dir / "checkpoints",
            error_config=settings.error_handling,
            resume=args.resume,
        )
    except DataLoadError as exc:
        print(f"heavy-optimizer run-job: {exc.message}", file=sys.stderr)
        return EXIT_MISSING_INPUT
    best = outcome.best
    assert best is not None  # the report stage raises when no algorithm succeeded
    summary = json.loads((output_dir / "summary.json").read_text())
    print(f"best: {best.algorithm} k={best.portfolio_size} fitness={best.best_fitness:.4f} "
          f"raw {outcome.fitness_metric}={best.raw_metric:.4f}; results in {output_dir}")
    if not args.quiet:
        for name in summary["best"]["strategies"]:
            print(f"  {name}")
    return 0
