"""The notifier's outbox: pending alerts on disk, and the notification history.

An alert accepted for sending is written here before any channel is tried and removed once
every channel has either taken it or finally refused it, so a crash or restart in between
loses nothing: the next notifier re-queues what it finds. Each entry also remembers the
channels that already took the alert, so a restart does not mail the same alert twice.

Files are JSON only (never pickle: the folder may sit on a share that others can write),
written to a temp file, fsynced and renamed into place. ``history.jsonl`` gets one line per
alert outcome (sent, failed, partial, duplicate, rate_limited) for operators.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .alerts import Alert
from .atomic_io import TEMP_SUFFIX, atomic_write_json
from .errors import ConfigurationError

logger = logging.getLogger(__name__)

#: Version of the entry file layout, written into each entry.
ENTRY_FORMAT = 1
#: Name of the history file inside the outbox folder.
HISTORY_FILE_NAME = "history.jsonl"
#: The history file is rotated to ``history.jsonl.1`` beyond this size.
HISTORY_MAX_BYTES = 5 * 1024 * 1024
_ENTRY_PREFIX = "alert-"
_ENTRY_SUFFIX = ".json"


@dataclass
class OutboxEntry:
    """A pending alert and the channels that already delivered it."""

    alert: Alert
    delivered: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form written to the entry file."""
        return {"format": ENTRY_FORMAT, "alert": self.alert.to_dict(), "delivered": self.delivered}


class Outbox:
    """A folder of pending alert files plus the history file.

    Args:
        directory: The folder; created if missing.
        clock: Wall-clock time for history lines (injectable for tests).

    Raises:
        OSError: The folder cannot be created.
    """

    def __init__(self, directory: str | os.PathLike[str], *, clock: Callable[[], float]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.history_path = self.directory / HISTORY_FILE_NAME
        self._clock = clock
        self._history_lock = threading.Lock()

    def save(self, entry: OutboxEntry) -> None:
        """Write (or rewrite) an entry atomically and durably.

        Raises:
            OSError: The file cannot be written (disk full, permissions).
            ValueError: The alert holds a value JSON cannot represent (NaN).
        """
        atomic_write_json(self._entry_path(entry.alert.alert_id), entry.to_dict(), mode=0o600)

    def remove(self, alert_id: str) -> None:
        """Delete an entry that is done (sent or finally failed)."""
        self._entry_path(alert_id).unlink(missing_ok=True)

    def pending(self) -> list[OutboxEntry]:
        """Load every pending entry, oldest first.

        Unreadable entries are renamed to ``*.corrupt`` and logged, so one bad file neither
        blocks the others nor is retried forever; stale temp files are deleted.
        """
        for stale in self.directory.glob(f".{_ENTRY_PREFIX}*{TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)
        entries: list[OutboxEntry] = []
        for path in sorted(self.directory.glob(f"{_ENTRY_PREFIX}*{_ENTRY_SUFFIX}")):
            try:
                entries.append(self._load(path))
            except (OSError, ValueError, ConfigurationError) as exc:
                logger.warning("Outbox %s: unreadable entry %s set aside: %s", self.directory,
                               path.name, exc)
                try:
                    path.replace(path.with_name(path.name + ".corrupt"))
                except OSError as move_exc:
                    logger.error("Outbox %s: cannot set aside %s: %s", self.directory,
                                 path.name, move_exc)
        entries.sort(key=lambda entry: entry.alert.created_at)
        return entries

    def record(
        self, alert: Alert, outcome: str, channels: Mapping[str, str] | None = None
    ) -> None:
        """Append one history line for an alert outcome; I/O errors are logged, not raised."""
        now = self._clock()
        line = {
            "time": datetime.fromtimestamp(now, tz=UTC).isoformat(timespec="seconds"),
            "timestamp": now,
            "alert_id": alert.alert_id,
            "severity": alert.severity,
            "title": alert.title,
            "job_id": alert.job_id,
            "fingerprint": alert.fingerprint,
            "repeated": alert.repeated,
            "channels": dict(channels or {}),
            "outcome": outcome,
        }
        text = json.dumps(line, ensure_ascii=False) + "\n"
        with self._history_lock:
            try:
                self._rotate_history()
                with open(self.history_path, "a", encoding="utf-8") as handle:
                    handle.write(text)
            except OSError as exc:
                logger.error("Outbox %s: cannot append to %s: %s", self.directory,
                             HISTORY_FILE_NAME, exc)

    def history(self) -> list[dict[str, Any]]:
        """Read the current history file (one dict per line; unreadable lines skipped)."""
        try:
            lines = self.history_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        records = []
        for line in lines:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line after a crash
        return records

    def _load(self, path: Path) -> OutboxEntry:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("format") != ENTRY_FORMAT:
            raise ValueError(f"not an outbox entry of format {ENTRY_FORMAT}")
        delivered = raw.get("delivered", [])
        if not isinstance(delivered, list) or not all(isinstance(d, str) for d in delivered):
            raise ValueError("'delivered' must be a list of channel names")
        alert = Alert.from_dict(raw.get("alert"), source=str(path))
        self._entry_path(alert.alert_id)  # refuses an id that is not a plain uuid hex
        return OutboxEntry(alert, delivered)

    def _entry_path(self, alert_id: str) -> Path:
        if not alert_id.isalnum():  # ids are uuid hex; never let one name another path
            raise ValueError(f"invalid alert id {alert_id!r}")
        return self.directory / f"{_ENTRY_PREFIX}{alert_id}{_ENTRY_SUFFIX}"

    def _rotate_history(self) -> None:
        try:
            size = self.history_path.stat().st_size
        except FileNotFoundError:
            return
        if size >= HISTORY_MAX_BYTES:
            os.replace(self.history_path, self.history_path.with_name(HISTORY_FILE_NAME + ".1"))
