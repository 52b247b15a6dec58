"""``heavy-optimizer checkpoints list|show|prune``: look at and clean up jobs' checkpoints.

``show`` loads a checkpoint through :class:`CheckpointManager` (our own pickle-free format,
verified by its sha256) and prints only the shape of the state: top-level keys with type,
dtype and shape, never the data. ``prune`` is the scheduler's age-based cleanup run by hand,
or per-job retention (``--job X --keep N``).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any

import numpy as np

from daemon.commands.common import (
    EXIT_OK,
    add_share_options,
    check_job_id,
    command_settings,
    open_share,
    print_json,
)
from daemon.error_handling.checkpoint import CheckpointManager, prune_expired_jobs
from daemon.error_handling.checkpoint_folder import NAME_PATTERN, CheckpointInfo
from daemon.error_handling.config import CheckpointConfig
from daemon.error_handling.errors import CheckpointLoadError, JobSpecError
from daemon.share import ShareLayout

#: Longest text shown for a string value in ``show``.
MAX_TEXT_CHARS = 60
#: Most dict keys named in one line of ``show``.
MAX_KEYS_SHOWN = 8


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("checkpoints", help="list, show or prune job checkpoints")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="jobs with checkpoints, or one job's checkpoints")
    listing.add_argument("job_id", nargs="?", default=None, metavar="JOB_ID")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=list_main)
    show = actions.add_parser("show", help="one checkpoint's metadata and state layout")
    show.add_argument("job_id", metavar="JOB_ID")
    show.add_argument("name", nargs="?", default=None, metavar="NAME",
                      help="checkpoint name (default: the newest)")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(handler=show_main)
    prune = actions.add_parser("prune", help="delete old checkpoints")
    prune.add_argument("--older-than-days", type=float, default=None,
                       help="remove jobs whose newest checkpoint is older (default: the "
                            "config's checkpoint.cleanup_after_days, unless --job is given)")
    prune.add_argument("--job", default=None, metavar="JOB_ID",
                       help="with --keep: trim one job's checkpoints")
    prune.add_argument("--keep", type=int, default=None, metavar="N",
                       help="with --job: keep the newest N checkpoints")
    prune.set_defaults(handler=prune_main)
    for leaf in (listing, show, prune):
        add_share_options(leaf)


def _open(args: argparse.Namespace) -> tuple[ShareLayout, CheckpointConfig]:
    settings = command_settings(args)
    return open_share(settings), settings.error_handling.checkpoint


def _manager(layout: ShareLayout, config: CheckpointConfig, job_id: str) -> CheckpointManager:
    check_job_id(job_id)
    if not NAME_PATTERN.fullmatch(job_id):
        raise JobSpecError(f"job id {job_id!r} cannot have checkpoints (it starts with '.')")
    return CheckpointManager(job_id, layout.checkpoints, config=config)


# -- list -----------------------------------------------------------------------------------


def list_main(args: argparse.Namespace) -> int:
    layout, config = _open(args)
    if args.job_id is not None:
        entries = _manager(layout, config, args.job_id).list_checkpoints()
        if not entries:
            raise CheckpointLoadError(f"job {args.job_id} has no checkpoints")
        if args.json:
            print_json([dataclasses.asdict(entry) for entry in entries])
            return EXIT_OK
        for entry in entries:
            print(f"{entry.name:<24} {entry.created_at}  {_size(entry.size_bytes):>9}  "
                  f"{entry.sha256}  {entry.description}")
        return EXIT_OK
    jobs: list[dict[str, Any]] = []
    for job_id in _job_folders(layout):
        entries = _manager(layout, config, job_id).list_checkpoints()
        jobs.append({"job_id": job_id, "count": len(entries),
                     "newest": entries[-1].created_at if entries else None,
                     "size_bytes": sum(entry.size_bytes for entry in entries)})
    if args.json:
        print_json(jobs)
    elif not jobs:
        print(f"no checkpoints in {layout.checkpoints}")
    else:
        print(f"{'JOB':<32} {'COUNT':>5}  {'NEWEST':<32} {'SIZE':>9}")
        for job in jobs:
            print(f"{job['job_id']:<32} {job['count']:>5}  {job['newest'] or '-':<32} "
                  f"{_size(job['size_bytes']):>9}")
    return EXIT_OK


def _job_folders(layout: ShareLayout) -> list[str]:
    try:
        entries = list(os.scandir(layout.checkpoints))
    except FileNotFoundError:
        return []
    return sorted(entry.name for entry in entries
                  if entry.is_dir(follow_symlinks=False) and NAME_PATTERN.fullmatch(entry.name))


def _size(size_bytes: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if size_bytes >= scale:
            return f"{size_bytes / scale:.1f} {unit}"
    return f"{size_bytes} B"


# -- show -----------------------------------------------------------------------------------


def show_main(args: argparse.Namespace) -> int:
    layout, config = _open(args)
    manager = _manager(layout, config, args.job_id)
    entries = manager.list_checkpoints()
    chosen = [e for e in entries if e.name == args.name] if args.name else entries[-1:]
    if not chosen:
        what = f"no checkpoint named {args.name}" if args.name else "no checkpoints"
        raise CheckpointLoadError(f"job {args.job_id} has {what}")
    info: CheckpointInfo = chosen[-1]
    state = manager.load_checkpoint(info.name)  # verifies the sha256; raises if unusable
    layout_of_state = {key: describe(value) for key, value in state.items()}
    if args.json:
        print_json({"checkpoint": dataclasses.asdict(info), "state": layout_of_state})
        return EXIT_OK
    print(f"job {args.job_id}, checkpoint {info.name}")
    print(f"  created: {info.created_at}")
    print(f"  size: {_size(info.size_bytes)} ({info.size_bytes} bytes), sha256 {info.sha256} "
          "(verified)")
    print(f"  file: {manager.directory / info.file_name}")
    if info.description:
        print(f"  description: {info.description}")
    print(f"  state ({len(state)} top-level keys):")
    for key, text in layout_of_state.items():
        print(f"    {key}: {text}")
    return EXIT_OK


def describe(value: Any) -> str:
    """Type and shape of one state value, without its data."""
    pandas = sys.modules.get("pandas")
    if isinstance(value, np.ndarray):
        return f"ndarray {value.dtype} shape {list(value.shape)}"
    if isinstance(value, np.generic):
        return f"{value.dtype} {value.item()!r}"
    if pandas is not None and isinstance(value, pandas.DataFrame):
        return f"DataFrame {value.shape[0]} rows x {value.shape[1]} columns"
    if pandas is not None and isinstance(value, pandas.Series):
        return f"Series {value.dtype} length {len(value)}"
    if isinstance(value, dict):
        keys = ", ".join(str(k) for k in list(value)[:MAX_KEYS_SHOWN])
        more = ", ..." if len(value) > MAX_KEYS_SHOWN else ""
        return f"dict of {len(value)} ({keys}{more})"
    if isinstance(value, list | tuple):
        return f"{type(value).__name__} of {len(value)}"
    if isinstance(value, str):
        text = value if len(value) <= MAX_TEXT_CHARS else value[:MAX_TEXT_CHARS] + "..."
        return f"str {text!r}"
    return f"{type(value).__name__} {value!r}"


# -- prune ----------------------------------------------------------------------------------


def prune_main(args: argparse.Namespace) -> int:
    if (args.job is None) != (args.keep is None):
        raise JobSpecError("--job and --keep go together: --job JOB_ID --keep N")
    if args.keep is not None and args.keep < 0:
        raise JobSpecError("--keep must be 0 or more")
    if args.older_than_days is not None and args.older_than_days < 0:
        raise JobSpecError("--older-than-days must be 0 or more")
    layout, config = _open(args)
    days = args.older_than_days
    if days is None and args.job is None:
        days = config.cleanup_after_days
    if days is not None:
        removed = prune_expired_jobs(layout.checkpoints, max_age_days=days,
                                     keep=layout.active_job_ids())
        if removed:
            print(f"removed the checkpoints of {len(removed)} job(s) older than {days:g} days: "
                  f"{', '.join(removed)}")
        else:
            print(f"no job's checkpoints are older than {days:g} days")
    if args.job is not None:
        manager = _manager(layout, config, args.job)
        entries = manager.list_checkpoints()
        doomed = entries[:max(0, len(entries) - args.keep)]
        for entry in doomed:
            manager.delete_checkpoint(entry.name)
        kept = len(entries) - len(doomed)
        print(f"job {args.job}: removed {len(doomed)} checkpoint(s)"
              f"{' (' + ', '.join(e.name for e in doomed) + ')' if doomed else ''}, kept {kept}")
    return EXIT_OK
