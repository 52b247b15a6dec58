"""Which backend a job gets: the embedded numpy path or HeavyDB.

:func:`select_source` applies the site's ``heavydb.mode`` to a job's execution mode and input.
Nothing here imports ``heavyai``; the HeavyDB backend imports it when it connects.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from daemon.error_handling.config import RetryConfig
from daemon.error_handling.errors import ConfigurationError

from .base import InputSpec, StrategySource
from .heavydb import HeavyDBSource, OutageTracker
from .heavydb_config import HEAVYDB_EXECUTION_MODE, HeavyDBConfig
from .numpy_backend import CsvSource

logger = logging.getLogger(__name__)


def select_source(spec: InputSpec, *, execution_mode: str, config: HeavyDBConfig,
                  retry_config: RetryConfig, outage: OutageTracker | None = None,
                  sleep: Callable[[float], Any] | None = None,
                  stop_event: threading.Event | None = None) -> StrategySource:
    """The backend for one job.

    HeavyDB is used when the job asks for it (``execution_mode: server_side_heavydb``) or
    names a server table/query, and ``heavydb.mode`` is not ``off``. With ``off``, a CSV job
    that asks for HeavyDB runs on numpy (what today's launchers expect), and a table/query job
    cannot run.

    Raises:
        ConfigurationError: The job needs HeavyDB and ``heavydb.mode`` is ``off``.
    """
    wants_server = execution_mode == HEAVYDB_EXECUTION_MODE or spec.needs_server
    if not wants_server:
        return CsvSource()
    if config.mode == "off":
        if spec.needs_server:
            raise ConfigurationError(
                f"job {spec.job_id} reads {spec.label}, which needs HeavyDB, but heavydb.mode "
                "is 'off' in optimizer_config.json")
        logger.info("%s: asks for HeavyDB, but heavydb.mode is 'off'; running on numpy",
                    spec.job_id)
        return CsvSource()
    return HeavyDBSource(config, retry_config=retry_config, outage=outage, sleep=sleep,
                         stop_event=stop_event)


__all__ = [
    "CsvSource",
    "HeavyDBConfig",
    "HeavyDBSource",
    "InputSpec",
    "OutageTracker",
    "StrategySource",
    "select_source",
]
