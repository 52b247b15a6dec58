"""``heavy-optimizer retry JOB_ID``: run a failed (or completed) job again, from the start.

The final record is moved back to the queue with zero attempts, so the job gets the full
retry budget again; its spec is kept and its history says who re-ran it. A job that is
queued, running or waiting for an automatic retry is refused: it is not finished.
"""

from __future__ import annotations

import argparse
from typing import Any

from daemon.commands.common import (
    EXIT_OK,
    add_share_options,
    check_job_id,
    command_settings,
    current_user,
    open_share,
)
from daemon.operator_registry import OperatorRegistry


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("retry", help="queue a failed or completed job again")
    parser.add_argument("job_id", metavar="JOB_ID")
    add_share_options(parser)
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    layout = open_share(command_settings(args))
    registry = OperatorRegistry.for_this_process(layout)
    where, target = registry.requeue_finished(check_job_id(args.job_id), by=current_user())
    print(f"job {args.job_id} moved from {where}/ to the queue as "
          f"{target.relative_to(layout.root)}; it starts from the beginning with a fresh "
          "retry budget")
    return EXIT_OK
