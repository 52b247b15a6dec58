"""Column names with a fixed meaning in a strategy CSV: the date, and metadata (not strategies).

Kept apart from :mod:`daemon.workflow.data` (which needs pandas) so that the config loader and
the daemon's CSV intake can use them without importing pandas: the long-running daemon process
stays small, and only job processes load the data stack.
"""

from __future__ import annotations

#: Metadata column names (matched as whole words, case-insensitively); never strategies.
DEFAULT_EXCLUDED: tuple[str, ...] = (
    "day",
    "zone",
    "regime",
    "confidence",
    "threshold",
    "capital",
    "start_time",
    "end_time",
    "time",
)
#: Name of the date column (case-insensitive, surrounding spaces ignored).
DATE_COLUMN = "date"
