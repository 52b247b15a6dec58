"""Intake against a real daemon process: floods, broken drops, slow uploads, cancel, breaker.

Each test starts ``heavy-optimizer run`` as systemd would and drops files on its share the
way clients do (all at once, broken, slowly in chunks, preallocated by a Windows copy), then
asserts what became of every file and that the daemon kept serving.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.corpus import BROKEN_INPUTS, VALID_FILES, VALID_JOB_IDS, BrokenInput, write_files
from tests.daemon_harness import drop_job, make_config_dir, record, running_daemon, wait_for
from tests.paths import SAMPLES_DIR
from tests.servers import SlackServer, slack_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

#: Real optimisation jobs kept small: two cheap algorithms, exact budgets from the harness.
QUICK_ALGORITHMS = {"optimizer": {"algorithms": ["RS", "HC"]}}


@pytest.fixture
def share(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "input").mkdir(parents=True)
    shutil.copy(SAMPLES_DIR / "sensex_82x500.csv", root / "input" / "data.csv")
    return root


def _final(share: Path, job_id: str) -> dict[str, Any] | None:
    return record(share, "completed", job_id) or record(share, "failed", job_id)


def _wait_final(share: Path, job_id: str, *, timeout: float) -> dict[str, Any]:
    """The job's completed/ or failed/ record, once there is one."""
    final = wait_for(lambda: _final(share, job_id), timeout=timeout, message=f"{job_id} final")
    assert final is not None
    return final


def _json(path: Path) -> dict[str, Any]:
    try:
        value: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return value


def _summary(share: Path) -> dict[str, Any]:
    return _json(share / "jobs" / "status" / "current_status.json")


def _records(share: Path, registry: str) -> list[dict[str, Any]]:
    return [_json(p) for p in sorted((share / "jobs" / registry).glob("*.json"))]


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end at t closes before a start at t opens)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def _slack_config(slack: SlackServer) -> dict[str, Any]:
    return {"notifications": {"enabled": True, "slack": {
        "enabled": True, "webhook_url": slack.url, "timeout_seconds": 5}}}


def _subjects(slack: SlackServer) -> list[str]:
    return [str(body.get("text")) for body in slack.bodies if isinstance(body, dict)]


# -- a flood ---------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_two_hundred_jobs_at_once_never_exceed_the_pool(tmp_path: Path, share: Path) -> None:
    # Given a daemon allowed two jobs at a time
    config = make_config_dir(tmp_path / "cfg", job_processor={"max_concurrent_jobs": 2})
    job_ids = [f"flood-{i:03d}" for i in range(200)]
    sampled_running: list[int] = []
    with running_daemon(config, share, runner="tests.jobs:timed_job") as daemon:
        # When 200 jobs are dropped at once
        for job_id in job_ids:
            drop_job(share, job_id)

        def all_completed() -> bool:
            summary = _summary(share)
            if summary:
                sampled_running.append(summary["running"])
                sampled_running.append(len(summary["running_jobs"]))
            return len(list((share / "jobs" / "completed").glob("*.json"))) == len(job_ids)

        wait_for(all_completed, timeout=200, interval=0.02, message="200 completed")
        assert daemon.proc is not None and daemon.proc.poll() is None
    # Then every job completed once, and never more than two ran at the same time
    records = _records(share, "completed")
    assert sorted(r["job_id"] for r in records) == job_ids
    assert all(r["status"] == "completed" and r["attempts"] == 1 for r in records)
    assert not list((share / "jobs" / "failed").glob("*.json"))
    results = [_json(share / "output" / job_id / "result.json") for job_id in job_ids]
    intervals = [(r["start_monotonic"], r["end_monotonic"]) for r in results]
    assert _max_overlap(intervals) == 2  # the pool was used, and its bound held
    assert sampled_running and max(sampled_running) <= 2


# -- broken drops ----------------------------------------------------------------------------


def _failure_of(share: Path, broken: BrokenInput) -> dict[str, Any] | None:
    """The failed/ record a broken drop produced, found the way an analyst would look."""
    name = Path(broken.drop).name
    for item in _records(share, "failed"):
        by_file = item.get("source_file") == name
        by_csv = broken.drop.startswith("input/") and item.get("job_type") == "csv_drop" \
            and item.get("input_file") == name
        by_run = broken.stage == "run" and item.get("job_id") == broken.name
        if by_file or by_csv or by_run:
            return item
    return None


def test_broken_drops_fail_with_their_reason_and_valid_jobs_complete(
    tmp_path: Path, share: Path
) -> None:
    # Given a running daemon with real optimisation jobs (small budgets) and the default
    # circuit breaker: the seven broken CSVs fail in a row, but bad input must not pause
    # everyone else's jobs
    config = make_config_dir(tmp_path / "cfg", optimizer=QUICK_ALGORITHMS,
                             job_processor={"input_wait_seconds": 2.0})
    assert len([b for b in BROKEN_INPUTS if b.stage == "intake"]) >= 25
    with running_daemon(config, share) as daemon:
        # When the whole corpus and the valid jobs land on the share together
        for broken in BROKEN_INPUTS:
            write_files(share, broken.files)
        write_files(share, VALID_FILES)

        def undecided() -> list[str]:
            return [b.name for b in BROKEN_INPUTS if not _failure_of(share, b)] + [
                job_id for job_id in VALID_JOB_IDS if not record(share, "completed", job_id)]

        try:
            wait_for(lambda: not undecided(), timeout=150, interval=0.2, message="decisions")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; still undecided: {undecided()}") from None
        # And the daemon still serves a job dropped afterwards
        drop_job(share, "after_the_storm", input_file="good.csv", portfolio_size=12)
        after = _wait_final(share, "after_the_storm", timeout=60)
        assert daemon.proc is not None and daemon.proc.poll() is None
    # Then each broken drop failed with its own reason, at the stage it belongs to
    problems = []
    for broken in BROKEN_INPUTS:
        failure = _failure_of(share, broken)
        assert failure is not None
        error = failure["error"]
        if broken.reason not in error["message"] or failure["status"] != "failed":
            problems.append(f"{broken.name}: {error['message']!r}")
        expected_stage = "intake" if broken.stage == "intake" else None
        if expected_stage and error["stage"] != expected_stage:
            problems.append(f"{broken.name}: stage {error['stage']!r}")
        if broken.stage == "run" and (failure["attempts"] != 1 or error["stage"] == "intake"):
            problems.append(f"{broken.name}: ran {failure['attempts']} time(s), "
                            f"stage {error['stage']!r}")
    assert not problems, "\n".join(problems)
    # And every valid job completed with a real result
    for job_id in VALID_JOB_IDS:
        done = record(share, "completed", job_id)
        assert done is not None and done["attempts"] == 1
        assert (share / "output" / job_id / "summary.json").is_file()
    assert after["status"] == "completed" and after["portfolio_size"] == 12
    assert not list((share / "jobs" / "queue").iterdir())
    assert not list((share / "jobs" / "processing").iterdir())


# -- slow uploads ----------------------------------------------------------------------------


def test_job_file_written_slowly_in_chunks_becomes_one_job(tmp_path: Path, share: Path) -> None:
    # Given a daemon that rescans often (every 0.2 s) and settles files for 1.5 s
    config = make_config_dir(tmp_path / "cfg", job_processor={"settle_seconds": 1.5})
    text = json.dumps({"job_id": "slow", "input_file": "data.csv", "portfolio_size": 10,
                       "client_info": {"note": "x" * 300}}, indent=2)
    chunks = [text[i:i + 80] for i in range(0, len(text), 80)]
    pause_seconds = 0.5  # longer than scan_interval, shorter than settle_seconds
    with running_daemon(config, share, runner="tests.jobs:quick_job"):
        # When a client writes the job file in chunks, pausing between them
        path = share / "jobs" / "queue" / "slow.json"
        with path.open("w") as handle:
            for chunk in chunks[:-1]:
                handle.write(chunk)
                handle.flush()
                time.sleep(pause_seconds)
                # Then no partial state is failed, and nothing is claimed early
                assert not list((share / "jobs" / "failed").iterdir()), chunk
                assert not list((share / "jobs" / "processing").iterdir()), chunk
                assert _final(share, "slow") is None, chunk
            handle.write(chunks[-1])  # now whole: it parses, so it may start at once
        final = _wait_final(share, "slow", timeout=30)
    assert len(chunks) * pause_seconds > 4 * 0.2  # many rescans saw it half-written
    assert final["status"] == "completed" and final["attempts"] == 1
    assert final["client_info"]["note"] == "x" * 300
    assert [p.name for p in (share / "jobs" / "completed").iterdir()] == ["slow.json"]
    assert not list((share / "jobs" / "failed").iterdir())


def test_preallocated_csv_filled_in_chunks_runs_once_after_the_upload(
    tmp_path: Path, share: Path
) -> None:
    # Given a running daemon turning CSV drops into jobs (started before the upload)
    config = make_config_dir(tmp_path / "cfg", optimizer=QUICK_ALGORITHMS,
                             job_processor={"auto_jobs_from_csv": True})
    content = (SAMPLES_DIR / "sensex_82x500.csv").read_bytes()
    header_end = content.index(b"\n") + 1
    cuts = [header_end, *range(header_end + 40_000, len(content), 40_000), len(content)]
    pause_seconds = 0.6  # longer than settle_seconds (0.3): only the unwritten tail tells
    with running_daemon(config, share):
        # When a Windows-style copy creates the file at full size, then fills it in chunks
        path = share / "input" / "upload_ps10.csv"
        with path.open("wb") as handle:
            handle.truncate(len(content))
            handle.flush()
            written = 0
            for cut in cuts:
                time.sleep(pause_seconds)
                handle.seek(written)
                handle.write(content[written:cut])
                handle.flush()
                os.fsync(handle.fileno())
                written = cut
                last_chunk_at = time.time()
                if cut < len(content):
                    assert not list((share / "jobs" / "processing").iterdir()), cut
                    assert _final(share, "upload_ps10") is None, cut
        final = _wait_final(share, "upload_ps10", timeout=90)
    # Then exactly one job ran, claimed only after the last chunk, with the right size
    assert final["status"] == "completed", final
    assert final["attempts"] == 1 and final["job_type"] == "csv_drop"
    assert final["history"][0]["started_ts"] >= last_chunk_at
    assert final["portfolio_size"] == 10 and len(final["best_portfolio"]) == 10
    assert [p.name for p in (share / "jobs" / "completed").iterdir()] == ["upload_ps10.json"]
    assert not list((share / "jobs" / "failed").iterdir())
    summary = _json(share / "output" / "upload_ps10" / "summary.json")
    assert summary["best"]["portfolio_size"] == 10


# -- operator actions and safety valves --------------------------------------------------------


def test_cancel_of_a_running_job_fails_it_without_retry(tmp_path: Path, share: Path) -> None:
    config = make_config_dir(tmp_path / "cfg")
    with running_daemon(config, share, runner="tests.jobs:sleepy_job") as daemon:
        # Given a long job that is running
        drop_job(share, "unwanted", sleep_seconds=60)
        wait_for(lambda: _json(share / "jobs" / "status" / "unwanted.json").get("pid"),
                 timeout=30, message="job running")
        # When an operator cancels it
        request = share / ".heavy_optimizer" / "cancel" / "unwanted"
        request.write_text("")
        final = _wait_final(share, "unwanted", timeout=30)
        assert daemon.proc is not None and daemon.proc.poll() is None
    # Then it is failed as cancelled after one attempt and never retried
    assert final["status"] == "failed"
    assert final["error"]["code"] == "JOB_CANCELLED"
    assert final["attempts"] == 1 and len(final["history"]) == 1
    assert not request.exists()
    for registry in ("queue", "retry", "processing", "completed"):
        assert not list((share / "jobs" / registry).glob("*.json")), registry


def test_circuit_breaker_stops_claiming_and_alerts_once(tmp_path: Path, share: Path) -> None:
    with slack_server() as slack:
        config = make_config_dir(
            tmp_path / "cfg", error_handling=_slack_config(slack),
            job_processor={"max_concurrent_jobs": 1, "max_consecutive_failures": 3,
                           "circuit_breaker_cooldown_seconds": 30},
        )
        with running_daemon(config, share, runner="tests.jobs:broken_database_job") as daemon:
            # Given five jobs that all fail the same way, through no fault of their own
            for i in range(5):
                drop_job(share, f"doomed-{i}")
            # When three have failed in a row
            wait_for(lambda: _summary(share).get("circuit_breaker", {}).get("open"),
                     timeout=30, message="breaker open")
            # Then the daemon stops claiming: the other two stay queued (several rescans)
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline:
                assert len(list((share / "jobs" / "failed").glob("*.json"))) == 3
                assert len(list((share / "jobs" / "queue").glob("*.json"))) == 2
                assert not list((share / "jobs" / "processing").glob("*.json"))
                time.sleep(0.1)
            breaker = _summary(share)["circuit_breaker"]
            assert breaker["open"] and breaker["consecutive_failures"] == 3
            assert daemon.proc is not None and daemon.proc.poll() is None
            # And Slack got one alert about the streak, and the per-job alerts were grouped
            assert slack.wait_for_requests(2, timeout=20)
            time.sleep(1.0)  # let any further (unwanted) alert arrive
            subjects = _subjects(slack)
    assert len([s for s in subjects if "job intake paused" in s]) == 1, subjects
    assert not [s for s in subjects if "in a row" in s], subjects  # the pause alert says it
    assert len([s for s in subjects if "doomed-" in s]) == 1, subjects  # not one per job
    assert len(subjects) == 2, subjects


def test_backlogged_queue_warns_once(tmp_path: Path, share: Path) -> None:
    with slack_server() as slack:
        config = make_config_dir(
            tmp_path / "cfg", error_handling=_slack_config(slack),
            job_processor={"max_concurrent_jobs": 1,
                           "recovery": {"max_job_age_minutes": 0.01}},
        )
        with running_daemon(config, share, runner="tests.jobs:sleepy_job"):
            # Given one slot and three jobs of a second each: the last waits ~2 s (> 0.6 s)
            for i in range(3):
                drop_job(share, f"patient-{i}", sleep_seconds=1.0)
            # When they all run through
            wait_for(lambda: all(record(share, "completed", f"patient-{i}") for i in range(3)),
                     timeout=60, message="three completed")
            assert slack.wait_for_requests(1, timeout=20)
            time.sleep(1.0)  # let any further (unwanted) alert arrive
            subjects = _subjects(slack)
    # Then exactly one "queue is backing up" alert was sent
    assert [s for s in subjects if "queue is backing up" in s] == [subjects[0]], subjects
    assert len(subjects) == 1, subjects
