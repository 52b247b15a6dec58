"""Checkpoints of a job's state: saved atomically, verified on load, never pickled.

On disk, each job has one folder ``<base_directory>/<job_id>/`` holding:

- ``<name>.ckpt``: one checkpoint in the format of :mod:`.checkpoint_format` (magic bytes,
  a JSON header with the encoded state and a table of raw array buffers, the buffers,
  and a trailing sha256). Pickle is never used: the folder is on a share that users can
  write, and unpickling a planted file would run its code. Loading parses only JSON and
  dtype strings and reads array bytes into fresh ``np.empty`` buffers.
- ``metadata.json``: name, time, description, size and sha256 of every checkpoint, oldest
  first. It is a cache of the files' own headers: when it is missing or corrupt it is
  rebuilt from them.
- ``.lock``: ``flock``-ed around every read-modify-write of ``metadata.json``, so
  processes saving checkpoints of the same job never lose each other's entries (the lock
  is local to the host, which is where job processes run).
- ``.<name>.<pid>.<token>.tmp``: a file being written. Every file is written to such a
  temp file in the same folder, flushed, fsynced and renamed over its final name, and the
  folder is fsynced, so a reader never sees half a checkpoint. Temp files left by a crash
  are ignored by readers and removed by the next save.
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .checkpoint_format import encode_checkpoint, read_checkpoint, write_checkpoint
from .config import CheckpointConfig, load_error_handling_config
from .errors import CheckpointLoadError, CheckpointSaveError

logger = logging.getLogger(__name__)

#: Job ids and checkpoint names become file names: this charset and no leading dot.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
#: Extension of checkpoint files.
CHECKPOINT_SUFFIX = ".ckpt"
#: The per-job index of checkpoints.
METADATA_FILE = "metadata.json"
#: The per-job lock file guarding metadata updates.
LOCK_FILE = ".lock"
#: Temp files written by :func:`_temp_path`; the pid tells whether the writer may be alive.
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
    created_at: str  #: ISO 8601 time in UTC
    created_epoch: float  #: the same time as seconds since the epoch
    description: str
    size_bytes: int
    sha256: str  #: of the whole file, as ``sha256sum`` prints it

    @classmethod
    def from_dict(cls, raw: Any) -> CheckpointInfo:
        """Build from a metadata entry, refusing entries that could point elsewhere.

        Raises:
            ValueError: A field is missing or has the wrong type or form.
        """
        info = cls(
            name=str(raw["name"]),
            file_name=str(raw["file_name"]),
            created_at=str(raw["created_at"]),
            created_epoch=float(raw["created_epoch"]),
            description=str(raw["description"]),
            size_bytes=int(raw["size_bytes"]),
            sha256=str(raw["sha256"]),
        )
        if not NAME_PATTERN.fullmatch(info.name) or info.file_name != _file_name(info.name):
            raise ValueError(f"entry {info.name!r} has an invalid name or file name")
        return info


class CheckpointManager:
    """Saves, lists, verifies and loads the checkpoints of one job.

    Args:
        job_id: The job's id, also the name of its folder; generated as
            ``job_<YYYYmmdd_HHMMSS_ffffff>`` (UTC) when omitted.
        base_dir: Folder holding one folder per job; defaults to the config's
            ``base_directory``.
        config: The ``checkpoint`` config section; loaded with
            :func:`~.config.load_error_handling_config` when omitted.
        clock: Wall-clock time source for checkpoint times (injectable for tests).

    Raises:
        ValueError: ``job_id`` is not a safe folder name.
        ConfigurationError: The config file had to be loaded and is invalid.
    """

    def __init__(
        self,
        job_id: str | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        config: CheckpointConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config if config is not None else load_error_handling_config().checkpoint
        self._clock = clock
        if job_id is None:
            job_id = datetime.fromtimestamp(clock(), tz=UTC).strftime("job_%Y%m%d_%H%M%S_%f")
        self.job_id = _check_name(job_id, "job id")
        self.directory = Path(base_dir or self.config.base_directory) / self.job_id

    # -- saving ---------------------------------------------------------------------------

    def should_save(self, stage: str) -> bool:
        """Whether the config asks for a checkpoint after ``stage`` (``"algorithm:GA"`` counts
        as ``"algorithm"``). Always ``False`` when checkpoints are disabled."""
        return self.config.enabled and stage.split(":", 1)[0] in self.config.save_on_stages

    def save_checkpoint(
        self, state: dict[str, Any], name: str, description: str = ""
    ) -> CheckpointInfo | None:
        """Save ``state`` as checkpoint ``name``, replacing one of the same name.

        The newest ``max_checkpoints_per_job`` checkpoints are kept; older ones are deleted.

        Args:
            state: JSON values, numpy arrays (numeric, bool, datetime, string dtypes) and
                pandas DataFrames/Series, nested in dicts, lists and tuples.
            name: The checkpoint's name (safe file-name characters).
            description: Free text stored with it.

        Returns:
            The new checkpoint's record, or ``None`` when checkpoints are disabled in the
            config (then nothing is written).

        Raises:
            CheckpointSaveError: A value cannot be stored (the key is named), or the file
                system refused (disk full, permissions, a file where the folder should
                be). ``context`` holds ``path``, ``errno`` and ``errno_name``; the temp file
                is removed and earlier checkpoints stay valid.
            ValueError: ``name`` is not a safe file name.
        """
        _check_name(name, "checkpoint name")
        if not self.config.enabled:
            logger.debug("Job %s: checkpoints disabled, %s not saved", self.job_id, name)
            return None
        if not isinstance(state, dict):
            raise CheckpointSaveError(f"Job {self.job_id}: state must be a dict")
        started = time.monotonic()
        epoch = self._clock()
        created_at = datetime.fromtimestamp(epoch, tz=UTC).isoformat()
        meta = {
            "job_id": self.job_id,
            "name": name,
            "description": description,
            "created_at": created_at,
            "created_epoch": epoch,
        }
        encoded = encode_checkpoint(state, meta)
        final = self.directory / _file_name(name)
        temp = _temp_path(final)
        try:
            _make_folder(self.directory)
            with open(temp, "xb") as file:
                sha256 = write_checkpoint(file, encoded)
            info = CheckpointInfo(
                name, final.name, created_at, epoch, description, encoded.size_bytes, sha256
            )
            with self._locked():
                os.replace(temp, final)
                removed = self._record(info)
                _fsync_folder(self.directory)
        except OSError as exc:
            raise self._save_error(name, exc) from exc
        finally:
            _remove_quietly(temp)
        logger.info(
            "Job %s: checkpoint %s saved (%d bytes, %.1f ms)%s",
            self.job_id,
            name,
            info.size_bytes,
            (time.monotonic() - started) * 1000,
            f", removed {removed}" if removed else "",
        )
        return info

    def _record(self, info: CheckpointInfo) -> list[str]:
        """Add ``info`` to the metadata, apply retention; return the removed names.

        Called with the job lock held, after the file was renamed into place.
        """
        entries = [e for e in self._read_entries() if e.name != info.name] + [info]
        entries.sort(key=lambda e: e.created_epoch)  # stable: ties keep the save order
        excess = max(0, len(entries) - self.config.max_checkpoints_per_job)
        removed, kept = entries[:excess], entries[excess:]
        self._write_metadata(kept)
        for old in removed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / old.file_name)
        _remove_stale_temps(self.directory, now=time.time())
        return [old.name for old in removed]

    def _save_error(self, name: str, exc: OSError) -> CheckpointSaveError:
        path = exc.filename or self.directory
        code = exc.errno or 0
        return CheckpointSaveError(
            f"Job {self.job_id}: cannot save checkpoint {name} at {path}: {exc.strerror or exc}",
            context={
                "job_id": self.job_id,
                "checkpoint": name,
                "path": str(path),
                "errno": code,
                "errno_name": errno.errorcode.get(code, ""),
            },
        )

    def delete_checkpoint(self, name: str) -> bool:
        """Delete checkpoint ``name``; return whether it existed."""
        _check_name(name, "checkpoint name")
        if not self.directory.is_dir():
            return False
        with self._locked():
            entries = self._read_entries()
            kept = [e for e in entries if e.name != name]
            existed = len(kept) != len(entries)
            if existed:
                self._write_metadata(kept)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / _file_name(name))
                existed = True
            _fsync_folder(self.directory)
        if existed:
            logger.info("Job %s: checkpoint %s deleted", self.job_id, name)
        return existed

    # -- listing and loading --------------------------------------------------------------

    def list_checkpoints(self) -> list[CheckpointInfo]:
        """All checkpoints of the job, oldest first (rebuilding a lost ``metadata.json``)."""
        if not self.directory.is_dir():
            return []
        entries = _parse_metadata(self.directory / METADATA_FILE)
        if entries is not None:
            return entries
        with self._locked():
            return self._read_entries()

    def has_checkpoints(self) -> bool:
        """Whether the job has at least one checkpoint."""
        return bool(self.list_checkpoints())

    def get_latest_checkpoint(self) -> CheckpointInfo | None:
        """The newest checkpoint's record, or ``None`` when there is none."""
        entries = self.list_checkpoints()
        return entries[-1] if entries else None

    def load_checkpoint(self, name: str | None = None) -> dict[str, Any]:
        """Load and verify checkpoint ``name``, or the newest one when ``name`` is None.

        Raises:
            CheckpointLoadError: There is no such checkpoint, or it is missing, truncated,
                not a checkpoint or fails its sha256 check. ``previous`` then names the
                newest older checkpoint (``None`` if there is none); see also
                :meth:`load_latest_valid`.
        """
        entries = self.list_checkpoints()
        if name is not None:
            _check_name(name, "checkpoint name")
            matches = [i for i, entry in enumerate(entries) if entry.name == name]
        else:
            matches = [len(entries) - 1] if entries else []
        if not matches:
            what = f"no checkpoint named {name}" if name else "no checkpoints"
            raise CheckpointLoadError(
                f"Job {self.job_id}: {what} in {self.directory}",
                context={"job_id": self.job_id, "checkpoint": name},
            )
        return self._load_entry(entries, matches[-1])

    def load_latest_valid(self) -> tuple[CheckpointInfo, dict[str, Any]] | None:
        """The newest checkpoint that loads and verifies, skipping (and logging) bad ones.

        Returns:
            ``(record, state)``, or ``None`` when no checkpoint is usable.
        """
        entries = self.list_checkpoints()
        for index in range(len(entries) - 1, -1, -1):
            try:
                return entries[index], self._load_entry(entries, index)
            except CheckpointLoadError as exc:
                logger.warning("%s; trying the previous checkpoint", exc.message)
        if entries:
            logger.error("Job %s: none of %d checkpoints is usable", self.job_id, len(entries))
        return None

    def _load_entry(self, entries: list[CheckpointInfo], index: int) -> dict[str, Any]:
        info = entries[index]
        path = self.directory / info.file_name
        try:
            loaded = read_checkpoint(path)
            if loaded.sha256 != info.sha256:
                raise CheckpointLoadError(
                    f"sha256 {loaded.sha256} does not match metadata {info.sha256}"
                )
        except (CheckpointLoadError, OSError) as exc:
            reason = exc.message if isinstance(exc, CheckpointLoadError) else str(exc)
            previous = entries[index - 1].name if index > 0 else None
            raise CheckpointLoadError(
                f"Job {self.job_id}: checkpoint {info.name} ({path}) is unusable: {reason}",
                previous=previous,
                context={"job_id": self.job_id, "checkpoint": info.name, "path": str(path)},
            ) from exc
        assert loaded.state is not None  # read_checkpoint decodes by default
        logger.info("Job %s: checkpoint %s loaded", self.job_id, info.name)
        return loaded.state

    # -- metadata -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _read_entries(self) -> list[CheckpointInfo]:
        """The metadata entries, rebuilt from the files if needed. Needs the job lock."""
        metadata = self.directory / METADATA_FILE
        entries = _parse_metadata(metadata)
        if entries is None:
            entries = self._rebuild_entries()
            if entries or metadata.exists():
                logger.warning(
                    "Job %s: %s missing or corrupt; rebuilt with %d checkpoints",
                    self.job_id,
                    metadata,
                    len(entries),
                )
                self._write_metadata(entries)
        return entries

    def _rebuild_entries(self) -> list[CheckpointInfo]:
        entries = []
        for path in sorted(self.directory.glob("*" + CHECKPOINT_SUFFIX)):
            try:
                found = read_checkpoint(path, decode_state=False)
                header = found.header
                entries.append(
                    CheckpointInfo.from_dict(
                        {
                            **header,
                            "file_name": path.name,
                            "size_bytes": found.size_bytes,
                            "sha256": found.sha256,
                        }
                    )
                )
            except (CheckpointLoadError, OSError, KeyError, TypeError, ValueError) as exc:
                logger.warning(
                    "Job %s: %s left out of the rebuilt metadata: %s", self.job_id, path, exc
                )
        entries.sort(key=lambda e: e.created_epoch)
        return entries

    def _write_metadata(self, entries: list[CheckpointInfo]) -> None:
        document = {
            "format": METADATA_VERSION,
            "job_id": self.job_id,
            "checkpoints": [asdict(entry) for entry in entries],
        }
        path = self.directory / METADATA_FILE
        temp = _temp_path(path)
        try:
            with open(temp, "x", encoding="utf-8") as file:
                json.dump(document, file, indent=1)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        finally:
            _remove_quietly(temp)


def prune_expired_jobs(
    base_dir: str | os.PathLike[str], *, max_age_days: float, now: float | None = None
) -> list[str]:
    """Delete job folders whose newest checkpoint is older than ``max_age_days``.

    A folder's age comes from its metadata, else from its newest ``.ckpt`` file's mtime,
    else from the folder's own mtime. A job whose lock is held (a save in progress) is
    skipped. Only folders with valid job-id names are touched; symlinks are never followed.

    Args:
        base_dir: The checkpoint base folder (config ``checkpoint.base_directory``).
        max_age_days: Config ``checkpoint.cleanup_after_days``.
        now: Current time in epoch seconds (injectable for tests).

    Returns:
        The removed job ids, sorted.
    """
    cutoff = (time.time() if now is None else now) - max_age_days * _SECONDS_PER_DAY
    removed: list[str] = []
    try:
        folders = sorted(os.scandir(base_dir), key=lambda e: e.name)
    except FileNotFoundError:
        return removed
    for folder in folders:
        if not (folder.is_dir(follow_symlinks=False) and NAME_PATTERN.fullmatch(folder.name)):
            continue
        path = Path(folder.path)
        if _newest_epoch(path) >= cutoff:
            continue
        lock = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(path)
        except BlockingIOError:
            logger.info("Job %s: checkpoints expired but in use; not removed", folder.name)
            continue
        finally:
            os.close(lock)
        logger.info("Job %s: checkpoints older than %s days removed", folder.name, max_age_days)
        removed.append(folder.name)
    return removed


def _newest_epoch(folder: Path) -> float:
    entries = _parse_metadata(folder / METADATA_FILE)
    if entries:
        return max(entry.created_epoch for entry in entries)
    files = [p.stat().st_mtime for p in folder.glob("*" + CHECKPOINT_SUFFIX)]
    return max(files, default=folder.stat().st_mtime)


def _parse_metadata(path: Path) -> list[CheckpointInfo] | None:
    """The entries of ``metadata.json``, oldest first; ``None`` if missing or corrupt."""
    try:
        document = json.loads(path.read_bytes())
        entries = [CheckpointInfo.from_dict(raw) for raw in document["checkpoints"]]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("%s is unreadable: %s", path, exc)
        return None
    return sorted(entries, key=lambda e: e.created_epoch)


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"{what} {name!r} must be 1-128 characters of A-Z a-z 0-9 . _ - "
            "and must not start with a dot"
        )
    return name


def _file_name(name: str) -> str:
    return name + CHECKPOINT_SUFFIX


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _remove_quietly(path: Path) -> None:
    """Remove a temp file if it is still there; a failure here must not hide the real one."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def _make_folder(folder: Path) -> None:
    if folder.is_symlink():  # the share is user-writable: never write through a symlink
        raise OSError(errno.ELOOP, "checkpoint folder is a symlink", str(folder))
    folder.mkdir(parents=True, exist_ok=True)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_temps(folder: Path, *, now: float) -> None:
    """Remove temp files whose writer is gone (dead pid) or that are older than an hour."""
    for entry in os.scandir(folder):
        match = TEMP_PATTERN.fullmatch(entry.name)
        if not match:
            continue
        with contextlib.suppress(FileNotFoundError):
            stale = now - entry.stat(follow_symlinks=False).st_mtime > STALE_TEMP_SECONDS
            if stale or not _pid_alive(int(match["pid"])):
                os.unlink(entry.path)
                logger.info("Removed leftover temp file %s", entry.path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


__all__ = ["CheckpointInfo", "CheckpointManager", "prune_expired_jobs"]
