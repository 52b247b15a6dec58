"""OperatorRegistry and records.original_spec: the operator's moves on a real share."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.error_handling.errors import JobQueueError
from daemon.jobs import JobStatus, validate_job_spec
from daemon.operator_registry import OperatorRegistry
from daemon.records import JobRecord, original_spec
from daemon.share import ShareLayout
from tests.corpus import GOOD_CSV

pytestmark = pytest.mark.timeout(30)

CANCEL = {"code": "JOB_CANCELLED", "message": "cancelled by test", "stage": "queue"}


@pytest.fixture
def layout(tmp_path: Path) -> ShareLayout:
    layout = ShareLayout(tmp_path / "share")
    layout.ensure()
    (layout.input / "data.csv").write_text(GOOD_CSV)
    return layout


def drop(layout: ShareLayout, file_name: str, spec: dict[str, Any]) -> Path:
    path = layout.queue / file_name
    path.write_text(json.dumps(spec))
    return path


def final_of(spec: dict[str, Any], status: JobStatus, fields: dict[str, Any]) -> dict[str, Any]:
    """A final record exactly as the registry writes it, read back through JSON."""
    job = validate_job_spec(spec, source="t.json", default_job_id="from-name")
    record = JobRecord.from_spec(job, source="queue", submitted_ts=100.0)
    record.start_attempt(101.0, {"host": "h"})
    record.close_attempt(102.0, status.value)
    record.adjustments = {"population_scale": 0.5}
    final = record.final_record(103.0, status, fields)
    parsed: dict[str, Any] = json.loads(json.dumps(final))
    return parsed


@pytest.mark.parametrize("spec", [
    {"input_file": "data.csv", "portfolio_size": 35},
    {"job_id": "a", "input_file": "data.csv", "portfolio_size": [10, 20], "seed": 4,
     "client_info": {"username": "x"}, "output_dir": "client's own field"},
])
@pytest.mark.parametrize(("status", "fields"), [
    (JobStatus.FAILED, {"error": {"code": "X", "message": "m", "stage": "load"}}),
    (JobStatus.COMPLETED, {"output_dir": "output/a", "best_algorithm": "GA", "best_fitness": 1.0,
                           "portfolio_size": 17, "best_portfolio": ["S1"], "execution_time": 2}),
])
def test_original_spec_undoes_final_record(spec: dict[str, Any], status: JobStatus,
                                           fields: dict[str, Any]) -> None:
    restored = original_spec(final_of(spec, status, fields))
    expected = {**spec, "job_id": spec.get("job_id", "from-name")}
    expected.pop("output_dir", None)  # an outcome key: a client's own value is not kept
    assert restored == expected


def test_cancel_waiting_returns_none_when_the_daemon_claims_the_job_first(
        layout: ShareLayout) -> None:
    # Given: a queued job that a daemon claims between our lookup and our move
    drop(layout, "job.json", {"job_id": "job", "input_file": "data.csv", "portfolio_size": 10})
    daemon = OperatorRegistry.for_this_process(layout)

    class Racing(OperatorRegistry):
        def _seize(self, path: Path) -> Path | None:
            entry = next(e for e in daemon.queued() if e.job_id == "job")
            assert daemon.claim(entry) is not None
            return super()._seize(path)

    operator = Racing.for_this_process(layout)
    # When / Then: no cancel recorded; the job runs on, untouched
    assert operator.cancel_waiting("job", CANCEL) is None
    assert os.listdir(layout.failed) == []
    assert json.loads((layout.processing / "job.json").read_text())["attempts"] == 1


def test_cancel_waiting_keeps_the_id_of_a_file_without_one(layout: ShareLayout) -> None:
    drop(layout, "from-name.json", {"input_file": "data.csv", "portfolio_size": 10})
    target = OperatorRegistry.for_this_process(layout).cancel_waiting("from-name", CANCEL)
    assert target == layout.failed / "from-name.json"
    assert json.loads(target.read_text())["job_id"] == "from-name"


def test_cancel_waiting_refuses_a_drop_that_repeats_a_finished_id(layout: ShareLayout) -> None:
    (layout.failed / "dup.json").write_text(json.dumps({"job_id": "dup", "status": "failed"}))
    drop(layout, "dup.json", {"job_id": "dup", "input_file": "data.csv", "portfolio_size": 10})
    with pytest.raises(JobQueueError, match="already failed"):
        OperatorRegistry.for_this_process(layout).cancel_waiting("dup", CANCEL)
    assert json.loads((layout.failed / "dup.json").read_text()) == {"job_id": "dup",
                                                                   "status": "failed"}


def test_a_retry_cut_short_by_a_crash_is_put_back_later(layout: ShareLayout) -> None:
    # Given: a crashed retry left the failed record seized under a private name
    record = {"job_id": "old", "input_file": "data.csv", "portfolio_size": 10,
              "status": "failed", "attempts": 3, "history": []}
    (layout.failed / ".old.json@gone-host@1.seized.tmp").write_text(json.dumps(record))
    now = time.time()
    later = OperatorRegistry(layout, host="h", daemon_pid=os.getpid(), daemon_started_at=now,
                             clock=lambda: now + 3600)
    # When: the next retry runs (of this job, after the lease time)
    where, target = later.requeue_finished("old", by="tester")
    # Then: the record was restored and moved to the queue
    assert where == "failed" and target == layout.queue / "old.json"
    assert os.listdir(layout.failed) == []
