"""Cost of one JSON log line with context, against a plain stdlib logging line.

Both write to a real file in a temporary folder. The JSON cases go through the handlers that
``setup_error_logging`` installs (context filter, JSON formatter, rotating file handler; the
console handler is set to CRITICAL so it only costs its level check); the baseline is a
logger with one ``FileHandler`` and a ``%(asctime)s %(levelname)s %(name)s %(message)s``
format. Cases are interleaved within each run so that machine noise hits them alike.

Run: ``.venv/bin/python benchmarks/bench_logging.py [--lines N] [--runs R]``.
Target: under 50 µs per JSON line.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon.error_handling.config import LoggingConfig
from daemon.error_handling.context_logger import ContextLogger, bind_context
from daemon.error_handling.log_setup import setup_error_logging

#: The per-line budget the design sets for a JSON line with context.
TARGET_US = 50.0


def time_lines(log_line: Callable[[int], None], lines: int) -> float:
    """Microseconds per line for ``lines`` calls of ``log_line``."""
    start = time.perf_counter()
    for n in range(lines):
        log_line(n)
    return (time.perf_counter() - start) / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=5000, help="lines per case per run")
    parser.add_argument("--runs", type=int, default=7, help="runs; the median is reported")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_logging_") as folder:
        root = Path(folder)
        config = LoggingConfig(
            console_log_level="CRITICAL", file_log_level="INFO", max_log_size_mb=4096
        )
        handle = setup_error_logging(config, log_directory=root / "json")
        plain_logger = logging.getLogger("bench.module")
        context_logger = ContextLogger("bench.context")

        baseline_logger = logging.getLogger("bench.baseline")
        baseline_logger.propagate = False  # only its own plain handler
        baseline_logger.setLevel(logging.INFO)
        baseline_handler = logging.FileHandler(root / "baseline.log", encoding="utf-8")
        baseline_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
        baseline_logger.addHandler(baseline_handler)

        cases: dict[str, Callable[[int], None]] = {
            "stdlib line, plain FileHandler (baseline)": lambda n: baseline_logger.info(
                "evaluated generation %d of %s", n, "GA"
            ),
            "JSON + context, logging.getLogger()": lambda n: plain_logger.info(
                "evaluated generation %d of %s", n, "GA"
            ),
            "JSON + context, ContextLogger": lambda n: context_logger.info(
                "evaluated generation %d of %s", n, "GA"
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in cases}
        try:
            with bind_context(job_id="job-20260101-0001", stage="algorithm", attempt=1):
                for case in cases.values():  # warm-up: imports, file creation, caches
                    time_lines(case, 200)
                for _ in range(options.runs):
                    for name, case in cases.items():
                        samples[name].append(time_lines(case, options.lines))
        finally:
            baseline_logger.removeHandler(baseline_handler)
            baseline_handler.close()
            handle.close()

    baseline = statistics.median(next(iter(samples.values())))
    width = max(len(name) for name in cases)
    print(f"{options.runs} runs x {options.lines} lines per case; Python {sys.version.split()[0]}")
    print(f"{'case':<{width}}  {'median µs/line':>14}  {'min':>7}  {'ratio':>6}  target")
    for name, values in samples.items():
        median = statistics.median(values)
        verdict = "" if "baseline" in name else ("ok" if median < TARGET_US else "OVER")
        print(
            f"{name:<{width}}  {median:>14.2f}  {min(values):>7.2f}  "
            f"{median / baseline:>5.2f}x  {verdict}"
        )


if __name__ == "__main__":
    main()
