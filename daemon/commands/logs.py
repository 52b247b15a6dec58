"""``heavy-optimizer logs``: the end of the daemon's or a job's log, readable, optionally live.

The log files hold one JSON object per line (for ``jq`` and log search); this verb renders
each as ``time level logger message [job_id=...]``, with the traceback under it when there
is one, and prints lines that are not JSON as they are. Only the end of the file is read,
so a 100 MB log costs no more than a small one. ``--follow`` keeps printing new lines, across
rotations, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from daemon.commands.common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_share_options,
    check_job_id,
    command_settings,
    open_share,
)
from daemon.error_handling.errors import JobSpecError
from daemon.error_handling.log_setup import ERRORS_LOG_NAME, MAIN_LOG_NAME
from daemon.share import ShareLayout

#: Context fields shown after the message, in this order.
CONTEXT_FIELDS = ("job_id", "stage", "algorithm")
#: How often ``--follow`` looks for new lines.
FOLLOW_POLL_SECONDS = 0.25
_BLOCK_BYTES = 64 * 1024

LineFilter = Callable[[str], bool]


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("logs", help="show the end of the daemon's or a job's log")
    parser.add_argument("--errors", action="store_true",
                        help="the error log (with --job: its lines about that job)")
    parser.add_argument("--job", default=None, metavar="JOB_ID",
                        help="the job's own log, and its error detail files")
    parser.add_argument("-n", "--lines", type=int, default=50, metavar="N",
                        help="how many lines (default 50)")
    parser.add_argument("-f", "--follow", action="store_true",
                        help="keep printing new lines until Ctrl-C")
    add_share_options(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise JobSpecError("-n must be 0 or more")
    layout = open_share(command_settings(args))
    job_id = check_job_id(args.job) if args.job else None
    if args.errors:
        path = layout.logs / ERRORS_LOG_NAME
    elif job_id:
        path = layout.job_logs / f"{job_id}.log"
    else:
        path = layout.logs / MAIN_LOG_NAME
    keep = _about_job(job_id) if args.errors and job_id else _everything
    details = error_detail_files(layout, job_id) if job_id else []
    position: tuple[int, int] | None = None
    if path.is_file():
        lines, position = tail_lines(path, args.lines, keep)
        for line in lines:
            print(render(line))
    elif not args.follow:
        print(f"heavy-optimizer logs: no log file {path}", file=sys.stderr)
    for detail in details:
        print(f"error details: {detail}")
    if args.follow:
        try:
            follow(path, keep, position)
        except KeyboardInterrupt:  # the way to stop --follow, not an error
            return EXIT_OK
    return EXIT_OK if path.is_file() or details else EXIT_FAILURE


def _everything(line: str) -> bool:
    return True


def _about_job(job_id: str) -> LineFilter:
    def keep(line: str) -> bool:
        record = _parse(line)
        if record is None:
            return job_id in line
        return job_id in (record.get("job_id"), record.get("context_job_id"))
    return keep


def error_detail_files(layout: ShareLayout, job_id: str) -> list[Path]:
    """``logs/errors/error_<job>_<time>.json`` files of one job, oldest first."""
    hint = job_id.strip("._")[:80]  # as error_details.write_error_details names them
    pattern = re.compile(rf"error_{re.escape(hint)}_\d{{8}}_\d{{6}}_\d{{6}}(?:_\d+)?\.json")
    try:
        names = os.listdir(layout.logs / "errors")
    except FileNotFoundError:
        return []
    return [layout.logs / "errors" / name for name in sorted(names) if pattern.fullmatch(name)]


def tail_lines(path: Path, count: int, keep: LineFilter = _everything
               ) -> tuple[list[str], tuple[int, int]]:
    """The last ``count`` lines of ``path`` that ``keep`` accepts, reading from the end.

    Returns:
        The lines, and ``(inode, offset)`` of the end of what was read (for following).
    """
    with path.open("rb") as handle:
        info = os.fstat(handle.fileno())
        end = info.st_size
        found: list[str] = []
        offset, tail = end, b""
        while offset > 0 and len(found) < count:
            step = min(_BLOCK_BYTES, offset)
            offset -= step
            handle.seek(offset)
            chunk = handle.read(step) + tail
            pieces = chunk.split(b"\n")
            tail = pieces[0] if offset > 0 else b""  # maybe the end of an earlier line
            complete = pieces[1:] if offset > 0 else pieces
            for raw in reversed(complete):
                line = raw.decode("utf-8", errors="replace").rstrip("\r")
                if line and keep(line) and len(found) < count:
                    found.append(line)
    return found[::-1], (info.st_ino, end)


def follow(path: Path, keep: LineFilter, position: tuple[int, int] | None, *,
           poll_seconds: float = FOLLOW_POLL_SECONDS) -> None:
    """Print lines appended to ``path`` until interrupted; reopens it after a rotation."""
    handle: BinaryIO | None = None
    inode, offset = position if position is not None else (None, 0)
    pending = b""
    try:
        while True:
            try:
                info = os.stat(path)
            except FileNotFoundError:
                info = None
            if info is not None and (handle is None or info.st_ino != inode
                                     or info.st_size < offset):
                if handle is not None:
                    handle.close()
                rotated = inode is not None and info.st_ino != inode
                handle = path.open("rb")
                offset = 0 if rotated or info.st_size < offset else offset
                handle.seek(offset)
                inode, pending = info.st_ino, b""
            if handle is not None:
                pending += handle.read()
                offset = handle.tell()
                *complete, pending = pending.split(b"\n")
                for raw in complete:
                    line = raw.decode("utf-8", errors="replace").rstrip("\r")
                    if line.strip() and keep(line):
                        print(render(line), flush=True)
            time.sleep(poll_seconds)
    finally:
        if handle is not None:
            handle.close()


def _parse(line: str) -> dict[str, Any] | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def render(line: str) -> str:
    """One log line for people: ``time level logger message [context]`` (+ traceback)."""
    record = _parse(line)
    if record is None:
        return line
    when = record.get("time") or record.get("asctime") or "?"
    level = record.get("level") or record.get("levelname") or "?"
    name = record.get("logger") or record.get("name") or "?"
    context = " ".join(f"{key}={record[key]}" for key in CONTEXT_FIELDS
                       if record.get(key) is not None)
    text = f"{when} {level:<8} {name} {record.get('message', '')}"
    if context:
        text += f" [{context}]"
    trace = record.get("exc_info")
    if isinstance(trace, str) and trace:
        text += "\n" + "\n".join("    " + part for part in trace.splitlines())
    return text
