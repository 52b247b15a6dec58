"""One module per ``heavy-optimizer`` verb; each exposes ``add_parser(subparsers)``."""

from __future__ import annotations

from types import ModuleType

from . import cancel, checkpoints, doctor, init_share, logs, retry, run, run_job, status, submit

#: Registered verbs, in the order ``--help`` lists them.
COMMANDS: tuple[ModuleType, ...] = (
    run, run_job, submit, status, retry, cancel, checkpoints, logs, init_share, doctor,
)
