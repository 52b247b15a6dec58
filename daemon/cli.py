"""The ``heavy-optimizer`` command: one sub-command per verb, each in its own module.

Every verb returns a process exit status; bad input ends in one clear line on stderr and a
non-zero status, never a traceback (tracebacks are for bugs, and go to the logs).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Sequence

from daemon import __version__
from daemon.commands import COMMANDS
from daemon.commands.common import EXIT_FAILURE, EXIT_USAGE
from daemon.error_handling.errors import HeavyOptimizerError

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; each command module adds its own sub-parser."""
    parser = argparse.ArgumentParser(
        prog="heavy-optimizer",
        description="Portfolio optimisation jobs from a Samba share, run by a daemon.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except HeavyOptimizerError as exc:
        print(f"heavy-optimizer {args.command}: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if not exc.recoverable else EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"heavy-optimizer {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `heavy-optimizer logs | head`: the reader has had enough
        with contextlib.suppress(OSError):  # no "Exception ignored" at exit's flush
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        return EXIT_FAILURE
    except OSError as exc:  # the share or a file is unavailable: say which, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        print(f"heavy-optimizer {args.command}: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
