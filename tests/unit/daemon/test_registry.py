"""JobRegistry on a real folder tree: claims (also raced by two processes), leases, moves."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import psutil
import pytest

from daemon.error_handling.errors import JobQueueError, JobSpecError
from daemon.registry import JobRecord, JobRegistry, QueuedJob
from daemon.share import ShareLayout
from tests.corpus import GOOD_CSV

pytestmark = pytest.mark.timeout(60)

CONTEXT = multiprocessing.get_context("fork")
HOST = socket.gethostname()
ME = psutil.Process()


def make_layout(root: Path) -> ShareLayout:
    layout = ShareLayout(root)
    layout.ensure()
    (layout.input / "good.csv").write_text(GOOD_CSV)
    return layout


def registry_for(layout: ShareLayout, *, host: str = HOST, pid: int | None = None,
                 started_at: float | None = None, clock: Any = time.time) -> JobRegistry:
    pid = os.getpid() if pid is None else pid
    if started_at is None:
        started_at = psutil.Process(pid).create_time() if psutil.pid_exists(pid) else 1.0
    return JobRegistry(layout, host=host, daemon_pid=pid, daemon_started_at=started_at,
                       clock=clock, lease_seconds=60.0)


def drop(layout: ShareLayout, name: str, **spec: Any) -> Path:
    path = layout.queue / f"{name}.json"
    path.write_text(json.dumps({"job_id": name, "input_file": "good.csv", "portfolio_size": 35,
                                **spec}))
    return path


def on_disk(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def claim_one(registry: JobRegistry, job_id: str) -> JobRecord:
    entry = next(e for e in registry.queued() if e.job_id == job_id)
    record = registry.claim(entry)
    assert record is not None
    return record


# -- records --------------------------------------------------------------------------------


def test_record_round_trip_keeps_unknown_fields_and_omits_absent_ones() -> None:
    record = JobRecord(job_id="a", spec={"input_file": "x.csv", "note": "kept"},
                       input_file="x.csv", portfolio_sizes=[35], submitted_at="t",
                       submitted_ts=1.0, extra={"future_field": [1, 2]})
    data = record.to_dict()
    assert "lease" not in data and "error" not in data and "next_attempt_at" not in data
    assert data["record_version"] == 1 and data["state"] == "queued"
    again = JobRecord.from_dict(json.loads(json.dumps(data)))
    assert again == record
    record.lease = {"host": "h", "daemon_pid": 1, "daemon_started_at": 2.0,
                    "heartbeat_at": 3.0, "expires_at": 4.0, "pid": 5}
    assert JobRecord.from_dict(record.to_dict()).lease == record.lease
    with pytest.raises(ValueError, match="not a job record"):
        JobRecord.from_dict({"record_version": 1, "spec": {}})
    with pytest.raises(ValueError, match="not a job record"):
        JobRecord.from_dict({**data, "lease": "mine"})


# -- claim ----------------------------------------------------------------------------------


def test_claim_moves_the_file_and_makes_the_attempt_durable(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    registry = registry_for(layout)
    source = drop(layout, "job1", extra_field="kept")
    record = claim_one(registry, "job1")
    assert not source.exists()
    stored = on_disk(layout.processing / "job1.json")
    assert stored["attempts"] == 1 and record.attempts == 1
    assert stored["state"] == "running"
    assert stored["lease"]["host"] == HOST and stored["lease"]["daemon_pid"] == os.getpid()
    assert stored["spec"]["extra_field"] == "kept"
    assert stored["history"][0]["attempt"] == 1
    assert record.started_at == stored["history"][0]["started_at"]
    # The same entry cannot be claimed twice.
    assert registry.claim(QueuedJob(source, record.job_spec(), 0.0)) is None


def test_requeue_keeps_attempts_unless_refunded(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    registry = registry_for(layout)
    drop(layout, "job1")
    record = claim_one(registry, "job1")
    queued = registry.requeue(record, resume=True, refund_attempt=False)
    assert on_disk(queued)["attempts"] == 1 and on_disk(queued)["resume"] is True
    assert "lease" not in on_disk(queued)
    record = claim_one(registry, "job1")
    assert on_disk(layout.processing / "job1.json")["attempts"] == 2
    queued = registry.requeue(record, resume=True, refund_attempt=True)
    assert on_disk(queued)["attempts"] == 1
    assert [h["outcome"] for h in on_disk(queued)["history"]] == ["requeued", "requeued_refunded"]


def _claim_all(root: str, out: str, barrier: Barrier) -> None:
    layout = ShareLayout(Path(root))
    registry = JobRegistry(layout, host=HOST, daemon_pid=os.getpid(),
                           daemon_started_at=psutil.Process().create_time())
    barrier.wait(timeout=20)
    claimed = []
    for _ in range(3):  # a few passes: entries the other process lost are retried
        for entry in registry.queued():
            record = registry.claim(entry)
            if record is not None:
                claimed.append(record.job_id)
    Path(out).write_text(json.dumps(claimed))


def test_two_processes_claim_each_entry_exactly_once(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    ids = [f"job{n:02d}" for n in range(50)]
    for job_id in ids:
        drop(layout, job_id)
    barrier = CONTEXT.Barrier(2)
    outs = [tmp_path / f"claimed{n}.json" for n in range(2)]
    procs = [CONTEXT.Process(target=_claim_all, args=(str(tmp_path), str(out), barrier))
             for out in outs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=45)
    assert [proc.exitcode for proc in procs] == [0, 0]
    first, second = (json.loads(out.read_text()) for out in outs)
    assert sorted(first + second) == ids  # every entry once: no loss, no double claim
    assert not set(first) & set(second)
    assert list(layout.queue.iterdir()) == []
    for proc, claimed in zip(procs, (first, second), strict=True):
        for job_id in claimed:  # the durable lease names the process that won the claim
            stored = on_disk(layout.processing / f"{job_id}.json")
            assert stored["lease"]["daemon_pid"] == proc.pid and stored["attempts"] == 1


def test_claim_refuses_a_share_without_hard_links(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    layout = make_layout(tmp_path)
    registry = registry_for(layout)
    drop(layout, "job1")
    entry = registry.queued()[0]

    def no_links(src: Any, dst: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(JobQueueError, match="does not support hard links"):
        registry.claim(entry)
    assert entry.path.exists()


def test_claim_rejects_a_job_file_changed_after_the_scan(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    registry = registry_for(layout)
    path = drop(layout, "job1")
    entry = registry.queued()[0]
    path.write_text(json.dumps({"job_id": "other", "input_file": "good.csv",
                                "portfolio_size": 35}))
    assert registry.claim(entry) is None
    failed = on_disk(layout.failed / "job1.json")
    assert "changed while it was being claimed" in failed["error"]["message"]
    assert list(layout.processing.iterdir()) == []


# -- leases and abandoned jobs ----------------------------------------------------------------


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    return child.pid


def test_abandoned_finds_dead_daemons_and_expired_leases_only(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    now = time.time()
    names = ("dead", "expired", "fresh_other_host", "live_sibling", "reused_pid", "mine")
    for name in names:
        drop(layout, name)
    claim_one(registry_for(layout, pid=dead_pid(), started_at=now - 100), "dead")
    claim_one(registry_for(layout, host="other-host", pid=4242, clock=lambda: now - 500),
              "expired")
    claim_one(registry_for(layout, host="other-host", pid=4242, clock=lambda: now),
              "fresh_other_host")
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        claim_one(registry_for(layout, pid=sibling.pid), "live_sibling")
        # The pid is alive but is another process than the daemon that claimed (pid reuse).
        claim_one(registry_for(layout, pid=sibling.pid, started_at=1.0), "reused_pid")
        mine = registry_for(layout)
        claim_one(mine, "mine")
        assert {r.job_id for r in mine.abandoned(now)} == {"dead", "expired", "reused_pid"}
    finally:
        sibling.kill()
        sibling.wait(timeout=10)
    assert "live_sibling" in {r.job_id for r in mine.abandoned(now)}


def test_recovering_an_abandoned_job_is_exclusive_and_counts_attempts(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    drop(layout, "job1")
    claim_one(registry_for(layout, pid=dead_pid(), started_at=5.0), "job1")
    a, b = registry_for(layout), registry_for(layout, pid=os.getppid())
    seen_by_a, seen_by_b = a.abandoned(time.time()), b.abandoned(time.time())
    assert [r.job_id for r in seen_by_a] == [r.job_id for r in seen_by_b] == ["job1"]
    a.requeue(seen_by_a[0], resume=True, refund_attempt=False)
    with pytest.raises(JobQueueError):
        b.requeue(seen_by_b[0], resume=True, refund_attempt=False)
    assert [p.name for p in layout.queue.iterdir()] == ["job1.json"]
    record = claim_one(a, "job1")
    assert record.attempts == 2 and record.resume is True
    assert [h.get("outcome") for h in record.history] == ["requeued", None]


def test_heartbeat_pushes_the_lease_and_notices_a_takeover(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    clock = [1000.0]
    registry = registry_for(layout, clock=lambda: clock[0])
    drop(layout, "job1")
    record = claim_one(registry, "job1")
    clock[0] = 1030.0
    assert registry.heartbeat(record, pid=1234) is True
    lease = on_disk(layout.processing / "job1.json")["lease"]
    assert lease["expires_at"] == 1090.0 and lease["pid"] == 1234
    # Another daemon seizes it (as if our lease had run out) and requeues it.
    other = registry_for(layout, host="other-host", pid=4242)
    stolen = other.abandoned(2000.0)
    other.requeue(stolen[0], resume=True, refund_attempt=False)
    assert registry.heartbeat(record, pid=1234) is False
    with pytest.raises(JobQueueError, match="no longer in processing"):
        registry.complete(record, {"best_fitness": 1.0})


def test_interrupted_claim_is_recovered_after_the_lease_time(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    registry = registry_for(layout)
    # A claim cut short between its link and its rewrite leaves the client's file.
    os.link(drop(layout, "job1"), layout.processing / "job1.json")
    os.unlink(layout.queue / "job1.json")
    assert registry.abandoned(time.time()) == []  # maybe another daemon's claim in progress
    [record] = registry.abandoned(time.time() + 61)
    assert record.attempts == 0 and record.lease is None
    registry.requeue(record, resume=False, refund_attempt=False)
    assert claim_one(registry, "job1").attempts == 1


def test_stale_processing_entry_of_a_finished_job_is_removed(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    drop(layout, "job1")
    crashed = registry_for(layout, pid=dead_pid(), started_at=5.0)
    record = claim_one(crashed, "job1")
    stale = (layout.processing / "job1.json").read_bytes()
    crashed.complete(record, {"best_fitness": 2.0})
    (layout.processing / "job1.json").write_bytes(stale)  # as if the unlink never happened
    assert registry_for(layout).abandoned(time.time()) == []
    assert not (layout.processing / "job1.json").exists()
    assert on_disk(layout.completed / "job1.json")["status"] == "completed"


# -- final records and retries ---------------------------------------------------------------


def test_complete_and_fail_write_the_final_records_clients_poll(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    clock = [1000.0]
    registry = registry_for(layout, clock=lambda: clock[0])
    drop(layout, "ok", client_info={"user": "a"}, job_type="complete_optimization")
    drop(layout, "bad")
    ok, bad = claim_one(registry, "ok"), claim_one(registry, "bad")
    clock[0] = 1012.5
    done = on_disk(registry.complete(ok, {"best_algorithm": "GA", "best_fitness": 3.2,
                                          "best_portfolio": ["S1", "S2"]}))
    assert done["status"] == "completed" and done["attempts"] == 1
    assert done["client_info"] == {"user": "a"} and done["job_type"] == "complete_optimization"
    assert done["execution_time"] == 12.5 and done["output_dir"] == "output/ok"
    assert done["best_algorithm"] == "GA" and done["finished_at"].startswith("1970-01-01T00:16")
    failed = on_disk(registry.fail(bad, {"code": "DATA_VALIDATION_ERROR", "message": "no Date"}))
    assert failed["status"] == "failed"
    assert failed["error"] == {"stage": "run", "code": "DATA_VALIDATION_ERROR",
                               "message": "no Date"}
    assert list(layout.processing.iterdir()) == []


def test_retry_waits_until_due_then_returns_to_the_queue(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    clock = [1000.0]
    registry = registry_for(layout, clock=lambda: clock[0])
    drop(layout, "job1")
    record = claim_one(registry, "job1")
    path = registry.schedule_retry(record, delay_seconds=30, resume=True,
                                   adjustments={"population_scale": 0.5},
                                   error={"code": "MEMORY_LIMIT", "message": "oom"})
    assert on_disk(path)["next_attempt_at"] == 1030.0 and on_disk(path)["state"] == "retrying"
    assert registry.due_retries(1029.0) == [] and registry.release_due_retries(1029.0) == 0
    assert [r.job_id for r in registry.due_retries(1030.0)] == ["job1"]
    assert registry.release_due_retries(1030.0) == 1
    assert list(layout.retry.iterdir()) == []
    record = claim_one(registry, "job1")
    assert record.attempts == 2 and record.resume is True
    assert record.adjustments == {"population_scale": 0.5}
    assert record.history[0]["error"]["code"] == "MEMORY_LIMIT"


def test_a_seized_file_left_by_a_crash_is_put_back(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    registry = registry_for(layout)
    drop(layout, "job1")
    registry.schedule_retry(claim_one(registry, "job1"), delay_seconds=0, resume=False,
                            adjustments=None, error={"code": "X", "message": "y"})
    os.rename(layout.retry / "job1.json", layout.retry / ".job1.json@otherhost@1.seized.tmp")
    assert registry.release_due_retries(time.time()) == 0  # too young: a seize in progress
    assert registry.release_due_retries(time.time() + 61) == 1
    assert claim_one(registry, "job1").attempts == 2


# -- rejection ------------------------------------------------------------------------------


def test_reject_never_overwrites_the_record_of_an_existing_job(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    registry = registry_for(layout)
    (layout.failed / "job1.json").write_text(json.dumps({"job_id": "job1", "note": "original"}))
    dup = drop(layout, "dup", job_id="job1")
    target = registry.reject(dup, JobSpecError("dup: job id 'job1' already failed"),
                             job_id="job1")
    assert target.name.startswith("job1.rejected-") and not dup.exists()
    assert on_disk(layout.failed / "job1.json")["note"] == "original"
    rejected = on_disk(target)
    assert rejected["error"]["stage"] == "intake" and rejected["source_file"] == "dup.json"
    assert rejected["status"] == "failed" and rejected["input_file"] == "good.csv"


def test_find_and_queued_order(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    registry = registry_for(layout)
    drop(layout, "low", priority=0)
    drop(layout, "high", priority=5)
    (layout.queue / "broken.json").write_text("{")
    assert [e.job_id for e in registry.queued()] == ["high", "low"]
    assert registry.find("low") == ("queue", layout.queue / "low.json")
    claim_one(registry, "high")
    assert registry.find("high") == ("processing", layout.processing / "high.json")
    assert registry.find("nothing") is None
    assert [r.job_id for r in registry.running()] == ["high"]
    assert registry.counts() == {"queue": 2, "processing": 1, "retry": 0, "completed": 0,
                                 "failed": 0}
