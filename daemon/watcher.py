"""File events from the share, as hints that make the supervisor scan sooner.

Events are never the truth: the periodic full rescan is (DESIGN.md section 3). So the handler
only sets an event (and calls an optional callback); it never reads or moves files. Anything
that may have lost events makes the next wait return at once, so the caller rescans: an
inotify queue overflow, an emitter thread that died, a watched folder that vanished. A
broken observer is replaced on the next :meth:`ShareWatcher.wait_for_hint`.

inotify only sees changes made through this machine's kernel: on the Samba server itself it
sees every client's writes, but on a client that mounts the share over CIFS/NFS it sees none
of the other machines' writes. That is why the observer is chosen from the mount's type.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.polling import PollingObserver

from daemon.share import ShareLayout, is_ignored_name

logger = logging.getLogger(__name__)

ObserverKind = Literal["inotify", "polling"]

#: File system types whose changes by other machines inotify cannot see.
NETWORK_FS_TYPES = frozenset({
    "cifs", "smb3", "smbfs", "nfs", "nfs4", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs",
    "beegfs", "ncpfs", "davfs", "sshfs", "virtiofs",
})
#: watchdog logs this (at WARNING) when the kernel's inotify queue overflowed.
_OVERFLOW_LOGGER = "watchdog.observers.inotify_c"
#: How long watchdog holds an IN_MOVED_FROM to pair it with its IN_MOVED_TO (its default is
#: 0.5 s). Its event thread sleeps out that hold even once the pair is complete, so a job
#: dropped the recommended way (temp file renamed into jobs/queue/) was seen up to 0.5 s
#: late. Both halves of a rename come in one read of the inotify descriptor, so a short hold
#: still pairs them; and for us events are only hints anyway.
INOTIFY_MOVE_PAIRING_SECONDS = 0.01
#: Where watchdog keeps that hold: ``InotifyMoveEventGrouper`` (7.x), ``InotifyBuffer`` before.
_MOVE_PAIRING_CLASSES = (
    ("watchdog.observers.inotify_move_event_grouper", "InotifyMoveEventGrouper"),
    ("watchdog.observers.inotify_buffer", "InotifyBuffer"),
)


def _shorten_inotify_move_pairing() -> None:
    """Set watchdog's move-pairing hold (a class attribute read when a watch starts)."""
    for module_name, class_name in _MOVE_PAIRING_CLASSES:
        try:
            holder = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        holder.delay = INOTIFY_MOVE_PAIRING_SECONDS


def _unescape_mount_field(text: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes (\\040...)."""
    for code in ("040", "011", "012", "134"):
        text = text.replace(f"\\{code}", chr(int(code, 8)))
    return text


def mount_fs_type(path: Path, mounts_text: str) -> str | None:
    """The file system type of the mount holding ``path`` (longest matching mount point)."""
    target = str(path)
    best: tuple[int, str] | None = None
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point = _unescape_mount_field(parts[1]).rstrip("/") or "/"
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), parts[2])
    return best[1] if best else None


def is_network_fs(fs_type: str) -> bool:
    """Network or FUSE-remote file systems (``fuseblk`` is a local disk, e.g. NTFS)."""
    return fs_type in NETWORK_FS_TYPES or (fs_type.startswith("fuse.") and fs_type != "fuseblk")


def choose_observer(share_root: Path, setting: str, *,
                    mounts_text: str | None = None) -> ObserverKind:
    """Pick the observer for ``share_root`` from the config's ``observer`` setting.

    ``"inotify"`` and ``"polling"`` are taken as given. ``"auto"`` looks up the mount holding
    the share in ``/proc/mounts`` (or ``mounts_text``): a network mount (cifs, smb3, nfs,
    nfs4, fuse.sshfs, ...) gets polling, a local disk gets inotify. If the mount table cannot
    be read, polling is chosen: it works everywhere, only more slowly.

    Raises:
        ValueError: ``setting`` is not auto, inotify or polling.
    """
    if setting == "inotify":
        return "inotify"
    if setting == "polling":
        return "polling"
    if setting != "auto":
        raise ValueError(f"observer must be 'auto', 'inotify' or 'polling', got {setting!r}")
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "polling"
    fs_type = mount_fs_type(Path(share_root).absolute(), mounts_text)
    kind: ObserverKind = "polling" if fs_type is None or is_network_fs(fs_type) else "inotify"
    logger.info("Share %s is on a %s file system: watching it with %s", share_root,
                fs_type or "unknown", kind)
    return kind


class _HintHandler(FileSystemEventHandler):
    """Turns file events into hints; runs on the observer's thread, so it does nothing else."""

    def __init__(self, watcher: ShareWatcher) -> None:
        self._watcher = watcher

    def _file_event(self, event: FileSystemEvent, path: str | bytes) -> None:
        changed = Path(os.fsdecode(path))
        if not event.is_directory and not is_ignored_name(changed.name):
            self._watcher.hint(changed)

    def on_created(self, event: FileSystemEvent) -> None:
        self._file_event(event, event.src_path)

    def on_modified(self, event: FileSystemEvent) -> None:
        self._file_event(event, event.src_path)

    def on_closed(self, event: FileSystemEvent) -> None:
        self._file_event(event, event.src_path)

    def on_moved(self, event: FileSystemEvent) -> None:
        self._file_event(event, event.dest_path)

    def on_deleted(self, event: FileSystemEvent) -> None:
        folder = Path(os.fsdecode(event.src_path))
        if event.is_directory and folder in self._watcher.folders:
            self._watcher.report_failure(f"watched folder {folder} was deleted")


class _OverflowLogHandler(logging.Handler):
    """watchdog reports an inotify queue overflow only in its log; treat it as a hint."""

    def __init__(self, watcher: ShareWatcher) -> None:
        super().__init__(level=logging.WARNING)
        self._watcher = watcher

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._watcher.report_failure("inotify queue overflowed; events were lost")


class ShareWatcher:
    """Watches input/ and jobs/queue/ (non-recursive) and wakes the supervisor.

    Args:
        folders: The folders to watch (``ShareWatcher.for_layout`` gives the usual two).
        observer: ``"inotify"`` or ``"polling"`` (see :func:`choose_observer`).
        polling_interval_seconds: Seconds between polls with ``"polling"``.
        on_hint: Optional callback with the changed path (or None for "rescan everything"),
            called on the observer's thread: keep it short and thread-safe.
    """

    def __init__(self, folders: Sequence[Path], *, observer: ObserverKind,
                 polling_interval_seconds: float = 1.0,
                 on_hint: Callable[[Path | None], None] | None = None) -> None:
        if observer not in ("inotify", "polling"):
            raise ValueError(f"observer must be 'inotify' or 'polling', got {observer!r}")
        self.folders = tuple(Path(f).absolute() for f in folders)
        self.kind: ObserverKind = observer
        self.polling_interval_seconds = polling_interval_seconds
        self._on_hint = on_hint
        self._hint = threading.Event()
        self._failure: str | None = None
        self._observer: BaseObserver | None = None
        self._overflow_handler = _OverflowLogHandler(self)
        self._restart_failed = False

    @classmethod
    def for_layout(cls, layout: ShareLayout, *, observer: ObserverKind,
                   polling_interval_seconds: float = 1.0,
                   on_hint: Callable[[Path | None], None] | None = None) -> ShareWatcher:
        """A watcher of the share's two drop folders, input/ and jobs/queue/."""
        return cls((layout.input, layout.queue), observer=observer,
                   polling_interval_seconds=polling_interval_seconds, on_hint=on_hint)

    def start(self) -> None:
        """Start watching.

        Raises:
            OSError: A folder cannot be watched (missing, or out of inotify watches).
        """
        if self.kind == "inotify":
            logging.getLogger(_OVERFLOW_LOGGER).addHandler(self._overflow_handler)
        self._failure = None
        self._observer = self._start_observer()

    def stop(self) -> None:
        """Stop the observer and join its threads (idempotent)."""
        logging.getLogger(_OVERFLOW_LOGGER).removeHandler(self._overflow_handler)
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()

    def hint(self, path: Path | None = None) -> None:
        """Wake the waiter (also usable by other parts of the daemon: "rescan now")."""
        self._hint.set()
        if self._on_hint is not None:
            self._on_hint(path)

    def report_failure(self, reason: str) -> None:
        """Events may have been lost: rescan now, and rebuild the observer on the next wait."""
        logger.warning("File watching needs a rescan: %s", reason)
        self._failure = reason
        self.hint(None)

    def wait_for_hint(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True if a hint arrived (then scan at once).

        Hints that arrive while the caller scans are kept for the next call, so none is lost.
        A dead or failed observer is replaced first.
        """
        self._restart_if_broken()
        woke = self._hint.wait(timeout)
        self._hint.clear()
        return woke

    @property
    def healthy(self) -> bool:
        """Whether the observer and all its emitters are running."""
        observer = self._observer
        return (observer is not None and self._failure is None and observer.is_alive()
                and all(emitter.is_alive() for emitter in observer.emitters))

    def _start_observer(self) -> BaseObserver:
        if self.kind == "inotify":
            _shorten_inotify_move_pairing()
        observer: BaseObserver = (
            InotifyObserver() if self.kind == "inotify"
            else PollingObserver(timeout=self.polling_interval_seconds))
        handler = _HintHandler(self)
        try:
            for folder in self.folders:
                observer.schedule(handler, str(folder), recursive=False)
            observer.start()
        except BaseException:
            observer.stop()
            if observer.is_alive():
                observer.join()
            raise
        return observer

    def _restart_if_broken(self) -> None:
        if self._observer is None or self.healthy:
            return
        old, self._observer = self._observer, None
        old.stop()
        old.join()
        try:
            self._observer = self._start_observer()
        except OSError as exc:
            if not self._restart_failed:
                logger.error("Cannot restart file watching (%s); relying on periodic rescans "
                             "until it works again", exc)
            self._restart_failed = True
            self._observer = old  # keep the dead one so the next wait tries again
            return
        if self._restart_failed:
            logger.info("File watching works again")
        self._restart_failed = False
        self._failure = None
        self.hint(None)
