"""Checkpoints, retries, notifications, context logging and recovery, usable on their own.

Nothing here imports the daemon: the workflow and the daemon build on this library, not the
other way round.
"""

from .config import ErrorHandlingConfig, load_error_handling_config
from .errors import *  # noqa: F403 - the hierarchy is the public API
from .errors import __all__ as _error_names

__all__ = [
    "ErrorHandlingConfig",
    "load_error_handling_config",
    *_error_names,
]
