"""Checkpoints written by several real processes at once, and a write that fails mid-file."""

from __future__ import annotations

import multiprocessing
import resource
import signal
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.error_handling.checkpoint import CheckpointManager
from daemon.error_handling.config import CheckpointConfig
from daemon.error_handling.errors import CheckpointSaveError

pytestmark = pytest.mark.timeout(90)

# fork: quick to start, and needs no resource-tracker process that would outlive the test.
CONTEXT = multiprocessing.get_context("fork")


def _state(worker: int, step: int) -> dict[str, Any]:
    rng = np.random.default_rng(worker * 1000 + step)
    return {"worker": worker, "step": step, "x": rng.standard_normal((40, 500))}


def _save_many(
    base: str, job_id: str, worker: int, saves: int, max_kept: int, barrier: Barrier
) -> None:
    manager = CheckpointManager(
        job_id, base, config=CheckpointConfig(max_checkpoints_per_job=max_kept)
    )
    barrier.wait(timeout=30)
    for step in range(saves):
        manager.save_checkpoint(_state(worker, step), f"w{worker}_s{step}")


def _run_workers(base: Path, job_ids: list[str], saves: int, max_kept: int) -> None:
    barrier = CONTEXT.Barrier(len(job_ids))
    workers = [
        CONTEXT.Process(target=_save_many, args=(str(base), job, i, saves, max_kept, barrier))
        for i, job in enumerate(job_ids)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * len(workers)


def _assert_all_load(manager: CheckpointManager) -> None:
    for info in manager.list_checkpoints():
        worker, step = (int(part[1:]) for part in info.name.split("_"))
        loaded = manager.load_checkpoint(info.name)
        assert np.array_equal(loaded["x"], _state(worker, step)["x"])


def _no_temp_files(folder: Path) -> bool:
    return not list(folder.glob(".*.tmp"))


def test_processes_saving_the_same_job_lose_no_entries(tmp_path: Path) -> None:
    # Given 4 processes saving 5 checkpoints each into one job, all at once
    _run_workers(tmp_path, ["shared"] * 4, saves=5, max_kept=100)
    # Then all 20 are listed, on disk and loadable
    manager = CheckpointManager("shared", tmp_path, config=CheckpointConfig())
    names = {info.name for info in manager.list_checkpoints()}
    assert names == {f"w{w}_s{s}" for w in range(4) for s in range(5)}
    assert len(list(manager.directory.glob("*.ckpt"))) == 20
    assert _no_temp_files(manager.directory)
    _assert_all_load(manager)


def test_processes_at_capacity_keep_exactly_the_limit(tmp_path: Path) -> None:
    _run_workers(tmp_path, ["shared"] * 4, saves=5, max_kept=5)
    manager = CheckpointManager("shared", tmp_path, config=CheckpointConfig())
    listed = manager.list_checkpoints()
    assert len(listed) == 5
    assert sorted(p.name for p in manager.directory.glob("*.ckpt")) == sorted(
        info.file_name for info in listed
    )
    assert _no_temp_files(manager.directory)
    _assert_all_load(manager)


def test_processes_saving_different_jobs_do_not_interfere(tmp_path: Path) -> None:
    jobs = ["job_a", "job_b", "job_c"]
    _run_workers(tmp_path, jobs, saves=4, max_kept=3)
    for worker, job in enumerate(jobs):
        manager = CheckpointManager(job, tmp_path, config=CheckpointConfig())
        assert [info.name for info in manager.list_checkpoints()] == [
            f"w{worker}_s{step}" for step in (1, 2, 3)
        ]
        _assert_all_load(manager)


def _save_with_file_size_limit(base: str, limit_bytes: int, max_kept: int, result: Any) -> None:
    """In a child: make every write past ``limit_bytes`` fail (EFBIG), then save."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    manager = CheckpointManager(
        "job1", base, config=CheckpointConfig(max_checkpoints_per_job=max_kept)
    )
    try:
        manager.save_checkpoint({"big": np.ones(400_000)}, "too_big")
    except CheckpointSaveError as exc:
        result.put(exc.to_dict())
    else:
        result.put(None)


@pytest.mark.parametrize("at_capacity", [False, True])
def test_write_failure_mid_file_keeps_earlier_checkpoints(
    tmp_path: Path, at_capacity: bool
) -> None:
    # Given three small checkpoints (the job at capacity or not)
    max_kept = 3 if at_capacity else 10
    manager = CheckpointManager(
        "job1", tmp_path, config=CheckpointConfig(max_checkpoints_per_job=max_kept)
    )
    for step in range(3):
        manager.save_checkpoint(_state(0, step), f"w0_s{step}")
    # When a process whose writes fail past 1 MB saves a 3.2 MB checkpoint
    result = CONTEXT.SimpleQueue()
    child = CONTEXT.Process(
        target=_save_with_file_size_limit, args=(str(tmp_path), 1 << 20, max_kept, result)
    )
    child.start()
    child.join(timeout=60)
    error = result.get()
    # Then it got a CheckpointSaveError naming the errno and path
    assert child.exitcode == 0
    assert error is not None and error["type"] == "CheckpointSaveError"
    assert error["context"]["errno_name"] == "EFBIG"
    assert error["context"]["path"] == str(manager.directory / "too_big.ckpt")
    # ... no temp file is left and every listed checkpoint is valid; at capacity the oldest
    # was retired for the save, below capacity all three remain
    assert _no_temp_files(manager.directory)
    expected = ["w0_s1", "w0_s2"] if at_capacity else ["w0_s0", "w0_s1", "w0_s2"]
    assert [info.name for info in manager.list_checkpoints()] == expected
    assert sorted(p.stem for p in manager.directory.glob("*.ckpt")) == expected
    _assert_all_load(manager)
