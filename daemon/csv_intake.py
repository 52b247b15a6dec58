"""CSV drops in input/: is the header there yet, and has this upload already become a job.

The ledger (``<share>/.heavy_optimizer/csv_intake.json``) maps a CSV's file name to the size
and mtime it had when it was handled, and what became of it. A CSV is turned into a job once
per upload: the same bytes seen again (next scan, next daemon start) are skipped, and a new
upload over the old name (size or mtime changed) is a new job. The ledger is re-read when
another process changed it and merged on every write, so two daemons sharing it lose no entry.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

from daemon.error_handling.atomic_io import atomic_write_json
from daemon.workflow.columns import DATE_COLUMN

logger = logging.getLogger(__name__)

#: File name of the ledger inside the share's private state folder.
LEDGER_NAME = "csv_intake.json"
#: The header of the production file is ~0.7 MB (25,544 names); anything past this is not a CSV.
HEADER_LIMIT_BYTES = 16 * 1024 * 1024
_CHUNK_BYTES = 256 * 1024
_TAIL_BYTES = 4096


class HeaderState(str, Enum):
    """What the first line of a settled CSV says."""

    OK = "ok"
    #: NUL bytes: a copy that preallocated the file at full size and has not written it yet.
    INCOMPLETE = "incomplete"
    INVALID = "invalid"


def has_unwritten_tail(path: Path) -> bool:
    """Whether the file ends in NUL bytes: preallocated at full size and not filled yet.

    Size and mtime cannot tell (the size is final from the start, and a network file system
    may report a coarse mtime), but a CSV never contains NUL and copies write front to back.
    """
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - _TAIL_BYTES))
            return b"\0" in handle.read(_TAIL_BYTES)
    except OSError:
        return False


def check_csv_header(path: Path) -> tuple[HeaderState, str]:
    """Check that the first line has a Date column and at least one more column.

    Returns:
        The state and, unless OK, a reason an analyst can act on.
    """
    head = b""
    try:
        with open(path, "rb") as handle:
            while b"\n" not in head and len(head) < HEADER_LIMIT_BYTES:
                chunk = handle.read(_CHUNK_BYTES)
                if not chunk:
                    break
                head += chunk
    except OSError as exc:
        return HeaderState.INVALID, f"input/{path.name} cannot be read: {exc.strerror or exc}"
    line, newline, _ = head.partition(b"\n")
    if b"\0" in line or has_unwritten_tail(path):
        return HeaderState.INCOMPLETE, "the file is still being written"
    if not newline and len(head) >= HEADER_LIMIT_BYTES:
        return HeaderState.INVALID, (f"input/{path.name}: no line break in the first "
                                     f"{HEADER_LIMIT_BYTES // 2**20} MB; is it a CSV file?")
    try:
        text = line.decode("utf-8-sig").rstrip("\r")
    except UnicodeDecodeError:
        return HeaderState.INVALID, (f"input/{path.name}: the first line is not UTF-8 text; "
                                     "save the file as CSV (UTF-8)")
    columns = [name.strip() for name in next(csv.reader([text]), [])]
    if DATE_COLUMN in (c.lower() for c in columns) and len(columns) >= 2:
        return HeaderState.OK, ""
    shown = ", ".join(repr(c) for c in columns[:5]) + (", ..." if len(columns) > 5 else "")
    return HeaderState.INVALID, (
        f"input/{path.name}: the first line must be a header with a 'Date' column and at least "
        f"one strategy column; found {len(columns)} column(s): {shown or 'none'}")


@dataclass(frozen=True)
class LedgerEntry:
    """What became of one upload of a CSV name."""

    size: int
    mtime_ns: int
    #: The job made from it (or the job file that names it); None if it was never a job.
    job_id: str | None
    #: pending (job decided, queue file not yet confirmed) | queued | rejected | referenced
    #: (named by a job file) | preexisting (already there when CSV intake first started).
    state: str

    def matches(self, info: os.stat_result) -> bool:
        return (self.size, self.mtime_ns) == (info.st_size, info.st_mtime_ns)


class CsvIntakeLedger:
    """The durable map of CSV name → :class:`LedgerEntry`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, LedgerEntry] = {}
        #: Entries changed since the last write (kept over what a reload brings).
        self._staged: dict[str, LedgerEntry] = {}
        #: (inode, mtime, size) of the file as last read or written: every write is an
        #: atomic replace, so a new inode means someone else wrote it.
        self._signature: tuple[int, int, int] | None = None
        #: True when there was no usable ledger: CSV intake starts here for the first time.
        self.fresh = not self._load()

    def refresh(self) -> None:
        """Re-read the file if another process changed it since we last read or wrote it."""
        if self._stat_signature() != self._signature:
            self._load()

    def get(self, name: str) -> LedgerEntry | None:
        return self._entries.get(name)

    def job_ids(self) -> set[str]:
        return {e.job_id for e in self._entries.values() if e.job_id}

    def stage(self, entries: dict[str, LedgerEntry]) -> None:
        """Add or replace entries in memory; :meth:`flush` writes them (one write per scan)."""
        self._entries.update(entries)
        self._staged.update(entries)

    def put(self, entries: dict[str, LedgerEntry]) -> None:
        """Add or replace entries and write the ledger durably (also when ``entries`` is empty)."""
        self.stage(entries)
        self.refresh()
        files = {name: asdict(entry) for name, entry in sorted(self._entries.items())}
        atomic_write_json(self.path, {"version": 1, "files": files})
        self._staged.clear()
        self._signature = self._stat_signature()

    def flush(self) -> None:
        """Write staged entries, if any."""
        if self._staged:
            self.put({})

    def _stat_signature(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return info.st_ino, info.st_mtime_ns, info.st_size

    def _load(self) -> bool:
        signature = self._stat_signature()
        if signature is None:
            return False
        try:
            files = json.loads(self.path.read_bytes())["files"]
            loaded = {name: LedgerEntry(**entry) for name, entry in files.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            aside = self.path.with_name(f"{self.path.name}.damaged-{signature[1]}")
            logger.error("CSV intake ledger %s is unreadable (%s); moved it to %s and starting "
                         "a new one", self.path, exc, aside.name)
            os.replace(self.path, aside)
            return False
        # Merge: an entry only we know (lost to a concurrent write) is kept and written back.
        self._entries = {**self._entries, **loaded, **self._staged}
        self._signature = signature
        return True
