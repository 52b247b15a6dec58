"""The ``heavydb`` section of ``optimizer_config.json``: where the server is and how it is used.

``mode`` is the site's policy: ``off`` (HeavyDB is never contacted; jobs that ask for it run
on numpy, jobs that *need* it — ``input_table``/``input_query`` — fail), ``optional`` (use it;
when it stays unreachable, CSV jobs continue on numpy and one WARNING alert covers the outage)
or ``required`` (an unreachable server fails the attempt with a recoverable ``DatabaseError``,
so the daemon retries the job later).

Connection settings can come from the environment, applied when the config is loaded (never
at import): ``HEAVYDB_HOST``, ``HEAVYDB_PORT``, ``HEAVYDB_USER``, ``HEAVYDB_PASSWORD``,
``HEAVYDB_DATABASE``, ``HEAVYDB_PROTOCOL``. The password may also be a systemd credential
named ``heavydb_password``; keep it out of the file.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from daemon.error_handling.errors import ConfigurationError
from daemon.error_handling.settings import resolve_secret

HeavyDBMode = Literal["off", "optional", "required"]
Protocol = Literal["binary", "http", "https"]
#: The execution mode that sends a job to HeavyDB (what Windows launchers write).
HEAVYDB_EXECUTION_MODE = "server_side_heavydb"
#: Table-name prefixes and column names from the config: plain SQL identifiers only.
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
#: Environment variable -> config key, applied by :meth:`HeavyDBConfig.with_environment`.
ENV_OVERRIDES = {
    "HEAVYDB_HOST": "host",
    "HEAVYDB_PORT": "port",
    "HEAVYDB_USER": "user",
    "HEAVYDB_DATABASE": "database",
    "HEAVYDB_PROTOCOL": "protocol",
}
PROTOCOLS = ("binary", "http", "https")


@dataclass(frozen=True)
class HeavyDBConfig:
    """Connection and policy for the HeavyDB backend (see the module docstring).

    Attributes:
        mode: ``off`` | ``optional`` | ``required``.
        default_execution_mode: For jobs that name no ``execution_mode``.
        connect_timeout_seconds: Bound on reaching the server's port (TCP connect).
        query_timeout_seconds: Bound on waiting for any one answer (query, load, login reply).
        load_batch_rows: Rows per bulk-load request (large Thrift messages strain servers).
        write_results: Append each job's results to ``<results_table_prefix>runs`` /
            ``portfolios`` / ``algorithms``.
        work_table_prefix: Per-job tables are ``<prefix><sanitised job id>_<hash>``.
        date_column, strategy_column, pnl_column: Columns of an ``input_table`` /
            ``input_query`` in long form (one row per date and strategy).
        screen_correlation_threshold: Strategies whose correlation with the equal-weight
            field reaches this are listed in the job's summary (information, not a filter).
    """

    mode: HeavyDBMode = "off"
    default_execution_mode: Literal["numpy", "server_side_heavydb"] = "numpy"
    host: str = "localhost"
    port: int = 6274
    user: str = "admin"
    password: str = field(default="", repr=False)
    database: str = "heavyai"
    protocol: Protocol = "binary"
    connect_timeout_seconds: float = 10.0
    query_timeout_seconds: float = 300.0
    load_batch_rows: int = 500_000
    write_results: bool = False
    results_table_prefix: str = "heavy_optimizer_"
    work_table_prefix: str = "heavy_optimizer_job_"
    date_column: str = "trade_date"
    strategy_column: str = "strategy"
    pnl_column: str = "pnl"
    screen_correlation_threshold: float = 0.95

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"heavydb.port must be 1..65535, got {self.port}")
        if self.connect_timeout_seconds <= 0 or self.query_timeout_seconds <= 0:
            raise ValueError("heavydb.connect_timeout_seconds and query_timeout_seconds must "
                             "be > 0")
        if self.load_batch_rows < 1:
            raise ValueError("heavydb.load_batch_rows must be at least 1")
        if not 0.0 < self.screen_correlation_threshold <= 1.0:
            raise ValueError("heavydb.screen_correlation_threshold must be in (0, 1]")
        for key in ("results_table_prefix", "work_table_prefix", "date_column",
                    "strategy_column", "pnl_column"):
            if not IDENTIFIER.fullmatch(getattr(self, key)):
                raise ValueError(f"heavydb.{key} {getattr(self, key)!r} must be letters, digits "
                                 "and '_' (not starting with a digit), at most 64 characters")
        if not self.host:
            raise ValueError("heavydb.host must not be empty")

    @property
    def endpoint(self) -> str:
        """``host:port`` for messages (never the credentials)."""
        return f"{self.host}:{self.port}"

    def with_environment(self, environ: Mapping[str, str]) -> HeavyDBConfig:
        """Return a copy with ``HEAVYDB_*`` overrides and the password secret applied.

        Raises:
            ConfigurationError: ``HEAVYDB_PORT`` is not a port number or ``HEAVYDB_PROTOCOL``
                is not binary/http/https (the variable is named).
        """
        changes: dict[str, Any] = {}
        for variable, key in ENV_OVERRIDES.items():
            value = environ.get(variable)
            if value:
                changes[key] = value.strip()
        if "port" in changes:
            try:
                changes["port"] = int(changes["port"])
            except ValueError:
                raise ConfigurationError(
                    f"HEAVYDB_PORT {changes['port']!r} is not a port number") from None
        if changes.get("protocol", "binary") not in PROTOCOLS:
            raise ConfigurationError(f"HEAVYDB_PROTOCOL {changes['protocol']!r} must be one of "
                                     f"{', '.join(PROTOCOLS)}")
        changes["password"] = environ.get("HEAVYDB_PASSWORD") or resolve_secret(
            self.password, env_var="HEAVYDB_PASSWORD", credential="heavydb_password")
        try:
            return dataclasses.replace(self, **changes)
        except ValueError as exc:
            raise ConfigurationError(f"HEAVYDB_* environment: {exc}") from exc

    def redacted(self) -> dict[str, Any]:
        """JSON form for summaries and logs: the password replaced by ``"***"`` when set."""
        data = dataclasses.asdict(self)
        data["password"] = "***" if self.password else ""
        return data


__all__ = ["HEAVYDB_EXECUTION_MODE", "HeavyDBConfig", "HeavyDBMode"]
