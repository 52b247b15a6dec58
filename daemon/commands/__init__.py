"""One module per ``heavy-optimizer`` verb; each exposes ``add_parser(subparsers)``."""

from __future__ import annotations

from types import ModuleType

from . import doctor, run, run_job

#: Registered verbs, in the order ``--help`` lists them.
COMMANDS: tuple[ModuleType, ...] = (run, run_job, doctor)
