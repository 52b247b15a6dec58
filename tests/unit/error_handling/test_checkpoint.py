"""CheckpointManager: metadata, retention, corruption, planted files, pruning, failures."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import pickle
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.error_handling.checkpoint import CheckpointManager, prune_expired_jobs
from daemon.error_handling.checkpoint_folder import LOCK_FILE, METADATA_FILE
from daemon.error_handling.config import CheckpointConfig
from daemon.error_handling.errors import CheckpointLoadError, CheckpointSaveError

pytestmark = pytest.mark.timeout(30)

T0 = 1_700_000_000.0
DAY = 86400.0


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 1.0  # every checkpoint gets its own time
        return self.now


def _manager(tmp_path: Path, job_id: str = "job1", **config: Any) -> CheckpointManager:
    return CheckpointManager(job_id, tmp_path, config=CheckpointConfig(**config), clock=FakeClock())


def _state(seed: int) -> dict[str, Any]:
    return {"x": np.random.default_rng(seed).standard_normal((20, 50)), "seed": seed}


def _save_three(manager: CheckpointManager) -> None:
    for seed in (1, 2, 3):
        manager.save_checkpoint(_state(seed), f"c{seed}", f"after step {seed}")


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


class _OpensMarker:
    """Unpickling this calls open(marker, "w"): proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


# -- metadata, listing, names --------------------------------------------------------------


def test_save_records_metadata_matching_the_file(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    info = manager.save_checkpoint(_state(1), "c1", "after load")
    assert info is not None
    path = tmp_path / "job1" / "c1.ckpt"
    assert info.file_name == "c1.ckpt"
    assert info.size_bytes == path.stat().st_size
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.created_epoch == T0 + 1
    assert info.created_at == "2023-11-14T22:13:21+00:00"
    document = json.loads((tmp_path / "job1" / METADATA_FILE).read_text())
    assert document["checkpoints"] == [
        {
            "name": "c1",
            "file_name": "c1.ckpt",
            "created_at": info.created_at,
            "created_epoch": info.created_epoch,
            "description": "after load",
            "size_bytes": info.size_bytes,
            "sha256": info.sha256,
        }
    ]


def test_list_latest_load_and_delete(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    assert not manager.has_checkpoints()
    assert manager.get_latest_checkpoint() is None
    _save_three(manager)
    assert [info.name for info in manager.list_checkpoints()] == ["c1", "c2", "c3"]
    latest = manager.get_latest_checkpoint()
    assert latest is not None and latest.name == "c3"
    assert manager.load_checkpoint()["seed"] == 3
    assert manager.load_checkpoint("c1")["seed"] == 1
    assert manager.delete_checkpoint("c3") is True
    assert manager.delete_checkpoint("c3") is False
    assert not (tmp_path / "job1" / "c3.ckpt").exists()
    assert manager.load_checkpoint()["seed"] == 2


def test_saving_an_existing_name_replaces_it(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    _save_three(manager)
    manager.save_checkpoint(_state(9), "c1")
    assert [info.name for info in manager.list_checkpoints()] == ["c2", "c3", "c1"]
    assert manager.load_checkpoint()["seed"] == 9


def test_load_without_checkpoints_raises(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    with pytest.raises(CheckpointLoadError, match="no checkpoints"):
        manager.load_checkpoint()
    manager.save_checkpoint(_state(1), "c1")
    with pytest.raises(CheckpointLoadError, match="no checkpoint named c9"):
        manager.load_checkpoint("c9")
    assert manager.load_latest_valid() is not None


@pytest.mark.parametrize("bad", ["..", ".", "../x", "a/b", ".hidden", "", "x" * 129, "a b", "é"])
def test_unsafe_names_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="must be 1-128 characters"):
        CheckpointManager(bad, tmp_path, config=CheckpointConfig())
    manager = _manager(tmp_path)
    with pytest.raises(ValueError, match="must be 1-128 characters"):
        manager.save_checkpoint(_state(1), bad)
    with pytest.raises(ValueError):
        manager.load_checkpoint(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_no_argument_constructor_uses_config_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a config folder named by the environment, pointing checkpoints into tmp_path
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    base = tmp_path / "checkpoints"
    document = {"checkpoint": {"base_directory": str(base), "max_checkpoints_per_job": 4}}
    (config_dir / "error_handling_config.json").write_text(json.dumps(document))
    monkeypatch.setenv("HEAVY_OPTIMIZER_CONFIG_DIR", str(config_dir))
    monkeypatch.chdir(tmp_path)
    # When a manager is made with no arguments and saves
    manager = CheckpointManager()
    manager.save_checkpoint({"a": 1}, "c1")
    # Then it has a generated id and uses the configured folder and limits
    assert re.fullmatch(r"job_\d{8}_\d{6}_\d{6}", manager.job_id)
    assert manager.config.max_checkpoints_per_job == 4
    assert (base / manager.job_id / "c1.ckpt").is_file()


def test_disabled_config_saves_nothing(tmp_path: Path) -> None:
    manager = _manager(tmp_path, enabled=False)
    assert manager.save_checkpoint(_state(1), "c1") is None
    assert not manager.should_save("algorithm:GA")
    assert list(tmp_path.iterdir()) == []


def test_should_save_follows_stage_families(tmp_path: Path) -> None:
    manager = _manager(tmp_path, save_on_stages=["algorithm", "report"])
    assert manager.should_save("algorithm:GA")
    assert manager.should_save("algorithm")
    assert manager.should_save("report")
    assert not manager.should_save("load")
    assert not manager.should_save("algorithms")


# -- retention and pruning -----------------------------------------------------------------


def test_retention_keeps_the_newest(tmp_path: Path) -> None:
    manager = _manager(tmp_path, max_checkpoints_per_job=3)
    for seed in range(1, 7):
        manager.save_checkpoint(_state(seed), f"c{seed}")
    assert [info.name for info in manager.list_checkpoints()] == ["c4", "c5", "c6"]
    assert sorted(p.name for p in (tmp_path / "job1").glob("*.ckpt")) == [
        "c4.ckpt",
        "c5.ckpt",
        "c6.ckpt",
    ]
    for seed in (4, 5, 6):
        loaded = manager.load_checkpoint(f"c{seed}")
        assert np.array_equal(loaded["x"], _state(seed)["x"])


def test_reused_file_is_cut_to_the_new_size(tmp_path: Path) -> None:
    # Given a job at capacity whose oldest checkpoint is large
    manager = _manager(tmp_path, max_checkpoints_per_job=2)
    manager.save_checkpoint({"big": np.ones(200_000)}, "c1")
    manager.save_checkpoint({"small": 1}, "c2")
    # When a small checkpoint replaces it (reusing its file)
    info = manager.save_checkpoint({"small": 2}, "c3")
    # Then the file has exactly the new size and loads
    assert info is not None
    assert (tmp_path / "job1" / "c3.ckpt").stat().st_size == info.size_bytes < 10_000
    assert manager.load_checkpoint() == {"small": 2}


def test_retired_file_with_a_second_link_is_never_written_through(tmp_path: Path) -> None:
    # Given a job at capacity whose oldest checkpoint file is also linked from elsewhere
    manager = _manager(tmp_path, max_checkpoints_per_job=2)
    manager.save_checkpoint(_state(1), "c1")
    manager.save_checkpoint(_state(2), "c2")
    outside = tmp_path / "outside.bin"
    os.link(tmp_path / "job1" / "c1.ckpt", outside)
    before = outside.read_bytes()
    # When a new checkpoint pushes c1 out
    manager.save_checkpoint(_state(3), "c3")
    # Then the other link still has its old content
    assert outside.read_bytes() == before
    assert [info.name for info in manager.list_checkpoints()] == ["c2", "c3"]
    assert manager.load_checkpoint()["seed"] == 3


def test_prune_removes_jobs_older_than_the_limit(tmp_path: Path) -> None:
    # Given an old job, a recent job and things that are not job folders
    for job_id, saved_at in (("old", T0), ("new", T0 + 6 * DAY)):
        manager = CheckpointManager(
            job_id, tmp_path, config=CheckpointConfig(), clock=FakeClock(saved_at)
        )
        manager.save_checkpoint({"a": 1}, "c1")
    (tmp_path / "notes.txt").write_text("keep")
    (tmp_path / ".hidden").mkdir()
    os.utime(tmp_path / ".hidden", (T0, T0))
    (tmp_path / "link").symlink_to(tmp_path / "old")
    # When pruning at T0 + 8 days with a 7-day limit
    removed = prune_expired_jobs(tmp_path, max_age_days=7, now=T0 + 8 * DAY)
    # Then only the old job is gone
    assert removed == ["old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "link", "new", "notes.txt"]
    assert prune_expired_jobs(tmp_path / "missing", max_age_days=7) == []


def test_prune_skips_a_job_whose_lock_is_held(tmp_path: Path) -> None:
    manager = CheckpointManager("busy", tmp_path, clock=FakeClock(T0), config=CheckpointConfig())
    manager.save_checkpoint({"a": 1}, "c1")
    fd = os.open(manager.directory / LOCK_FILE, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert prune_expired_jobs(tmp_path, max_age_days=1, now=T0 + 3 * DAY) == []
    finally:
        os.close(fd)
    assert prune_expired_jobs(tmp_path, max_age_days=1, now=T0 + 3 * DAY) == ["busy"]


def test_prune_falls_back_to_file_times_without_metadata(tmp_path: Path) -> None:
    manager = CheckpointManager("job1", tmp_path, config=CheckpointConfig())
    manager.save_checkpoint({"a": 1}, "c1")
    (manager.directory / METADATA_FILE).write_text("{broken")
    now = time.time()
    assert prune_expired_jobs(tmp_path, max_age_days=1, now=now) == []
    assert prune_expired_jobs(tmp_path, max_age_days=1, now=now + 2 * DAY) == ["job1"]


# -- corruption and planted files ----------------------------------------------------------


@pytest.mark.parametrize("damage", ["flip_data", "flip_header", "truncate", "append"])
def test_damaged_checkpoint_offers_the_previous_one(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Given three checkpoints, the newest damaged
    manager = _manager(tmp_path)
    _save_three(manager)
    path = tmp_path / "job1" / "c3.ckpt"
    size = path.stat().st_size
    if damage == "flip_data":
        _flip_byte(path, size - 100)
    elif damage == "flip_header":
        _flip_byte(path, 40)
    elif damage == "truncate":
        os.truncate(path, size - 1000)
    else:
        path.write_bytes(path.read_bytes() + b"\0")
    # When the latest is loaded
    with pytest.raises(CheckpointLoadError) as caught:
        manager.load_checkpoint()
    # Then the error names the previous checkpoint, and the fallback loads it
    assert caught.value.previous == "c2"
    assert caught.value.context["previous_checkpoint"] == "c2"
    assert str(path) in str(caught.value)
    with caplog.at_level(logging.WARNING):
        found = manager.load_latest_valid()
    assert found is not None
    info, state = found
    assert info.name == "c2" and state["seed"] == 2
    assert np.array_equal(state["x"], _state(2)["x"])
    assert any("c3" in record.getMessage() for record in caplog.records)


def test_load_latest_valid_returns_none_when_all_are_bad(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    _save_three(manager)
    for name in ("c1", "c2", "c3"):
        os.truncate(tmp_path / "job1" / f"{name}.ckpt", 10)
    assert manager.load_latest_valid() is None
    with pytest.raises(CheckpointLoadError) as caught:
        manager.load_checkpoint("c1")
    assert caught.value.previous is None


@pytest.mark.parametrize("fix_metadata", [False, True])
def test_planted_pickle_is_never_unpickled(tmp_path: Path, fix_metadata: bool) -> None:
    # Given a pickle whose unpickling creates a marker file (checked to be live)
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_OpensMarker(probe))).close()
    assert probe.exists()
    marker = tmp_path / "marker"
    payload = pickle.dumps({"state": _OpensMarker(marker)}, protocol=5)
    # ... planted as the latest checkpoint, with the metadata forged to match if asked
    manager = _manager(tmp_path)
    _save_three(manager)
    (tmp_path / "job1" / "c3.ckpt").write_bytes(payload)
    if fix_metadata:
        metadata = tmp_path / "job1" / METADATA_FILE
        document = json.loads(metadata.read_text())
        document["checkpoints"][-1]["sha256"] = hashlib.sha256(payload).hexdigest()
        document["checkpoints"][-1]["size_bytes"] = len(payload)
        metadata.write_text(json.dumps(document))
    # When it is loaded, Then it fails cleanly and nothing was executed
    with pytest.raises(CheckpointLoadError, match="not a checkpoint") as caught:
        manager.load_checkpoint()
    assert caught.value.previous == "c2"
    found = manager.load_latest_valid()
    assert found is not None and found[0].name == "c2"
    assert not marker.exists()


def test_planted_fifo_and_symlink_fail_without_blocking(tmp_path: Path) -> None:
    manager = _manager(tmp_path)
    _save_three(manager)
    (tmp_path / "job1" / "c3.ckpt").unlink()
    os.mkfifo(tmp_path / "job1" / "c3.ckpt")
    with pytest.raises(CheckpointLoadError, match="not a regular file"):
        manager.load_checkpoint("c3")
    (tmp_path / "job1" / "c2.ckpt").unlink()
    (tmp_path / "job1" / "c2.ckpt").symlink_to(tmp_path / "job1" / "c1.ckpt")
    with pytest.raises(CheckpointLoadError) as caught:
        manager.load_checkpoint("c2")
    assert caught.value.previous == "c1"


@pytest.mark.parametrize("damage", ["missing", "garbage", "bad_entry"])
def test_metadata_is_rebuilt_from_the_files(tmp_path: Path, damage: str) -> None:
    # Given three checkpoints, one of them corrupt, and broken metadata
    manager = _manager(tmp_path)
    _save_three(manager)
    expected = manager.list_checkpoints()
    _flip_byte(tmp_path / "job1" / "c2.ckpt", 200)
    metadata = tmp_path / "job1" / METADATA_FILE
    if damage == "missing":
        metadata.unlink()
    elif damage == "garbage":
        metadata.write_bytes(b"\x00{not json")
    else:
        metadata.write_text(json.dumps({"checkpoints": [{"name": "../../x"}]}))
    # When the checkpoints are listed
    rebuilt = manager.list_checkpoints()
    # Then the valid files are listed exactly as before and the corrupt one is left out
    assert rebuilt == [expected[0], expected[2]]
    assert json.loads(metadata.read_text())["checkpoints"][1]["name"] == "c3"
    assert manager.load_checkpoint()["seed"] == 3


def test_leftover_temp_files_are_ignored_then_cleaned(tmp_path: Path) -> None:
    # Given a checkpoint and temp files: from a dead writer, a stale one, a live one
    manager = _manager(tmp_path)
    manager.save_checkpoint(_state(1), "c1")
    folder = tmp_path / "job1"
    dead = folder / f".c2.ckpt.{_dead_pid()}.0badf00d.tmp"
    dead.write_bytes(b"\x89HOCKPT\nhalf a checkpoint")
    stale = folder / f".metadata.json.{os.getpid()}.0000abcd.tmp"
    stale.write_text("{")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    live = folder / f".c3.ckpt.{os.getpid()}.12345678.tmp"
    live.write_bytes(b"being written")
    # Then readers ignore them
    assert [info.name for info in manager.list_checkpoints()] == ["c1"]
    assert manager.load_checkpoint()["seed"] == 1
    # When the next save happens, Then the dead and stale ones are removed
    manager.save_checkpoint(_state(2), "c2")
    assert not dead.exists() and not stale.exists() and live.exists()
    assert [info.name for info in manager.list_checkpoints()] == ["c1", "c2"]


# -- save failures -------------------------------------------------------------------------


def test_file_blocking_the_folder_raises_save_error(tmp_path: Path) -> None:
    (tmp_path / "job1").write_text("not a folder")
    manager = _manager(tmp_path)
    with pytest.raises(CheckpointSaveError) as caught:
        manager.save_checkpoint(_state(1), "c1")
    assert caught.value.context["path"] == str(tmp_path / "job1")
    assert caught.value.context["errno_name"] in ("EEXIST", "ENOTDIR")
    assert caught.value.recoverable


def test_symlinked_job_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "job1").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CheckpointSaveError, match="symlink"):
        _manager(tmp_path).save_checkpoint(_state(1), "c1")
    assert list((tmp_path / "elsewhere").iterdir()) == []
