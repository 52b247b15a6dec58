"""The quick-start demo: a real daemon on a local folder used as the share.

Starts ``heavy-optimizer run`` on ``./demo_share`` with the shipped config, drops the bundled
sample CSV into ``input/`` the way an analyst's copy would (temp name, then rename), waits for
the job's final record, prints where the portfolio and the charts are, and stops the daemon
with SIGTERM (its warm shutdown). Exit status 0 only when the job completed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "samples" / "sensex_82x500.csv"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--share", type=Path, default=ROOT / "demo_share")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    share = args.share.resolve()
    job_id = f"sensex_demo_{time.strftime('%Y%m%d_%H%M%S')}_ps10"
    print(f"Demo share: {share}")
    share.mkdir(parents=True, exist_ok=True)
    console = (share / "demo_daemon_console.log").open("ab")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run", "--config-dir", str(ROOT / "config"),
         "--share", str(share)],
        cwd=ROOT, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        status = share / "jobs" / "status" / "current_status.json"
        _wait(lambda: status.is_file(), args.timeout, "the daemon to start")
        incoming = share / "input" / f".{job_id}.csv.tmp"
        shutil.copyfile(SAMPLE, incoming)
        os.replace(incoming, share / "input" / f"{job_id}.csv")
        print(f"Dropped {SAMPLE.name} as input/{job_id}.csv; waiting for the result...")
        completed = share / "jobs" / "completed" / f"{job_id}.json"
        failed = share / "jobs" / "failed" / f"{job_id}.json"
        _wait(lambda: completed.is_file() or failed.is_file(), args.timeout, "the job")
        if failed.is_file():
            record = json.loads(failed.read_text())
            print(f"Job failed: {record['error']['message']}")
            return 1
        record = json.loads(completed.read_text())
        out = share / record["output_dir"]
        print(f"\nCompleted in {record['execution_time']:.1f} s (attempts: {record['attempts']}).")
        print(f"Best: {record['best_algorithm']} fitness {record['best_fitness']:.3f} "
              f"with {record['portfolio_size']} strategies:")
        for name in record["best_portfolio"]:
            print(f"  {name}")
        print(f"\nPortfolio:  {out / 'best_portfolio.csv'}")
        print(f"Summary:    {out / 'optimization_summary.txt'}")
        print(f"Charts:     {out / 'equity_curve.png'}, {out / 'drawdown.png'}, "
              f"{out / 'algorithm_comparison.png'}")
        print(f"Daemon log: {share / 'logs' / 'heavy_optimizer.log'}")
        return 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        console.close()
        print("Daemon stopped.")


def _wait(ready: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
