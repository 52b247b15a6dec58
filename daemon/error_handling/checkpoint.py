"""Checkpoints of a job's state: saved atomically, verified on load, never pickled.

Each job has one folder ``<base_directory>/<job_id>/`` with one ``<name>.ckpt`` file per
checkpoint and a ``metadata.json`` index (name, time, description, size, sha256), laid out
as described in :mod:`.checkpoint_folder`.

A ``.ckpt`` file is magic bytes, a JSON header (the encoded state and a table of array
buffers), the raw buffers, and a trailing sha256 (:mod:`.checkpoint_format`). Pickle is
never used: the folder is on a share that users can write, and unpickling a planted file
would run its code. Loading parses only JSON and dtype strings and reads array bytes into
fresh ``np.empty`` buffers.

Every file is written to a temp file in the same folder, flushed, fsynced and renamed over
its final name, and the folder is fsynced: a reader never sees half a checkpoint, and a
crash mid-write leaves the previous checkpoints valid.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .checkpoint_folder import (
    CheckpointInfo,
    JobFolder,
    check_name,
    file_name,
    prune_expired_jobs,
    remove_quietly,
    temp_path,
)
from .checkpoint_format import encode_checkpoint, read_checkpoint, write_checkpoint
from .config import CheckpointConfig, load_error_handling_config
from .errors import CheckpointLoadError, CheckpointSaveError

logger = logging.getLogger(__name__)


class CheckpointManager:
    """Saves, lists, verifies and loads the checkpoints of one job.

    Args:
        job_id: The job's id, also the name of its folder; generated as
            ``job_<YYYYmmdd_HHMMSS_ffffff>`` (UTC) when omitted.
        base_dir: Folder holding one folder per job; defaults to the config's
            ``base_directory``. The job folder is created by the first save.
        config: The ``checkpoint`` config section; loaded with
            :func:`~.config.load_error_handling_config` when omitted.
        clock: Wall-clock source of checkpoint times (injectable for tests).

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
        self.job_id = check_name(job_id, "job id")
        self.directory = Path(base_dir or self.config.base_directory) / self.job_id
        self._folder = JobFolder(self.directory, self.job_id)

    # -- saving ---------------------------------------------------------------------------

    def should_save(self, stage: str) -> bool:
        """Whether the config asks for a checkpoint after ``stage``.

        ``"algorithm:GA"`` counts as ``"algorithm"``. Always ``False`` when checkpoints are
        disabled.
        """
        return self.config.enabled and stage.split(":", 1)[0] in self.config.save_on_stages

    def save_checkpoint(
        self, state: dict[str, Any], name: str, description: str = ""
    ) -> CheckpointInfo | None:
        """Save ``state`` as checkpoint ``name``, replacing one of the same name.

        Only the newest ``max_checkpoints_per_job`` checkpoints are kept.

        Args:
            state: JSON values, numpy arrays (numeric, bool, datetime, string dtypes) and
                pandas DataFrames/Series, nested in dicts, lists and tuples.
            name: The checkpoint's name (safe file-name characters).
            description: Free text stored with it.

        Returns:
            The new checkpoint's record, or ``None`` when checkpoints are disabled in the
            config (then nothing is written).

        Raises:
            CheckpointSaveError: A value cannot be stored (its key is named), or the file
                system refused (disk full, permissions, a file where the folder should
                be); then ``context`` holds ``path``, ``errno`` and ``errno_name``, the temp
                file is removed and the earlier checkpoints stay valid (at capacity, the
                oldest one was already retired for this save).
            ValueError: ``name`` is not a safe file name.
        """
        check_name(name, "checkpoint name")
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
        try:
            encoded = encode_checkpoint(state, meta)
        except CheckpointSaveError as exc:
            exc.context.update(job_id=self.job_id, checkpoint=name)
            raise
        final = self.directory / file_name(name)
        temp = temp_path(final)
        try:
            self._folder.create()
            # The expensive write happens outside the lock, so saves of one job overlap.
            with open(self._open_temp(temp, name), "wb") as file:
                sha256 = write_checkpoint(file, encoded)
            info = CheckpointInfo(
                name, final.name, created_at, epoch, description, encoded.size_bytes, sha256
            )
            with self._folder.lock():
                # Rename under the lock: the file in place always matches its metadata entry.
                removed = self._record(info, temp, final)
        except OSError as exc:
            raise self._save_error(name, exc, final) from exc
        finally:
            remove_quietly(temp)
        logger.info(
            "Job %s: checkpoint %s saved (%d bytes, %.1f ms)%s",
            self.job_id,
            name,
            info.size_bytes,
            (time.monotonic() - started) * 1000,
            f", removed {removed}" if removed else "",
        )
        return info

    def _open_temp(self, temp: Path, name: str) -> int:
        """Open the temp file for checkpoint ``name``; return its descriptor.

        When the job is at ``max_checkpoints_per_job``, this save will push out the oldest
        checkpoint anyway, so it is retired now and its file reused: overwriting allocated
        blocks is about a third faster than writing a new file and freeing the old one (no
        block allocation, no discard of freed blocks). A failed save then leaves one
        checkpoint fewer, and every listed one valid.
        """
        if self._retire_oldest(temp, name):
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                remove_quietly(temp)
            else:
                status = os.fstat(fd)
                # Never write through a second hard link a share user may have planted.
                if stat.S_ISREG(status.st_mode) and status.st_nlink == 1:
                    return fd
                os.close(fd)
                remove_quietly(temp)
        return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)

    def _retire_oldest(self, temp: Path, name: str) -> bool:
        """At capacity, unlist the oldest checkpoint and move its file to ``temp``."""
        with self._folder.lock():
            entries = self._folder.read_entries()
            others = [entry for entry in entries if entry.name != name]
            if len(others) < self.config.max_checkpoints_per_job:
                return False
            oldest = others[0]
            self._folder.write_metadata([entry for entry in entries if entry is not oldest])
            logger.info(
                "Job %s: checkpoint %s retired to keep %d",
                self.job_id,
                oldest.name,
                self.config.max_checkpoints_per_job,
            )
            try:
                os.rename(self.directory / oldest.file_name, temp)
            except FileNotFoundError:
                return False
            return True

    def _record(self, info: CheckpointInfo, temp: Path, final: Path) -> list[str]:
        """Put the file in place, add it to the metadata and apply retention.

        Needs the job lock. Returns the names of the checkpoints removed by retention.
        """
        entries = [e for e in self._folder.read_entries() if e.name != info.name] + [info]
        os.replace(temp, final)
        entries.sort(key=lambda e: e.created_epoch)  # stable: ties keep the save order
        excess = max(0, len(entries) - self.config.max_checkpoints_per_job)
        removed, kept = entries[:excess], entries[excess:]
        self._folder.write_metadata(kept)
        for old in removed:
            remove_quietly(self.directory / old.file_name)
        self._folder.remove_stale_temps(now=time.time())
        self._folder.fsync()
        return [old.name for old in removed]

    def _save_error(self, name: str, exc: OSError, final: Path) -> CheckpointSaveError:
        path = exc.filename or final  # write errors name no file; mkdir errors name the folder
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
        check_name(name, "checkpoint name")
        if not self.directory.is_dir():
            return False
        path = self.directory / file_name(name)
        with self._folder.lock():
            entries = self._folder.read_entries()
            kept = [e for e in entries if e.name != name]
            existed = len(kept) != len(entries) or path.exists()
            if len(kept) != len(entries):
                self._folder.write_metadata(kept)
            remove_quietly(path)
            self._folder.fsync()
        if existed:
            logger.info("Job %s: checkpoint %s deleted", self.job_id, name)
        return existed

    # -- listing and loading --------------------------------------------------------------

    def list_checkpoints(self) -> list[CheckpointInfo]:
        """All checkpoints of the job, oldest first (rebuilding a lost ``metadata.json``)."""
        if not self.directory.is_dir():
            return []
        entries = self._folder.parse_metadata()
        if entries is not None:
            return entries
        with self._folder.lock():
            return self._folder.read_entries()

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
            CheckpointLoadError: There is no such checkpoint (check :meth:`has_checkpoints`
                first), or it is missing, truncated, not a checkpoint or fails its sha256
                check; ``previous`` then names the newest older checkpoint, if any. See
                :meth:`load_latest_valid` to fall back automatically.
            ValueError: ``name`` is not a safe file name.
        """
        entries = self.list_checkpoints()
        if name is not None:
            check_name(name, "checkpoint name")
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
                    f"sha256 {loaded.sha256} does not match the metadata's {info.sha256}"
                )
        except (CheckpointLoadError, OSError) as exc:
            reason = exc.message if isinstance(exc, CheckpointLoadError) else str(exc)
            raise CheckpointLoadError(
                f"Job {self.job_id}: checkpoint {info.name} ({path}) is unusable: {reason}",
                previous=entries[index - 1].name if index > 0 else None,
                context={"job_id": self.job_id, "checkpoint": info.name, "path": str(path)},
            ) from exc
        logger.info("Job %s: checkpoint %s loaded", self.job_id, info.name)
        return loaded.state or {}


__all__ = ["CheckpointInfo", "CheckpointManager", "prune_expired_jobs"]
