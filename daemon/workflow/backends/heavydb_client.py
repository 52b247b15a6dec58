"""Connections to HeavyDB through ``heavyai``, with our timeouts and our error types.

``heavyai`` is imported only when a connection is opened, so the embedded numpy path needs
none of it. Every driver failure leaves this module as one of ours:

* :class:`DatabaseError` (recoverable) when the connection failed: refused, reset, timed out,
  dropped mid-request. ``retry_on_database_error`` retries these; each attempt opens a fresh
  connection, because a Thrift connection that failed mid-message cannot be reused.
* :class:`DatabaseQueryError` (not recoverable) when the server refused the statement or the
  login (syntax, missing table, permission): the server's message, at once, no retry.

Timeouts: ``heavyai.connect`` takes none, so the port is first probed with
``connect_timeout_seconds`` (a down or firewalled host fails fast), and once connected the
transport gets ``query_timeout_seconds`` for every later answer. The login exchange itself
runs before a timeout can be set; a server that accepts TCP but never answers the login is
left to the job's own deadline and stuck detection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator, Mapping
from typing import Any

from daemon.error_handling.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseQueryError,
    HeavyOptimizerError,
)
from daemon.error_handling.transient import is_transient_database_error

from .heavydb_config import HeavyDBConfig

logger = logging.getLogger(__name__)

#: How to get the driver, for error messages.
INSTALL_HINT = "pip install 'heavy-optimizer[heavydb]'"
#: Server messages about a session the server no longer knows (restart): reconnecting helps.
_SESSION_GONE = ("session not valid", "session expired", "invalid session")


def import_heavyai() -> Any:
    """Import the optional driver, or explain how to install it.

    Raises:
        ConfigurationError: ``heavyai`` is not installed.
    """
    try:
        import heavyai
    except ImportError as exc:
        raise ConfigurationError(
            f"the HeavyDB backend needs the heavyai client library: {INSTALL_HINT}"
        ) from exc
    return heavyai


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_connection_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is about the connection, not the SQL.

    ``heavydb`` turns a transport failure during login into a ``ValueError`` raised while
    handling the ``TTransportException``, so the chain is searched, not only ``exc``.
    """
    for link in _chain(exc):
        if is_transient_database_error(link):
            return True
        message = str(link).lower()
        if any(fragment in message for fragment in _SESSION_GONE):
            return True
    return False


def translate_error(exc: BaseException, config: HeavyDBConfig, action: str) -> HeavyOptimizerError:
    """Turn a driver/socket exception into ``DatabaseError`` or ``DatabaseQueryError``."""
    if isinstance(exc, HeavyOptimizerError):
        return exc
    detail = " ".join(str(exc).split()) or type(exc).__name__
    context = {"endpoint": config.endpoint, "database": config.database, "action": action}
    if is_connection_failure(exc):
        return DatabaseError(f"HeavyDB at {config.endpoint}: {action} failed: {detail}",
                             context=context)
    return DatabaseQueryError(f"HeavyDB at {config.endpoint} refused {action}: {detail}",
                              context=context)


class HeavyDBSession:
    """One open connection. Every method raises only our errors (see module docstring).

    Args:
        connection: A ``heavyai.Connection``.
        config: For messages and timeouts.
    """

    def __init__(self, connection: Any, *, config: HeavyDBConfig) -> None:
        self._connection = connection
        self._config = config
        self._broken = False

    @contextlib.contextmanager
    def _calling(self, action: str) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            error = translate_error(exc, self._config, action)
            self._broken = self._broken or isinstance(error, DatabaseError)
            raise error from exc

    def execute(self, sql: str,
                parameters: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement; returns its rows (empty for DDL).

        ``parameters`` are bound by the client (``:name`` placeholders, values quoted by it).
        """
        with self._calling(f"statement {sql.split(' ', 1)[0].upper()}"):
            cursor = self._connection.execute(sql, parameters=dict(parameters or {}) or None)
            return list(cursor)

    def select_frame(self, sql: str) -> Any:
        """Run a SELECT and return a pandas DataFrame through Arrow over the wire (bulk reads)."""
        from heavydb.thrift.ttypes import TArrowTransport

        with self._calling("Arrow select"):
            return self._connection.select_ipc(sql, transport_method=TArrowTransport.WIRE)

    def load_arrow(self, table: str, data: Any) -> None:
        """Append a ``pyarrow.Table`` to ``table`` with the client's Arrow bulk loader."""
        with self._calling(f"bulk load into {table!r}"):
            self._connection.load_table_arrow(table, data)

    def tables(self) -> list[str]:
        """Names of the tables of the connected database."""
        with self._calling("listing tables"):
            return list(self._connection.get_tables())

    def version(self) -> str:
        """The server's version string."""
        with self._calling("version request"):
            return str(self._connection.get_version())

    def close(self) -> None:
        """Disconnect; after a connection failure only the socket is closed (no RPC)."""
        connection = self._connection
        if self._broken:
            with contextlib.suppress(Exception):
                connection._transport.close()
        try:
            connection.close()
        except Exception as exc:  # a dead socket: nothing left to tell the server
            logger.debug("HeavyDB %s: disconnect failed: %s", self._config.endpoint, exc)
            # heavydb's close() leaves _closed unset when disconnect fails, and its __del__
            # would then try again at garbage collection and raise there.
            connection._closed = 1


def _probe(config: HeavyDBConfig) -> None:
    """Fail within ``connect_timeout_seconds`` when nothing listens at the endpoint."""
    host = config.host.split("://", 1)[-1]  # heavydb accepts "https://host" for http(s)
    try:
        with socket.create_connection((host, config.port),
                                      timeout=config.connect_timeout_seconds):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise DatabaseError(
            f"HeavyDB at {config.endpoint} is unreachable: {reason}",
            context={"endpoint": config.endpoint, "action": "connect"},
        ) from exc


def _set_timeout(connection: Any, seconds: float) -> None:
    # heavyai has no public timeout; its binary transport keeps the TSocket in _socket and
    # the http one is the THttpClient in _transport. Both take milliseconds.
    transport = getattr(connection, "_socket", None) or getattr(connection, "_transport", None)
    if transport is not None and hasattr(transport, "setTimeout"):
        transport.setTimeout(seconds * 1000.0)
    else:
        logger.warning("HeavyDB client %s exposes no transport timeout; queries are unbounded",
                       type(connection).__name__)


def open_session(config: HeavyDBConfig) -> HeavyDBSession:
    """Connect and log in; one attempt (callers wrap it in ``retry_on_database_error``).

    Raises:
        ConfigurationError: heavyai is missing, or the server is older than it supports.
        DatabaseError: The server could not be reached or dropped the connection.
        DatabaseQueryError: The login was refused (the server's message).
    """
    heavyai = import_heavyai()
    _probe(config)
    try:
        connection = heavyai.connect(
            user=config.user, password=config.password, host=config.host, port=config.port,
            dbname=config.database, protocol=config.protocol,
        )
    except RuntimeError as exc:  # heavydb refuses servers older than 4.6
        raise ConfigurationError(f"HeavyDB at {config.endpoint}: {exc}") from exc
    except Exception as exc:
        raise translate_error(exc, config, "login") from exc
    _set_timeout(connection, config.query_timeout_seconds)
    return HeavyDBSession(connection, config=config)


@contextlib.contextmanager
def connected(config: HeavyDBConfig) -> Iterator[HeavyDBSession]:
    """``with connected(config) as session:`` — always disconnects."""
    session = open_session(config)
    try:
        yield session
    finally:
        session.close()


__all__ = [
    "INSTALL_HINT",
    "HeavyDBSession",
    "connected",
    "import_heavyai",
    "is_connection_failure",
    "open_session",
    "translate_error",
]
