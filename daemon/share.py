"""The share's folder layout, name rules, path confinement and readiness of dropped files.

Everything here is about files other people write. A dropped file is *ready* only when its
name is not a temp/lock name and its size and mtime have stayed the same for a settle period:
Windows copies can create a file at full size before filling it, so size alone proves nothing.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.error_handling.errors import JobSpecError

#: Names no client means as work: temp, hidden, Office lock and Windows shell files.
IGNORED_PATTERNS = (".*", "~*", "*.tmp", "*.part", "*.crdownload", "thumbs.db", "desktop.ini")
#: The patterns as one regex: every folder listing checks every name (completed/ grows to
#: many thousands), and one match is ~10x cheaper than a fnmatch call per pattern.
_IGNORED = re.compile("|".join(fnmatch.translate(pattern) for pattern in IGNORED_PATTERNS))


def is_ignored_name(name: str) -> bool:
    """Whether a file name is a temp/hidden/lock name that must never become a job."""
    return _IGNORED.match(name.lower()) is not None


@dataclass(frozen=True)
class ShareLayout:
    """Paths of the share's registries (DESIGN.md section 3)."""

    root: Path

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def jobs(self) -> Path:
        return self.root / "jobs"

    @property
    def queue(self) -> Path:
        return self.jobs / "queue"

    @property
    def processing(self) -> Path:
        return self.jobs / "processing"

    @property
    def retry(self) -> Path:
        return self.jobs / "retry"

    @property
    def completed(self) -> Path:
        return self.jobs / "completed"

    @property
    def failed(self) -> Path:
        return self.jobs / "failed"

    @property
    def status(self) -> Path:
        return self.jobs / "status"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def job_logs(self) -> Path:
        return self.logs / "jobs"

    @property
    def state(self) -> Path:
        """Daemon-private state (intake ledger, outbox, recovery histories); not for clients."""
        return self.root / ".heavy_optimizer"

    @property
    def cancel_requests(self) -> Path:
        """``heavy-optimizer cancel`` drops ``<job_id>`` files here for running jobs."""
        return self.state / "cancel"

    def folders(self) -> tuple[Path, ...]:
        return (self.input, self.queue, self.processing, self.retry, self.completed,
                self.failed, self.status, self.output, self.checkpoints, self.logs,
                self.logs / "errors", self.job_logs, self.state, self.state / "outbox",
                self.cancel_requests)

    def ensure(self) -> None:
        """Create every folder (idempotent); the first run on an empty share sets it up."""
        for folder in self.folders():
            folder.mkdir(parents=True, exist_ok=True)

    def active_job_ids(self) -> set[str]:
        """Ids of jobs queued, running or waiting to retry: their checkpoints must stay."""
        return {path.stem for folder in (self.queue, self.processing, self.retry)
                if folder.is_dir() for path in folder.glob("*.json")}

    def record_path(self, registry: Path, job_id: str) -> Path:
        return registry / f"{job_id}.json"

    def output_dir(self, job_id: str) -> Path:
        return self.output / job_id


def confine_input(layout: ShareLayout, name: str) -> Path:
    """Resolve a client-given input file name inside ``input/``, refusing anything else.

    Symlinks are refused outright (a link could point anywhere on the server), as is any
    name that resolves outside the input folder.

    Raises:
        JobSpecError: The name escapes input/, is a symlink, or is not a regular file.
    """
    candidate = layout.input / name
    base = layout.input.resolve()
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as exc:
        raise JobSpecError(f"input_file {name!r} cannot be resolved: {exc}") from exc
    if resolved.parent != base and base not in resolved.parents:
        raise JobSpecError(f"input_file {name!r} points outside the share's input folder")
    try:
        info = os.lstat(candidate)
    except FileNotFoundError as exc:
        raise JobSpecError(
            f"input_file {name!r} was not found in the share's input folder; copy the CSV "
            "into input/ before (or together with) the job file",
            context={"path": str(candidate)},
        ) from exc
    if stat.S_ISLNK(info.st_mode):
        raise JobSpecError(f"input_file {name!r} is a symbolic link; links are not followed")
    if not stat.S_ISREG(info.st_mode):
        raise JobSpecError(f"input_file {name!r} is not a regular file")
    return candidate


def is_open_for_writing(path: Path) -> bool | None:
    """Whether a process on this host (smbd serving a client's upload) still writes ``path``.

    Linux refuses a read lease (``F_SETLEASE``/``F_RDLCK``) with EAGAIN while anyone holds
    the file open for writing, which tells an upload that merely paused apart from one that
    finished. ``None`` when it cannot tell: the file is gone, we neither own it nor have
    CAP_LEASE, or the file system has no leases (NFS, CIFS mounts): then settling decides.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


@dataclass
class _Observation:
    size: int
    mtime_ns: int
    since: float


class SettleTracker:
    """Decides when a dropped file has stopped changing.

    ``stat`` and ``clock`` are injectable so tests can drive readiness without waiting.
    """

    def __init__(
        self,
        *,
        settle_seconds: float,
        stat_file: Callable[[Path], os.stat_result] = os.lstat,
        clock: Callable[[], float] = time.monotonic,
        open_for_writing: Callable[[Path], bool | None] = is_open_for_writing,
    ) -> None:
        self.settle_seconds = settle_seconds
        self._stat = stat_file
        self._clock = clock
        self._open_for_writing = open_for_writing
        self._seen: dict[Path, _Observation] = {}

    def is_settled(self, path: Path) -> bool:
        """True once ``path``'s size and mtime are unchanged for ``settle_seconds``.

        A file still open for writing on this host is never settled, however long the
        writer pauses (see :func:`is_open_for_writing`).
        """
        try:
            info = self._stat(path)
        except FileNotFoundError:
            self._seen.pop(path, None)
            return False
        if self.observe(path, info):
            return self.settle_seconds <= 0 and info.st_size > 0
        now = self._clock()
        seen = self._seen[path]
        if info.st_size == 0 or now - seen.since < self.settle_seconds:
            return False
        if self._open_for_writing(path):
            seen.since = now  # the writer is still there: restart the settle period
            return False
        return True

    def observe(self, path: Path, info: os.stat_result) -> bool:
        """Note ``path``'s size and mtime (from ``info``) without deciding anything.

        Keeping files observed before anyone needs them means a file that has sat unchanged
        is already settled when it is asked about. Returns True when the file is new here or
        changed (its settle period starts now).
        """
        seen = self._seen.get(path)
        if seen is not None and (seen.size, seen.mtime_ns) == (info.st_size, info.st_mtime_ns):
            return False
        self._seen[path] = _Observation(info.st_size, info.st_mtime_ns, self._clock())
        return True

    def forget(self, path: Path) -> None:
        self._seen.pop(path, None)

    def prune(self, existing: set[Path]) -> None:
        """Drop observations of files that are gone (keeps memory bounded)."""
        for path in list(self._seen):
            if path not in existing:
                del self._seen[path]


def _candidate_entries(folder: Path, suffix: str) -> Iterator[os.DirEntry[str]]:
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return
    for entry in entries:
        if not entry.name.lower().endswith(suffix) or is_ignored_name(entry.name):
            continue
        if entry.is_file(follow_symlinks=False) or entry.is_symlink():
            yield entry


def list_candidates(folder: Path, suffix: str) -> Iterator[Path]:
    """Regular files in ``folder`` with ``suffix`` whose names are not temp/lock names."""
    for entry in _candidate_entries(folder, suffix):
        yield Path(entry.path)


def count_candidates(folder: Path, suffix: str) -> int:
    """How many files :func:`list_candidates` would list (without building their paths).

    The daemon counts its registries every second for its status, and completed/ holds every
    job ever run; building a ``Path`` per entry made that the idle daemon's main cost.
    """
    return sum(1 for _ in _candidate_entries(folder, suffix))
