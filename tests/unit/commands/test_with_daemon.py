"""The verbs against a real ``heavy-optimizer run`` process: submit --wait, retry, cancel.

The command line runs as a console command (``python -m daemon.cli``), as an operator types
it, while the daemon runs jobs through the real worker protocol (fast test job runners).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.share import ShareLayout
from tests.corpus import GOOD_CSV
from tests.daemon_harness import drop_job, make_config_dir, record, running_daemon, wait_for
from tests.paths import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def share(tmp_path: Path) -> ShareLayout:
    layout = ShareLayout(tmp_path / "share")
    layout.ensure()
    return layout


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return make_config_dir(tmp_path / "config")


def heavy_optimizer(share: ShareLayout, config: Path,
                    *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args, "--share", str(share.root), "--config-dir",
         str(config)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=90)


def retried_and_completed(share: ShareLayout, job_id: str) -> dict[str, Any] | None:
    done = record(share.root, "completed", job_id)
    if done and any(entry.get("outcome") == "retried" for entry in done["history"]):
        return done
    return None


def test_submit_wait_then_retry_runs_the_job_again(
        share: ShareLayout, config: Path, tmp_path: Path) -> None:
    csv = tmp_path / "book_ps10.csv"
    csv.write_text(GOOD_CSV)
    with running_daemon(config, share.root, runner="tests.jobs:quick_job"):
        # When: an analyst submits and waits
        submitted = heavy_optimizer(share, config, "submit", str(csv), "--wait", "--timeout",
                                    "60")
        # Then: the job completed; the output is named
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        assert "job book_ps10 completed after 1 attempt(s)" in submitted.stdout
        status = heavy_optimizer(share, config, "status", "book_ps10")
        assert status.returncode == 0 and "job book_ps10: completed" in status.stdout
        # When: the operator runs it again
        retried = heavy_optimizer(share, config, "retry", "book_ps10")
        assert retried.returncode == 0, retried.stderr
        # Then: it runs again as a fresh job, and its history says why
        final = wait_for(lambda: retried_and_completed(share, "book_ps10"), timeout=60,
                         message="the retried job to complete")
        assert final is not None and final["attempts"] == 1
        overview = heavy_optimizer(share, config, "status")
        assert "0 queued, 0 running, 0 waiting for retry, 1 completed, 0 failed" in (
            overview.stdout)
    # And: the CSV copied into input/ never became a job of its own
    assert [p.name for p in share.completed.iterdir()] == ["book_ps10.json"]


def test_cancel_stops_a_running_job_for_good(share: ShareLayout, config: Path) -> None:
    (share.input / "data.csv").write_text(GOOD_CSV)
    with running_daemon(config, share.root, runner="tests.jobs:sleepy_job"):
        # Given: a long job the daemon is running
        drop_job(share.root, "long", sleep_seconds=60)
        wait_for(lambda: record(share.root, "processing", "long"), timeout=30,
                 message="the job to start")
        # When
        cancelled = heavy_optimizer(share, config, "cancel", "long", "--wait", "--timeout", "60")
        # Then: the daemon stopped it and failed it as cancelled, without a retry
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        assert "asked the daemon to stop it" in cancelled.stdout
        assert "JOB_CANCELLED" in cancelled.stdout
        final = record(share.root, "failed", "long")
        assert final is not None and final["attempts"] == 1
        assert final["error"]["code"] == "JOB_CANCELLED"
        assert not list(share.cancel_requests.iterdir())
        assert not list(share.retry.iterdir()) and not list(share.processing.iterdir())
