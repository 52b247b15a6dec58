"""``heavy-optimizer status``: the share as the daemon's registries and status files show it."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main
from daemon.share import ShareLayout
from daemon.status import StatusBoard, iso_utc
from tests.paths import REPO_ROOT
from tests.unit.commands.cli_support import (
    Cli,
    claim,
    complete_job,
    daemon_registry,
    fail_job,
    queue_job,
)

pytestmark = pytest.mark.timeout(30)


def publish(share: ShareLayout, *, pid: int, breaker_open: bool = False,
            resource_wait: str | None = None, age_seconds: float = 0.0) -> None:
    """The daemon summary, written by the daemon's own status board ``age_seconds`` ago."""
    StatusBoard(share, clock=lambda: time.time() - age_seconds).summary({
        "host": socket.gethostname(), "pid": pid, "started_at": iso_utc(time.time() - 60),
        "state": "running", "counts": daemon_registry(share).counts(), "running": 1,
        "running_jobs": [],
        "circuit_breaker": {"open": breaker_open, "consecutive_failures": 5 if breaker_open
                            else 0, "open_until": iso_utc(time.time() + 300) if breaker_open
                            else None},
        "resource_wait": resource_wait}, force=True)


def busy_share(share: ShareLayout) -> None:
    """One job in each registry; the running one has a live status with progress."""
    queue_job(share, "q1")
    record = claim(share, "run1")
    StatusBoard(share).job("run1", {
        "state": "running", "stage": "algorithm:GA", "progress": 0.42, "attempts": 1,
        "heartbeat_at": iso_utc(time.time() - 3), "host": socket.gethostname(), "pid": 4242},
        force=True)
    daemon_registry(share).heartbeat(record, pid=4242)
    waiting = claim(share, "again")
    daemon_registry(share).schedule_retry(waiting, delay_seconds=300, resume=True,
                                          adjustments=None,
                                          error={"code": "JOB_CRASHED", "message": "killed"})
    fail_job(share, "bad")
    complete_job(share, "good", {"output_dir": "output/good", "best_algorithm": "SA",
                                 "best_fitness": 1.2345, "portfolio_size": 10})


def test_overview_shows_counts_daemon_and_running_jobs(cli: Cli, share: ShareLayout) -> None:
    # Given: a busy share and a daemon (this process) that published its summary
    busy_share(share)
    publish(share, pid=os.getpid(), breaker_open=True, resource_wait="memory 95% > 90%")
    # When
    result = cli("status")
    # Then
    assert result.code == 0, result.err
    out = result.out
    assert "jobs: 1 queued, 1 running, 1 waiting for retry, 1 completed, 1 failed" in out
    assert f"daemon: running on {socket.gethostname()} pid {os.getpid()}" in out
    assert "circuit breaker: OPEN" in out and "memory 95% > 90%" in out
    assert re.search(r"run1: attempt 1, stage algorithm:GA, 42%, heartbeat \d+ s ago", out)
    assert re.search(r"again: attempt 1 failed \(JOB_CRASHED\), next attempt in \d+ s", out)


def test_overview_as_json(cli: Cli, share: ShareLayout) -> None:
    busy_share(share)
    result = cli("status", "--json")
    data: dict[str, Any] = json.loads(result.out)
    assert data["counts"] == {"queue": 1, "processing": 1, "retry": 1, "completed": 1,
                              "failed": 1}
    assert data["daemon"] is None
    assert [job["job_id"] for job in data["running"]] == ["run1"]
    assert data["running"][0]["progress"] == 0.42
    assert data["retrying"][0]["last_error"]["code"] == "JOB_CRASHED"


def test_a_daemon_that_is_gone_is_shown_as_not_running(cli: Cli, share: ShareLayout) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=10)
    publish(share, pid=gone.pid)
    result = cli("status")
    assert "daemon: NOT RUNNING" in result.out


def test_a_daemon_that_stopped_publishing_is_flagged(cli: Cli, share: ShareLayout) -> None:
    publish(share, pid=os.getpid(), age_seconds=600)
    result = cli("status")
    assert "daemon: NOT UPDATING" in result.out and "last update 10 min ago" in result.out


@pytest.mark.parametrize(("job_id", "expected"), [
    ("q1", [r"job q1: queued \(jobs/queue/q1.json\)", "attempts so far: 0"]),
    ("run1", ["job run1: running", "lease: host", "job pid 4242",
              r"live status: running, stage algorithm:GA, 42%, heartbeat \d+ s ago"]),
    ("again", ["waiting for a retry", r"next attempt in \d+ s",
               "last error: JOB_CRASHED: killed"]),
    ("bad", [r"job bad: failed \(jobs/failed/bad.json\)",
             r"error: DATA_LOAD_ERROR \(stage load\): input_file 'data.csv' has no rows",
             r"after 1 attempt\(s\)"]),
    ("good", ["job good: completed", "best: SA, fitness 1.2345, portfolio size 10",
              "output: {root}/output/good"]),
])
def test_one_job_wherever_it_is(cli: Cli, share: ShareLayout, job_id: str,
                                expected: list[str]) -> None:
    busy_share(share)
    result = cli("status", job_id)
    assert result.code == 0, result.err
    for pattern in expected:
        assert re.search(pattern.replace("{root}", re.escape(str(share.root))), result.out)


def test_one_job_as_json_and_an_unknown_one(cli: Cli, share: ShareLayout) -> None:
    busy_share(share)
    data = json.loads(cli("status", "bad", "--json").out)
    assert data["registry"] == "failed" and data["final"]["error"]["code"] == "DATA_LOAD_ERROR"
    unknown = cli("status", "ghost")
    assert unknown.code == 1 and "job ghost not found" in unknown.err


def test_the_share_comes_from_the_config_when_not_given(
        share: ShareLayout, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given: only a config folder naming the share
    monkeypatch.delenv("HEAVY_OPTIMIZER_SHARE_ROOT", raising=False)
    config = tmp_path / "site-config"
    config.mkdir()
    (config / "job_processor_config.json").write_text(
        json.dumps({"job_processor": {"share_root": str(share.root)}}))
    queue_job(share, "q1")
    # When
    code = main(["status", "--config-dir", str(config)])
    # Then
    assert code == 0 and "1 queued" in capsys.readouterr().out
    # And: the environment variable the service sets wins over the file
    monkeypatch.setenv("HEAVY_OPTIMIZER_SHARE_ROOT", str(tmp_path / "not-a-share"))
    assert main(["status", "--config-dir", str(config)]) == 2
    assert "not a share" in capsys.readouterr().err


def test_status_as_a_console_command_reads_what_submit_wrote(
        share: ShareLayout, config_dir: Path, tmp_path: Path) -> None:
    csv = tmp_path / "mine.csv"
    csv.write_text((share.input / "data.csv").read_text())
    common = ["--share", str(share.root), "--config-dir", str(config_dir)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daemon.cli", *args, *common],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)

    submitted = run("submit", str(csv), "--quiet")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    status = run("status", job_id, "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["registry"] == "queue"
    missing = run("status", "nobody")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
