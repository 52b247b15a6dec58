"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The share is read by Windows clients while we write, and the machine can lose power at any
moment. So every file written for others goes: temp file in the same folder (same file
system, so the rename is atomic), write, flush, fsync, ``os.replace``, fsync of the folder
(so the rename itself survives a crash). Temp names start with ``.`` and end with ``.tmp``,
which every reader of the share ignores.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

#: Suffix of in-progress files; readers skip names ending with it.
TEMP_SUFFIX = ".tmp"


def fsync_directory(folder: str | os.PathLike[str]) -> None:
    """Make a rename or create inside ``folder`` durable (no-op where unsupported)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some network file systems refuse fsync on directories; the rename still holds
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[bytes]], object], *, mode: int = 0o644
) -> Path:
    """Write ``path`` atomically; ``write`` receives the open temp file (binary).

    Raises:
        OSError: The write failed; the temp file is removed and ``path`` is unchanged.
    """
    target = Path(path)
    fd, temp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    fsync_directory(target.parent)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda handle: handle.write(data), mode=mode)


def atomic_write_text(path: str | os.PathLike[str], text: str, *, mode: int = 0o644) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"), mode=mode)


def atomic_write_json(path: str | os.PathLike[str], value: Any, *, mode: int = 0o644) -> Path:
    """Write ``value`` as indented JSON atomically (NaN/inf refused: clients parse strictly)."""
    text = json.dumps(value, indent=2, sort_keys=False, allow_nan=False, default=str) + "\n"
    return atomic_write_text(path, text, mode=mode)


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is an in-progress file of ours (or anyone's hidden file)."""
    return name.startswith(".") or name.endswith(TEMP_SUFFIX)
