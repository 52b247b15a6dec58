"""ShareWatcher with real watchdog observers (inotify and polling) on real folders."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, WatchDescriptor

from daemon.share import ShareLayout
from daemon.watcher import ShareWatcher, choose_observer, mount_fs_type

pytestmark = pytest.mark.timeout(30)

#: Generous: a hint normally arrives in milliseconds (inotify) or one poll (0.05 s).
WAKE_SECONDS = 10.0
POLL_SECONDS = 0.05


@pytest.fixture
def layout(tmp_path: Path) -> ShareLayout:
    share = ShareLayout(tmp_path / "share")
    share.ensure()
    return share


class HintedWatcher(ShareWatcher):
    """A ShareWatcher that also records the hinted paths, to tell one file's wake-up from
    another's (one write makes several events)."""

    def __init__(self, layout: ShareLayout, kind: str) -> None:
        self.hints: list[Path | None] = []
        super().__init__((layout.input, layout.queue), observer=kind,  # type: ignore[arg-type]
                         polling_interval_seconds=POLL_SECONDS, on_hint=self.hints.append)

    def woken_for(self, name: str) -> bool:
        """Wait for hints until one names ``name``."""
        deadline = time.monotonic() + WAKE_SECONDS
        while time.monotonic() < deadline:
            if not self.wait_for_hint(deadline - time.monotonic()):
                return False
            if any(p is not None and p.name == name for p in self.hints):
                return True
        return False


@pytest.fixture(params=["inotify", "polling"])
def watcher(request: pytest.FixtureRequest, layout: ShareLayout) -> Iterator[HintedWatcher]:
    share_watcher = HintedWatcher(layout, request.param)
    share_watcher.start()
    yield share_watcher
    share_watcher.stop()


def test_new_job_file_and_csv_wake_the_waiter(watcher: HintedWatcher,
                                              layout: ShareLayout) -> None:
    assert watcher.healthy
    (layout.queue / "job.json").write_text("{}")
    assert watcher.woken_for("job.json")
    (layout.input / "data.csv").write_text("Date,S1\n")
    assert watcher.woken_for("data.csv")


def test_temp_files_do_not_wake_but_their_rename_does(watcher: HintedWatcher,
                                                      layout: ShareLayout) -> None:
    temp = layout.queue / ".job.json.abc.tmp"
    temp.write_text("{}")
    assert not watcher.wait_for_hint(0.5)
    temp.rename(layout.queue / "job.json")
    assert watcher.woken_for("job.json")


def test_hint_during_a_scan_is_kept_for_the_next_wait(watcher: HintedWatcher,
                                                      layout: ShareLayout) -> None:
    (layout.queue / "a.json").write_text("{}")
    assert watcher.woken_for("a.json")
    watcher.hints.clear()
    # ... the caller scans now; a file arriving meanwhile wakes the next wait at once:
    (layout.queue / "b.json").write_text("{}")
    assert watcher.woken_for("b.json")


def test_inotify_queue_overflow_triggers_a_rescan(layout: ShareLayout) -> None:
    watcher = HintedWatcher(layout, "inotify")
    watcher.start()
    try:
        assert not watcher.wait_for_hint(0.2)
        # The kernel's overflow event, fed through watchdog's own inotify reader.
        overflow = InotifyEvent(WatchDescriptor(-1), InotifyConstants.IN_Q_OVERFLOW, 0, b"")
        watcher._observer._inotify_fd.handle_event(overflow)  # type: ignore[union-attr]
        assert not watcher.healthy and watcher.hints == [None]
        assert watcher.wait_for_hint(WAKE_SECONDS)  # rebuilds the observer, then wakes
        assert watcher.healthy
        (layout.queue / "after.json").write_text("{}")
        assert watcher.woken_for("after.json")
    finally:
        watcher.stop()


def test_deleted_folder_is_reported_and_watching_resumes(layout: ShareLayout) -> None:
    watcher = HintedWatcher(layout, "polling")
    watcher.start()
    try:
        shutil.rmtree(layout.queue)
        assert watcher.wait_for_hint(WAKE_SECONDS) and None in watcher.hints  # rescan all
        assert not watcher.healthy
        watcher.wait_for_hint(0.01)  # cannot restart while the folder is missing
        assert not watcher.healthy
        layout.queue.mkdir()
        assert watcher.wait_for_hint(WAKE_SECONDS)  # restarted: rescan what was missed
        assert watcher.healthy
        (layout.queue / "back.json").write_text("{}")
        assert watcher.woken_for("back.json")
    finally:
        watcher.stop()


def test_start_fails_on_a_missing_folder_and_leaves_no_threads(tmp_path: Path) -> None:
    for kind in ("inotify", "polling"):
        watcher = ShareWatcher([tmp_path / "missing"], observer=kind)
        with pytest.raises(OSError):
            watcher.start()
        watcher.stop()


# -- observer choice ----------------------------------------------------------------------


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid 0 0
//fileserver/optimizer /mnt/optimizer_share cifs rw,vers=3.1.1 0 0
/dev/sdb1 /mnt ext4 rw 0 0
server:/export /srv/nfs nfs4 rw 0 0
user@host:/data /home/a/remote fuse.sshfs rw 0 0
/dev/sdc1 /media/usb fuseblk rw 0 0
//srv/share /mnt/my\\040share smb3 rw 0 0
"""


@pytest.mark.parametrize(("root", "expected"), [
    ("/mnt/optimizer_share", "polling"),
    ("/mnt/optimizer_share/sub", "polling"),
    ("/mnt/optimizer_share2", "inotify"),  # a sibling on the ext4 /mnt, not inside the cifs
    ("/mnt/other", "inotify"),
    ("/srv/nfs/jobs", "polling"),
    ("/home/a/remote/share", "polling"),
    ("/media/usb/share", "inotify"),
    ("/mnt/my share/x", "polling"),
    ("/var/share", "inotify"),
])
def test_auto_chooses_polling_on_network_mounts(root: str, expected: str) -> None:
    assert choose_observer(Path(root), "auto", mounts_text=MOUNTS) == expected


def test_explicit_settings_win_and_bad_settings_are_refused() -> None:
    assert choose_observer(Path("/mnt/optimizer_share"), "inotify", mounts_text=MOUNTS) \
        == "inotify"
    assert choose_observer(Path("/"), "polling", mounts_text=MOUNTS) == "polling"
    assert choose_observer(Path("/x"), "auto", mounts_text="") == "polling"  # unknown: safe
    with pytest.raises(ValueError, match="observer must be"):
        choose_observer(Path("/"), "fsevents")


def test_auto_reads_this_machines_mount_table(tmp_path: Path) -> None:
    mounts = Path("/proc/mounts").read_text()
    fs_type = mount_fs_type(tmp_path.absolute(), mounts)
    assert fs_type is not None
    assert choose_observer(tmp_path, "auto") in ("inotify", "polling")
