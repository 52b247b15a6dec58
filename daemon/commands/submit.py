"""``heavy-optimizer submit``: put a CSV and its job file on the share, as a client would.

Order matters: the CSV is copied into ``input/`` first (under a hidden temp name, renamed in
place when complete), then the job file is written into ``jobs/queue/``, both atomically, so
the daemon never sees half of either. The job file lands milliseconds after the CSV, well
within the settle time a new CSV needs before CSV intake would make a job of it; from then on
the CSV belongs to this job.

Names: the CSV keeps its file name in ``input/`` (``--input-name`` changes it). If
``input/`` already holds a *different* file of that name, submit refuses: other jobs may name
that file, and a changed CSV counts as a new upload to the daemon. An identical file is
reused. The job id defaults to the CSV's stem; if that id is taken, a timestamp is added.
An id given with ``--job-id`` that is taken is refused (``heavy-optimizer retry`` re-runs).
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import os
import secrets
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from daemon.commands.common import (
    EXIT_OK,
    add_share_options,
    check_job_id,
    command_settings,
    current_user,
    finish_wait,
    open_share,
    wait_for_final,
)
from daemon.commands.run_job import parse_portfolio_sizes
from daemon.csv_intake import HeaderState, check_csv_header
from daemon.error_handling.atomic_io import atomic_write_json, fsync_directory
from daemon.error_handling.errors import JobQueueError, JobSpecError
from daemon.jobs import portfolio_size_from_csv_name, sanitize_job_id, validate_job_spec
from daemon.operator_registry import OperatorRegistry
from daemon.share import ShareLayout, is_ignored_name


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("submit", help="copy a CSV to the share and queue a job for it")
    parser.add_argument("csv", type=Path, metavar="CSV", help="the strategy P&L CSV")
    parser.add_argument("--portfolio-size", default=None,
                        help="N or MIN-MAX (default: the CSV's _ps<N> suffix, else the config)")
    parser.add_argument("--algorithms", default=None, help="comma-separated, e.g. GA,SA")
    parser.add_argument("--fitness", default=None, help="fitness metric (default: config)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--priority", type=int, default=None, help="higher runs first")
    parser.add_argument("--job-id", default=None,
                        help="default: the CSV's stem (plus a timestamp if that id is taken)")
    parser.add_argument("--input-name", default=None,
                        help="file name in input/ (default: the CSV's own name)")
    add_share_options(parser)
    parser.add_argument("--wait", action="store_true",
                        help="wait for the result; exit 0 completed, 1 failed, 3 timeout")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds --wait waits (default: until the job finishes)")
    parser.add_argument("--quiet", action="store_true", help="print only the job id")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    if args.timeout is not None and (not args.wait or args.timeout <= 0):
        raise JobSpecError("--timeout needs --wait and a number of seconds above 0")
    source: Path = args.csv
    if not source.is_file():
        raise JobSpecError(f"{source} is not a file")
    settings = command_settings(args)
    layout = open_share(settings)
    registry = OperatorRegistry.for_this_process(layout)
    input_name = args.input_name or source.name
    if Path(input_name).name != input_name or is_ignored_name(input_name):
        raise JobSpecError(f"--input-name {input_name!r}: give a plain file name that does not "
                           "start with '.' or '~'")
    state, reason = check_csv_header(source)
    if state is not HeaderState.OK:
        raise JobSpecError(f"{source}: {reason or 'the file is still being written'}")
    job_id = _job_id(args.job_id, Path(input_name).stem, registry)
    spec = _spec(args, job_id, input_name, settings.jobs.default_portfolio_size)
    validate_job_spec(spec, source="submit", default_job_id=job_id)

    copied = _copy_input(source, layout, input_name)
    try:
        atomic_write_json(layout.record_path(layout.queue, job_id), spec)
    except BaseException:
        if copied:
            with contextlib.suppress(FileNotFoundError):
                (layout.input / input_name).unlink()
        raise
    if args.quiet:
        print(job_id)
    else:
        print(f"submitted job {job_id}")
        print(f"  input: input/{input_name} ({'copied' if copied else 'identical file reused'})")
        print(f"  job file: jobs/queue/{job_id}.json (portfolio size "
              f"{spec['portfolio_size']}, algorithms {','.join(spec.get('algorithms', ['all']))})")
    if not args.wait:
        return EXIT_OK
    found = wait_for_final(layout, job_id, timeout_seconds=args.timeout)
    return finish_wait(layout, job_id, found, timeout_seconds=args.timeout)


def _job_id(requested: str | None, stem: str, registry: OperatorRegistry) -> str:
    """The requested id if free; else the stem, with a timestamp when the stem is taken.

    Raises:
        JobSpecError: The requested id is not a valid id.
        JobQueueError: The requested id is taken.
    """
    if requested is not None:
        check_job_id(requested)
        found = registry.locate(requested)
        if found is not None:
            raise JobQueueError(
                f"job id {requested!r} is taken (jobs/{found[0]}/{found[1].name}); choose "
                f"another --job-id, or run it again with `heavy-optimizer retry {requested}`")
        return requested
    base = sanitize_job_id(stem)
    stamp = time.strftime("%Y%m%d_%H%M%S")
    candidates = [base, f"{base[:112]}_{stamp}"] + [f"{base[:108]}_{stamp}_{n}"
                                                    for n in range(2, 100)]
    for candidate in candidates:
        if registry.locate(candidate) is None:
            return candidate
    raise JobQueueError(f"no free job id for {stem!r}; pass --job-id")


def _spec(args: argparse.Namespace, job_id: str, input_name: str,
          default_size: int) -> dict[str, Any]:
    """The job file, in the shape the Windows launchers write (DESIGN.md section 4)."""
    size_text = args.portfolio_size or str(
        portfolio_size_from_csv_name(Path(input_name).stem) or default_size)
    sizes = parse_portfolio_sizes(size_text)
    spec: dict[str, Any] = {
        "job_id": job_id,
        "input_file": input_name,
        "portfolio_size": sizes[0] if len(sizes) == 1 else [sizes[0], sizes[-1]],
        "job_type": "complete_optimization",
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%S"),
        "client_info": {"computer_name": socket.gethostname(), "username": current_user(),
                        "tool": "heavy-optimizer submit"},
        "input_format": "csv_only",
    }
    if args.algorithms:
        spec["algorithms"] = [name.strip().upper() for name in args.algorithms.split(",")
                              if name.strip()]
    optional = {"fitness": args.fitness, "seed": args.seed, "priority": args.priority}
    spec.update({key: value for key, value in optional.items() if value is not None})
    return spec


def _copy_input(source: Path, layout: ShareLayout, name: str) -> bool:
    """Copy ``source`` to ``input/<name>`` atomically; False when an identical file is there.

    Raises:
        JobQueueError: A different file already has that name.
    """
    target = layout.input / name
    if os.path.lexists(target):
        if target.is_file() and not target.is_symlink() and (
                os.path.samefile(source, target) or filecmp.cmp(source, target, shallow=False)):
            return False
        raise JobQueueError(
            f"input/{name} already exists with other content; other jobs may use it, so it is "
            "not replaced. Pass --input-name NEW_NAME.csv to store yours under another name")
    temp = layout.input / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with source.open("rb") as src, temp.open("xb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    fsync_directory(layout.input)
    return True
