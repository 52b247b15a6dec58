"""Whole-job benchmark: ``heavy-optimizer run-job`` end to end, as an analyst would run it.

For each input (the bundled 82 x 2,500 extract and the 82 x 25,544 production-scale file) it
runs the full job (all eight algorithms, default budgets, k = 35) in a fresh process and
reports wall time, CSV load time, per-algorithm seconds/evaluations/fitness and peak RSS.
Then it runs the same job with error handling on (checkpoints after every stage, JSON
context logging) and off (``error_handling.enabled = false``, logging at WARNING), alternating
the two, and prints the overhead.

    python benchmarks/bench_job.py [--production PATH] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from datasets import REPO, SENSEX_2500, production_csv


def run_job(csv: Path, work: Path, config_dir: Path, job_id: str) -> tuple[float, float, dict]:
    """One job in a child process: (wall seconds, peak RSS MB of that child, summary)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "daemon.cli", "run-job", "--input", str(csv), "--portfolio-size",
         "35", "--work-dir", str(work), "--job-id", job_id, "--config-dir", str(config_dir),
         "--quiet"],
        check=True, stdout=subprocess.DEVNULL, cwd=REPO,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    wall = time.perf_counter() - start
    # ru_maxrss of children is the max over all children so far: report it only when it grew.
    peak_mb = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before) / 1024
    summary = json.loads((work / "output" / job_id / "summary.json").read_text())
    return wall, peak_mb, summary


def _config_dirs(root: Path) -> tuple[Path, Path]:
    on = root / "on"
    shutil.copytree(REPO / "config", on)
    off = root / "off"
    shutil.copytree(REPO / "config", off)
    eh = json.loads((off / "error_handling_config.json").read_text())
    eh["error_handling"]["enabled"] = False
    eh["logging"]["console_log_level"] = "WARNING"
    (off / "error_handling_config.json").write_text(json.dumps(eh))
    return on, off


def detail_table(name: str, wall: float, peak_mb: float, summary: dict) -> None:
    timings = summary["timings_seconds"]
    print(f"\n{name}: {summary['data']['days']} days x {summary['data']['strategies']} "
          f"strategies, k=35")
    print(f"  whole job wall {wall:.2f} s (process start, imports, load, 8 algorithms, report); "
          f"peak RSS {peak_mb:.0f} MB; CSV load {timings['load']:.2f} s")
    print(f"  {'algorithm':<10}{'seconds':>9}{'evals':>10}{'best fitness':>14}{'raw ratio':>11}")
    for run in summary["algorithms"]:
        print(f"  {run['algorithm']:<10}{run['seconds']:>9.2f}{run['evaluations']:>10,}"
              f"{run['best_fitness']:>14.3f}{run['raw_metric']:>11.3f}")
    best = summary["best"]
    print(f"  best: {best['algorithm']} fitness {best['fitness']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--production", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3, help="runs per on/off variant")
    args = parser.parse_args()
    files = {"sensex_82x2500": SENSEX_2500, "production_82x25544": production_csv(args.production)}
    with tempfile.TemporaryDirectory(dir=REPO) as tmp:
        root = Path(tmp)
        on, off = _config_dirs(root)
        for name, csv in files.items():
            wall, peak, summary = run_job(csv, root / "work", on, f"{name}-detail")
            detail_table(name, wall, peak, summary)
        print("\nError handling on vs off (whole job, production file, median of "
              f"{args.repeat} alternating runs)")
        csv = files["production_82x25544"]
        walls: dict[str, list[float]] = {"on": [], "off": []}
        for i in range(args.repeat):
            for label, config in (("off", off), ("on", on)):
                wall, _, _ = run_job(csv, root / "work", config, f"overhead-{label}-{i}")
                walls[label].append(wall)
        base = statistics.median(walls["off"])
        print(f"  {'variant':<40}{'median s':>10}{'ratio':>8}")
        print(f"  {'error handling off (baseline)':<40}{base:>10.2f}{1.0:>8.3f}")
        median_on = statistics.median(walls["on"])
        print(f"  {'checkpoints + context logging on':<40}{median_on:>10.2f}"
              f"{median_on / base:>8.3f}")


if __name__ == "__main__":
    main()
