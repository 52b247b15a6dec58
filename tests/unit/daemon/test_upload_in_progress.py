"""An upload that pauses is not settled while its writer still holds the file open."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.share import SettleTracker, is_open_for_writing

pytestmark = pytest.mark.timeout(30)


def test_open_for_writing_is_seen_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "upload.csv"
    path.write_text("Date,S1\n")
    # Given another process holding the file open for writing (as smbd does for a client)
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys; f = open(sys.argv[1], 'a'); "
         "print('open', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "open"
        assert is_open_for_writing(path) is True
    finally:
        assert writer.stdin is not None
        writer.stdin.close()
        writer.wait(timeout=10)
    # Then once it closed the file, the lease succeeds
    assert is_open_for_writing(path) is False
    assert is_open_for_writing(tmp_path / "missing.csv") is None


def test_paused_upload_is_not_settled_until_closed(tmp_path: Path) -> None:
    path = tmp_path / "upload.csv"
    path.write_text("Date,S1\n2024-01-04,1\n")
    now = [0.0]
    writing = [True]
    tracker = SettleTracker(settle_seconds=2.0, clock=lambda: now[0],
                            open_for_writing=lambda _p: writing[0])
    assert not tracker.is_settled(path)
    now[0] = 10.0  # the writer paused far longer than the settle period
    assert not tracker.is_settled(path)
    writing[0] = False  # the client closed the file
    now[0] = 11.0
    assert not tracker.is_settled(path)  # the settle period restarted when we saw the writer
    now[0] = 12.5
    assert tracker.is_settled(path)
