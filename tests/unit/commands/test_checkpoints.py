"""``heavy-optimizer checkpoints list|show|prune`` on checkpoints saved by CheckpointManager."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from daemon.cli import main
from daemon.error_handling.checkpoint import CheckpointManager
from daemon.error_handling.config import CheckpointConfig
from daemon.share import ShareLayout
from tests.daemon_harness import make_config_dir
from tests.unit.commands.cli_support import Cli

pytestmark = pytest.mark.timeout(30)

DAY_SECONDS = 86400.0


def manager(share: ShareLayout, job_id: str, *, age_days: float = 0.0) -> CheckpointManager:
    """A job's checkpoint manager whose clock is ``age_days`` in the past."""
    offset = age_days * DAY_SECONDS
    return CheckpointManager(job_id, share.checkpoints, config=CheckpointConfig(),
                             clock=lambda: time.time() - offset)


@pytest.fixture
def saved(share: ShareLayout) -> CheckpointManager:
    """Job ``opt`` with two checkpoints, the newest holding arrays, a frame and plain values."""
    checkpoints = manager(share, "opt")
    checkpoints.save_checkpoint({"stage": "load", "rows": 82}, "load", "after loading")
    checkpoints.save_checkpoint({
        "population": np.zeros((50, 12), dtype=np.int32),
        "fitness": np.float64(1.5),
        "returns": pd.DataFrame(np.ones((82, 3)), columns=["A", "B", "C"]),
        "params": {"population_size": 50, "mutation_rate": 0.1},
        "history": [1.0, 1.2, 1.5],
        "algorithm": "GA",
        "done": False,
    }, "algorithm-GA", "GA finished")
    return checkpoints


def test_list_all_jobs_and_one_job(cli: Cli, share: ShareLayout,
                                   saved: CheckpointManager) -> None:
    manager(share, "other").save_checkpoint({"x": 1}, "load")
    overview = cli("checkpoints", "list")
    assert overview.code == 0
    lines = {line.split()[0]: line.split() for line in overview.out.splitlines()[1:]}
    assert set(lines) == {"opt", "other"} and lines["opt"][1] == "2" and lines["other"][1] == "1"
    one = cli("checkpoints", "list", "opt")
    infos = saved.list_checkpoints()
    assert one.code == 0 and len(one.out.splitlines()) == 2
    for info, line in zip(infos, one.out.splitlines(), strict=True):
        assert line.startswith(info.name) and info.sha256 in line and info.created_at in line
        assert info.description in line
    as_json = json.loads(cli("checkpoints", "list", "opt", "--json").out)
    assert [entry["sha256"] for entry in as_json] == [info.sha256 for info in infos]


def test_show_describes_the_state_without_printing_data(
        cli: Cli, share: ShareLayout, saved: CheckpointManager) -> None:
    # When: the newest checkpoint is shown
    result = cli("checkpoints", "show", "opt")
    # Then: metadata and one line per top-level key with type and shape
    assert result.code == 0, result.err
    out = result.out
    newest = saved.get_latest_checkpoint()
    assert newest is not None and newest.sha256 in out and "(verified)" in out
    assert "population: ndarray int32 shape [50, 12]" in out
    assert "fitness: float64 1.5" in out
    assert "returns: DataFrame 82 rows x 3 columns" in out
    assert "params: dict of 2 (population_size, mutation_rate)" in out
    assert "history: list of 3" in out and "algorithm: str 'GA'" in out
    assert "done: bool False" in out
    # And: an older checkpoint by name, and as JSON
    named = json.loads(cli("checkpoints", "show", "opt", "load", "--json").out)
    assert named["checkpoint"]["name"] == "load" and named["state"]["rows"] == "int 82"


def test_show_refuses_damaged_and_planted_files(cli: Cli, share: ShareLayout,
                                                saved: CheckpointManager) -> None:
    # Given: the newest checkpoint damaged, and a pickle planted as a checkpoint file
    newest = saved.get_latest_checkpoint()
    assert newest is not None
    path = saved.directory / newest.file_name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    # When / Then: a clear failure naming the checkpoint, never a traceback
    damaged = cli("checkpoints", "show", "opt")
    assert damaged.code == 1 and "algorithm-GA" in damaged.err and "Traceback" not in damaged.err
    (saved.directory / "load.ckpt").write_bytes(pickle.dumps({"evil": True}))
    planted = cli("checkpoints", "show", "opt", "load")
    assert planted.code == 1 and "unusable" in planted.err


def test_show_and_list_of_a_job_without_checkpoints(cli: Cli) -> None:
    assert cli("checkpoints", "show", "ghost").code == 1
    missing = cli("checkpoints", "list", "ghost")
    assert missing.code == 1 and "no checkpoints" in missing.err
    assert cli("checkpoints", "show", ".hidden").code == 2


def test_prune_one_job_keeps_the_newest(cli: Cli, saved: CheckpointManager) -> None:
    result = cli("checkpoints", "prune", "--job", "opt", "--keep", "1")
    assert result.code == 0 and "removed 1 checkpoint(s) (load), kept 1" in result.out
    assert [info.name for info in saved.list_checkpoints()] == ["algorithm-GA"]
    assert not (saved.directory / "load.ckpt").exists()


def test_prune_by_age_removes_only_old_jobs(cli: Cli, share: ShareLayout) -> None:
    manager(share, "ancient", age_days=30).save_checkpoint({"x": 1}, "load")
    manager(share, "recent", age_days=1).save_checkpoint({"x": 1}, "load")
    result = cli("checkpoints", "prune", "--older-than-days", "7")
    assert result.code == 0 and "ancient" in result.out and "recent" not in result.out
    assert sorted(p.name for p in share.checkpoints.iterdir()) == ["recent"]


def test_prune_without_options_uses_the_configured_age(
        share: ShareLayout, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = make_config_dir(tmp_path / "cfg", error_handling={
        "checkpoint": {"cleanup_after_days": 0.5}})
    manager(share, "recent", age_days=1).save_checkpoint({"x": 1}, "load")
    code = main(["checkpoints", "prune", "--share", str(share.root), "--config-dir",
                 str(config)])
    assert code == 0 and "older than 0.5 days: recent" in capsys.readouterr().out
    assert list(share.checkpoints.iterdir()) == []


@pytest.mark.parametrize("args", [["--keep", "1"], ["--job", "opt"],
                                  ["--job", "opt", "--keep", "-1"]])
def test_prune_usage_errors(cli: Cli, saved: CheckpointManager, args: list[str]) -> None:
    result = cli("checkpoints", "prune", *args)
    assert result.code == 2 and result.err.count("\n") == 1
    assert len(saved.list_checkpoints()) == 2
