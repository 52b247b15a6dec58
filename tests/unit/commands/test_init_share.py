"""``heavy-optimizer init-share``: creates the layout, idempotent, refuses files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.cli import main
from daemon.share import ShareLayout
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(30)


def test_creates_every_folder_then_has_nothing_to_do(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Given: a path that does not exist yet
    root = tmp_path / "new" / "share"
    # When: init-share runs twice
    first = main(["init-share", str(root)])
    first_out = capsys.readouterr().out
    second = main(["init-share", str(root)])
    second_out = capsys.readouterr().out
    # Then: every folder of the layout exists, the first run named them, the second none
    layout = ShareLayout(root)
    assert first == 0 and second == 0
    assert all(folder.is_dir() for folder in layout.folders())
    for folder in layout.folders():
        assert f"{folder.relative_to(root)}/" in first_out
    assert "nothing to create" in second_out and "jobs/queue/" not in second_out


def test_recreates_a_folder_deleted_from_a_working_share(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = ShareLayout(tmp_path / "share")
    layout.ensure()
    (layout.queue / "keep.json").write_text("{}")
    layout.failed.rmdir()
    assert main(["init-share", str(layout.root)]) == 0
    out = capsys.readouterr().out
    assert layout.failed.is_dir() and "jobs/failed/" in out and "jobs/queue/" not in out
    assert (layout.queue / "keep.json").read_text() == "{}"


@pytest.mark.parametrize("blocker", ["", "jobs"])
def test_refuses_a_file_where_a_folder_must_be(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], blocker: str) -> None:
    # Given: the share root itself, or one of its folders, is a regular file
    root = tmp_path / "share"
    if blocker:
        root.mkdir()
    (root / blocker if blocker else root).write_text("not a folder")
    # When
    code = main(["init-share", str(root)])
    # Then: usage error, one line on stderr, the file untouched
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert str(root / blocker if blocker else root) in captured.err
    assert (root / blocker if blocker else root).read_text() == "not a folder"


def test_runs_as_a_console_command(tmp_path: Path) -> None:
    root = tmp_path / "share"
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "init-share", str(root)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert ShareLayout(root).cancel_requests.is_dir()
    assert "created" in done.stdout
