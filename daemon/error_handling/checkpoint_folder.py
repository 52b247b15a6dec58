"""One job's checkpoint folder on disk: safe names, the lock, ``metadata.json``, temp files.

Layout of ``<base_directory>/<job_id>/``:

- ``<name>.ckpt``: checkpoints (:mod:`.checkpoint_format`).
- ``metadata.json``: name, time, description, size and sha256 of each checkpoint. It is a
  cache of the files' own headers, rebuilt from them when missing or corrupt.
- ``.lock``: ``flock``-ed around every read-modify-write of ``metadata.json`` so that
  processes saving checkpoints of the same job never lose each other's entries. ``flock``
  is local to a host, which is where a job's processes run.
- ``.<file>.<pid>.<token>.tmp``: a file being written. Readers ignore these; the next save
  removes those whose writer is gone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .checkpoint_format import read_checkpoint
from .errors import CheckpointLoadError

logger = logging.getLogger(__name__)

#: Job ids and checkpoint names become file names: this charset and no leading dot.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
#: Extension of checkpoint files.
CHECKPOINT_SUFFIX = ".ckpt"
#: The per-job index of checkpoints.
METADATA_FILE = "metadata.json"
#: The per-job lock file guarding metadata updates.
LOCK_FILE = ".lock"
#: Names made by :func:`temp_path`; the pid tells whether the writer may still be alive.
TEMP_PATTERN = re.compile(r"\.(?P<name>[A-Za-z0-9._-]+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")
#: A temp file older than this is stale even if its pid is alive (pid reuse, other hosts).
STALE_TEMP_SECONDS = 3600.0
#: Version of the metadata.json layout.
METADATA_VERSION = 1
_SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint as recorded in ``metadata.json``."""

    name: str
    file_name: str
    #: ISO 8601 time in UTC.
    created_at: str
    #: The same time in seconds since the epoch.
    created_epoch: float
    description: str
    size_bytes: int
    #: sha256 of the whole file, as ``sha256sum`` prints it.
    sha256: str

    @classmethod
    def from_dict(cls, raw: Any) -> CheckpointInfo:
        """Build from a metadata entry, refusing entries that could point elsewhere.

        Raises:
            ValueError: A field is missing or has the wrong type or form.
        """
        try:
            info = cls(
                name=str(raw["name"]),
                file_name=str(raw["file_name"]),
                created_at=str(raw["created_at"]),
                created_epoch=float(raw["created_epoch"]),
                description=str(raw["description"]),
                size_bytes=int(raw["size_bytes"]),
                sha256=str(raw["sha256"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"metadata entry is incomplete: {exc!r}") from exc
        if not NAME_PATTERN.fullmatch(info.name) or info.file_name != file_name(info.name):
            raise ValueError(f"entry {info.name!r} has an invalid name or file name")
        return info


def check_name(name: str, what: str) -> str:
    """Return ``name`` if it is a safe file name (no traversal, no hidden files).

    Raises:
        ValueError: It is not.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} must be 1-128 characters of A-Z a-z 0-9 . _ - "
            "and must not start with a dot"
        )
    return name


def file_name(name: str) -> str:
    """The file name of checkpoint ``name``."""
    return name + CHECKPOINT_SUFFIX


def temp_path(final: Path) -> Path:
    """A fresh temp name next to ``final``, recognisable by :data:`TEMP_PATTERN`."""
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def remove_quietly(path: Path) -> None:
    """Remove a temp file if it is still there; a failure here must not hide the real one."""
    with contextlib.suppress(OSError):
        os.unlink(path)


class JobFolder:
    """The folder of one job's checkpoints and its metadata, lock and temp files."""

    def __init__(self, path: Path, job_id: str) -> None:
        self.path = path
        self.job_id = job_id

    def create(self) -> None:
        """Create the folder (and parents); refuse a symlink planted in its place."""
        if self.path.is_symlink():
            raise OSError(errno.ELOOP, "checkpoint folder is a symlink", str(self.path))
        self.path.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self, *, blocking: bool = True) -> Iterator[None]:
        """Hold the job's lock.

        Raises:
            BlockingIOError: ``blocking`` is false and another process holds it.
        """
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def fsync(self) -> None:
        """Make renames and removals in the folder durable."""
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def parse_metadata(self) -> list[CheckpointInfo] | None:
        """The entries of ``metadata.json``, oldest first; ``None`` if missing or corrupt."""
        path = self.path / METADATA_FILE
        try:
            document = json.loads(path.read_bytes())
            entries = [CheckpointInfo.from_dict(raw) for raw in document["checkpoints"]]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("Job %s: %s is unreadable: %s", self.job_id, path, exc)
            return None
        return sorted(entries, key=lambda e: e.created_epoch)

    def read_entries(self) -> list[CheckpointInfo]:
        """The metadata entries, rebuilt from the files when needed. Needs the lock."""
        entries = self.parse_metadata()
        if entries is None:
            entries = self._rebuild_entries()
            if entries or (self.path / METADATA_FILE).exists():
                logger.warning(
                    "Job %s: %s missing or corrupt; rebuilt with %d checkpoints",
                    self.job_id,
                    self.path / METADATA_FILE,
                    len(entries),
                )
                self.write_metadata(entries)
        return entries

    def _rebuild_entries(self) -> list[CheckpointInfo]:
        """Entries for every checkpoint file that verifies against its own digest."""
        entries = []
        for path in sorted(self.path.glob("*" + CHECKPOINT_SUFFIX)):
            try:
                found = read_checkpoint(path, decode_state=False)
                raw = {**found.header, "file_name": path.name}
                raw.update(size_bytes=found.size_bytes, sha256=found.sha256)
                entries.append(CheckpointInfo.from_dict(raw))
            except (CheckpointLoadError, OSError, ValueError) as exc:
                logger.warning(
                    "Job %s: %s left out of the rebuilt metadata: %s", self.job_id, path, exc
                )
        return sorted(entries, key=lambda e: e.created_epoch)

    def write_metadata(self, entries: list[CheckpointInfo]) -> None:
        """Replace ``metadata.json`` atomically (temp, fsync, rename). Needs the lock."""
        document = {
            "format": METADATA_VERSION,
            "job_id": self.job_id,
            "checkpoints": [asdict(entry) for entry in entries],
        }
        path = self.path / METADATA_FILE
        temp = temp_path(path)
        try:
            with open(temp, "x", encoding="utf-8") as file:
                json.dump(document, file, indent=1)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        finally:
            remove_quietly(temp)

    def remove_stale_temps(self, *, now: float) -> None:
        """Remove temp files whose writer is gone (dead pid) or that are over an hour old."""
        for entry in os.scandir(self.path):
            match = TEMP_PATTERN.fullmatch(entry.name)
            if not match:
                continue
            with contextlib.suppress(FileNotFoundError):
                stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS
                if stale or not _pid_alive(int(match["pid"])):
                    os.unlink(entry.path)
                    logger.info("Job %s: removed leftover temp file %s", self.job_id, entry.path)

    def newest_epoch(self) -> float:
        """Time of the newest checkpoint: from metadata, else file mtimes, else the folder's."""
        entries = self.parse_metadata()
        if entries:
            return max(entry.created_epoch for entry in entries)
        mtimes = [p.stat().st_mtime for p in self.path.glob("*" + CHECKPOINT_SUFFIX)]
        return max(mtimes, default=self.path.stat().st_mtime)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def prune_expired_jobs(
    base_dir: str | os.PathLike[str],
    *,
    max_age_days: float,
    now: float | None = None,
    keep: Collection[str] = (),
) -> list[str]:
    """Delete job folders whose newest checkpoint is older than ``max_age_days``.

    Only folders with valid job-id names are touched and symlinks are never followed. A job
    whose lock is held (a save in progress) is skipped.

    Args:
        base_dir: The checkpoint base folder (config ``checkpoint.base_directory``).
        max_age_days: Usually config ``checkpoint.cleanup_after_days``.
        now: Current time in epoch seconds (injectable for tests).
        keep: Job ids whose checkpoints must stay whatever their age (jobs that are queued,
            running or waiting to retry still need them to resume).

    Returns:
        The removed job ids, sorted.
    """
    cutoff = (time.time() if now is None else now) - max_age_days * _SECONDS_PER_DAY
    removed: list[str] = []
    try:
        entries = sorted(os.scandir(base_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not (entry.is_dir(follow_symlinks=False) and NAME_PATTERN.fullmatch(entry.name)):
            continue
        if entry.name in keep:
            continue
        folder = JobFolder(Path(entry.path), entry.name)
        if folder.newest_epoch() >= cutoff:
            continue
        try:
            with folder.lock(blocking=False):
                shutil.rmtree(folder.path)
        except BlockingIOError:
            logger.info("Job %s: checkpoints expired but in use; kept", entry.name)
            continue
        logger.info("Job %s: checkpoints older than %s days removed", entry.name, max_age_days)
        removed.append(entry.name)
    return removed
