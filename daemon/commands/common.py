"""What every ``heavy-optimizer`` verb shares: exit codes, finding the share, output helpers.

The share is found the way the daemon finds it (``--share``, else ``share_root`` from the
config in ``--config-dir`` or the default search), so a verb always looks at the folders the
daemon works on. Verbs print for people; ``--json`` variants print for scripts.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from daemon.config import Settings, load_settings
from daemon.error_handling.errors import ConfigurationError, JobSpecError
from daemon.jobs import JOB_ID_PATTERN
from daemon.share import ShareLayout

#: The command did what was asked.
EXIT_OK = 0
#: The command ran and failed, or what it was asked about does not exist.
EXIT_FAILURE = 1
#: Bad arguments, input or configuration (argparse uses 2 for usage errors too).
EXIT_USAGE = 2
#: ``--wait`` gave up before the job finished (the job itself goes on).
EXIT_TIMEOUT = 3
#: How often ``--wait`` looks for the job's final record.
POLL_SECONDS = 0.5
#: Where a job can be, in the order ``status`` lists them.
REGISTRIES = ("queue", "processing", "retry", "completed", "failed")


def add_share_options(parser: argparse.ArgumentParser) -> None:
    """``--share`` and ``--config-dir``, the two ways of pointing a verb at a share."""
    parser.add_argument("--share", type=Path, default=None,
                        help="the share's root folder (default: share_root from the config)")
    parser.add_argument("--config-dir", type=Path, default=None,
                        help="folder with the config files (default: "
                             "$HEAVY_OPTIMIZER_CONFIG_DIR, then ./config)")


def command_settings(args: argparse.Namespace) -> Settings:
    """The daemon's settings as this command sees them (``--share`` wins over the config).

    Raises:
        ConfigurationError: A config file is unreadable or invalid.
    """
    return load_settings(args.config_dir, share_root=args.share)


def open_share(settings: Settings) -> ShareLayout:
    """The share of ``settings``, refusing a folder that was never set up as a share.

    Raises:
        ConfigurationError: There is no ``jobs/`` folder at the share root.
    """
    layout = ShareLayout(settings.share_root)
    if not layout.jobs.is_dir():
        raise ConfigurationError(
            f"{layout.root} is not a share (it has no jobs/ folder); pass --share, check "
            f"share_root in the config, or set it up with `heavy-optimizer init-share "
            f"{layout.root}`")
    return layout


def check_job_id(job_id: str) -> str:
    """``job_id`` if it is a valid id (ids become file names).

    Raises:
        JobSpecError: It is not.
    """
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise JobSpecError(f"{job_id!r} is not a job id: use 1-128 letters, digits, '.', '_' "
                           "or '-'")
    return job_id


def current_user() -> str:
    """Who runs this command, for records that say who did what."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry (containers) and no USER variable
        return f"uid {os.getuid()}"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from the share, or None when it is missing or not a JSON object."""
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True, default=str))


def epoch_of(value: Any) -> float | None:
    """Epoch seconds from a record's time field (a number, or ISO 8601 text)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return None


def age_text(seconds: float) -> str:
    """A duration for people: ``12 s``, ``4 min``, ``3.5 h``, ``2.0 d``."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def ago(value: Any, now: float) -> str:
    """``"12 s ago"`` for a time field, ``"?"`` when it has none."""
    epoch = epoch_of(value)
    return "?" if epoch is None else f"{age_text(now - epoch)} ago"


def final_record(layout: ShareLayout, job_id: str) -> tuple[str, dict[str, Any]] | None:
    """``("completed" | "failed", record)`` once the job has a final record, else None."""
    for where in ("completed", "failed"):
        record = read_json(layout.record_path(getattr(layout, where), job_id))
        if record is not None:
            return where, record
    return None


def describe_final(layout: ShareLayout, where: str, record: dict[str, Any]) -> list[str]:
    """The lines that tell a person how a finished job ended and where its results are."""
    job_id = record.get("job_id", "?")
    took = record.get("execution_time")
    took_text = f" in {took:.1f} s" if isinstance(took, int | float) else ""
    lines = [f"job {job_id} {where} after {record.get('attempts', '?')} attempt(s){took_text}"
             f" (finished {record.get('finished_at', '?')})"]
    if where == "completed":
        if "best_algorithm" in record:
            fitness = record.get("best_fitness")
            fitness_text = f"{fitness:.4f}" if isinstance(fitness, int | float) else "?"
            lines.append(f"  best: {record['best_algorithm']}, fitness {fitness_text}, "
                         f"portfolio size {record.get('portfolio_size', '?')}")
        output = record.get("output_dir")
        if isinstance(output, str):
            lines.append(f"  output: {layout.root / output}")
    else:
        error = record.get("error")
        error = error if isinstance(error, dict) else {}
        lines.append(f"  error: {error.get('code', '?')} (stage {error.get('stage') or '?'}): "
                     f"{error.get('message', 'no reason recorded')}")
    return lines


def wait_for_final(layout: ShareLayout, job_id: str, *, timeout_seconds: float | None,
                   poll_seconds: float = POLL_SECONDS,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep,
                   ) -> tuple[str, dict[str, Any]] | None:
    """Poll for the job's completed/ or failed/ record; None after ``timeout_seconds``.

    ``None`` as the timeout waits until the record appears (Ctrl-C stops the wait).
    """
    deadline = None if timeout_seconds is None else clock() + timeout_seconds
    while True:
        found = final_record(layout, job_id)
        if found is not None:
            return found
        if deadline is not None and clock() >= deadline:
            return None
        sleep(poll_seconds if deadline is None else min(poll_seconds,
                                                        max(0.0, deadline - clock())))


def finish_wait(layout: ShareLayout, job_id: str, found: tuple[str, dict[str, Any]] | None,
                *, timeout_seconds: float | None) -> int:
    """Print how a waited-for job ended; the exit status of ``--wait`` (0, 1 or 3)."""
    if found is None:
        print(f"job {job_id} has not finished after {timeout_seconds:g} s; it goes on (see "
              f"`heavy-optimizer status {job_id}`)")
        return EXIT_TIMEOUT
    where, record = found
    for line in describe_final(layout, where, record):
        print(line)
    return EXIT_OK if where == "completed" else EXIT_FAILURE
