"""``heavy-optimizer retry`` and ``cancel`` on records the real registry wrote."""

from __future__ import annotations

import json
import os

import pytest

from daemon.intake import IntakeScanner
from daemon.share import ShareLayout
from tests.unit.commands.cli_support import (
    Cli,
    claim,
    complete_job,
    daemon_registry,
    fail_job,
    queue_job,
    read,
)

pytestmark = pytest.mark.timeout(30)


def ready_jobs(share: ShareLayout, *, rejects: int = 0) -> list[str]:
    """Job ids the daemon's intake would claim now; asserts how many drops it rejected."""
    report = IntakeScanner(share, daemon_registry(share), settle_seconds=0,
                           auto_jobs_from_csv=False, default_portfolio_size=35).scan()
    assert len(report.rejected) == rejects
    return [entry.job_id for entry in report.jobs]


# -- retry ----------------------------------------------------------------------------------


def test_retry_moves_a_failed_job_back_with_a_fresh_budget(cli: Cli, share: ShareLayout) -> None:
    # Given: a job (with a field only its runner knows) that failed after an attempt
    failed = fail_job(share, "nightly", portfolio_size=[10, 12], sleep_seconds=3)
    assert failed["attempts"] == 1
    # When
    result = cli("retry", "nightly")
    # Then: moved (not copied), spec kept, attempts reset, not resumed, history says who
    assert result.code == 0, result.err
    assert "moved from failed/" in result.out
    assert not (share.failed / "nightly.json").exists()
    record = read(share.queue / "nightly.json")
    assert record["attempts"] == 0 and record["resume"] is False
    assert record["spec"]["portfolio_size"] == [10, 12] and record["spec"]["sleep_seconds"] == 3
    assert "error" not in record["spec"] and "history" not in record["spec"]
    last = record["history"][-1]
    assert last["outcome"] == "retried" and last["previous_status"] == "failed"
    assert last["error"]["code"] == "DATA_LOAD_ERROR"
    # And: the daemon's intake takes it (a copy left in failed/ would be a duplicate id)
    assert ready_jobs(share) == ["nightly"]
    again = daemon_registry(share).claim(
        next(e for e in daemon_registry(share).queued() if e.job_id == "nightly"))
    assert again is not None and again.attempts == 1 and again.portfolio_sizes == [10, 11, 12]


def test_retry_of_a_completed_sweep_restores_the_spec_without_the_results(
        cli: Cli, share: ShareLayout) -> None:
    # Given: a completed sweep; the result's portfolio_size (best size) overwrote the spec's
    result = {"output_dir": "output/sweep", "best_algorithm": "GA", "best_fitness": 2.5,
              "portfolio_size": 11, "best_portfolio": ["S1", "S2"]}
    completed = complete_job(share, "sweep", result, portfolio_size=[10, 12], note="keep me")
    assert completed["portfolio_size"] == 11
    # When
    assert cli("retry", "sweep").code == 0
    # Then: the original request is back, the old results are not part of it
    spec = read(share.queue / "sweep.json")["spec"]
    assert spec["portfolio_size"] == [10, 12] and spec["note"] == "keep me"
    assert not {"best_algorithm", "best_fitness", "best_portfolio", "status",
                "output_dir"} & set(spec)
    assert not (share.completed / "sweep.json").exists()


def test_retry_refuses_unfinished_and_unknown_jobs(cli: Cli, share: ShareLayout) -> None:
    queue_job(share, "waiting")
    claim(share, "running")
    for job_id, word in (("waiting", "queued"), ("running", "running"), ("ghost", "not found")):
        result = cli("retry", job_id)
        assert result.code == 1 and word in result.err, result.err
    assert (share.queue / "waiting.json").exists() and (share.processing / "running.json").exists()
    assert os.listdir(share.failed) == [] and os.listdir(share.completed) == []


def test_retry_refuses_a_job_whose_spec_is_no_longer_valid(cli: Cli, share: ShareLayout) -> None:
    # Given: a job rejected at intake (its spec was never valid)
    queue_job(share, "broken", portfolio_size=500)
    assert ready_jobs(share, rejects=1) == []
    # When / Then: a usage error naming the field; the record stays where it is
    result = cli("retry", "broken")
    assert result.code == 2 and "portfolio_size" in result.err
    assert (share.failed / "broken.json").exists()


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_of_a_queued_job_fails_it_as_the_registry_does(
        cli: Cli, share: ShareLayout) -> None:
    # Given: a client's job file whose name is not its job id, and a failure for comparison
    queue_job(share, "abc", name="tonight.json", seed=3)
    reference = fail_job(share, "other")
    # When
    result = cli("cancel", "abc")
    # Then: failed/abc.json with the cancel error; the drop is gone and nothing will run
    assert result.code == 0, result.err
    assert "cancelled while queued" in result.out
    record = read(share.failed / "abc.json")
    assert record["status"] == "failed" and record["seed"] == 3
    error = record["error"]
    assert error["code"] == "JOB_CANCELLED" and error["stage"] == "queue"
    assert error["message"].startswith("cancelled by ") and "heavy-optimizer cancel" in (
        error["message"])
    assert set(reference) <= set(record)  # the same record shape as registry.fail writes
    assert os.listdir(share.queue) == [] and ready_jobs(share) == []


def test_cancel_of_a_job_waiting_for_a_retry(cli: Cli, share: ShareLayout) -> None:
    record = claim(share, "flaky")
    daemon_registry(share).schedule_retry(record, delay_seconds=600, resume=True,
                                          adjustments=None,
                                          error={"code": "JOB_CRASHED", "message": "killed"})
    result = cli("cancel", "flaky")
    assert result.code == 0 and "waiting for a retry" in result.out
    final = read(share.failed / "flaky.json")
    assert final["error"]["code"] == "JOB_CANCELLED" and final["attempts"] == 1
    assert [entry["outcome"] for entry in final["history"]] == ["retry", "failed"]
    assert os.listdir(share.retry) == []


def test_cancel_of_a_running_job_leaves_a_request_for_the_daemon(
        cli: Cli, share: ShareLayout) -> None:
    claim(share, "busy")
    first = cli("cancel", "busy")
    assert first.code == 0 and "asked the daemon to stop it" in first.out
    request = share.cancel_requests / "busy"
    assert json.loads(request.read_text())["job_id"] == "busy"
    assert (share.processing / "busy.json").exists()  # only the daemon moves it
    second = cli("cancel", "busy")
    assert second.code == 0 and "already waiting" in second.out
    waited = cli("cancel", "busy", "--wait", "--timeout", "0.2")
    assert waited.code == 3 and "not stopped within 0.2 s" in waited.out


def test_cancel_of_unknown_or_finished_jobs_fails(cli: Cli, share: ShareLayout) -> None:
    fail_job(share, "done")
    unknown = cli("cancel", "ghost")
    assert unknown.code == 1 and "not found" in unknown.err
    finished = cli("cancel", "done")
    assert finished.code == 1 and "already failed" in finished.err
    bad = cli("cancel", "../etc")
    assert bad.code == 2 and "not a job id" in bad.err
