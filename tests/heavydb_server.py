"""A HeavyDB-protocol test server: pyheavydb's own Thrift service, SQL executed on DuckDB.

No HeavyDB can run here, so the backend's tests talk to this server with the real ``heavyai``
client over its real binary Thrift protocol on a TCP socket. The server is built from the
service definitions that ship with ``pyheavydb`` (``heavydb.thrift.Heavy.Processor`` and its
``ttypes``) and implements only the RPCs the client calls for us: ``connect``, ``disconnect``,
``get_version``, ``get_tables``, ``get_table_details``, ``sql_execute`` (columnar results),
``sql_execute_df`` (Arrow over the wire, what ``select_ipc(transport_method=WIRE)`` uses) and
``load_table_binary_arrow`` (``load_table_arrow``). Any other RPC answers UNKNOWN_METHOD.

What it is not: HeavyDB's SQL dialect and GPU execution (statements run on in-memory DuckDB,
so only SQL both accept is meaningful), HeavyDB's authentication and privileges (a user table
and a read-only flag), and Arrow results through shared memory.

Fault injection, per RPC name, applied before the request is read: ``drop`` closes the
connection without an answer; ``delay_seconds`` answers late (interruptible by ``stop``).
"""

from __future__ import annotations

import contextlib
import datetime
import socket
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
from heavydb.common.ttypes import TDatumType, TEncodingType, TTypeInfo
from heavydb.thrift import Heavy
from heavydb.thrift.ttypes import (
    TArrowTransport,
    TColumn,
    TColumnData,
    TColumnType,
    TDataFrame,
    TDBException,
    TQueryResult,
    TRowSet,
    TTableDetails,
)
from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException
from thrift.transport import TSocket, TTransport

#: DuckDB's DESCRIBE types -> HeavyDB datum types (for get_table_details).
_SQL_TYPES = {
    "TINYINT": TDatumType.TINYINT, "SMALLINT": TDatumType.SMALLINT,
    "INTEGER": TDatumType.INT, "BIGINT": TDatumType.BIGINT, "HUGEINT": TDatumType.BIGINT,
    "FLOAT": TDatumType.FLOAT, "DOUBLE": TDatumType.DOUBLE, "VARCHAR": TDatumType.STR,
    "DATE": TDatumType.DATE, "TIMESTAMP": TDatumType.TIMESTAMP, "BOOLEAN": TDatumType.BOOL,
}
_READ_ONLY_STATEMENTS = {duckdb.StatementType.SELECT}
_EPOCH = datetime.datetime(1970, 1, 1)


@dataclass
class Fault:
    """What happens to a matching RPC: dropped, or delayed; ``times=None`` means always."""

    drop: bool = False
    delay_seconds: float = 0.0
    times: int | None = None


class _Dropped(TTransport.TTransportException):
    """The server closes the connection instead of answering (fault injection)."""


def _column_type(name: str, kind: int) -> TColumnType:
    text = kind == TDatumType.STR
    return TColumnType(col_name=name, col_type=TTypeInfo(
        type=kind, encoding=TEncodingType.DICT if text else TEncodingType.NONE, nullable=True,
        is_array=False, precision=0, scale=0, comp_param=32 if text else 0, size=-1))


def _thrift_column(column: pa.ChunkedArray) -> tuple[int, TColumn]:
    """One Arrow column as HeavyDB's columnar Thrift form: (datum type, TColumn)."""
    kind, slot, convert, blank = _kind_of(column.type)
    values = column.to_pylist()
    nulls = [v is None for v in values]
    data = [blank if v is None else convert(v) for v in values]
    return kind, TColumn(data=TColumnData(**{slot: data}), nulls=nulls)


def _kind_of(arrow_type: pa.DataType) -> tuple[int, str, Any, Any]:
    if pa.types.is_boolean(arrow_type):
        return TDatumType.BOOL, "int_col", int, 0
    if pa.types.is_integer(arrow_type):
        width = arrow_type.bit_width
        kind = (TDatumType.SMALLINT if width <= 16 else TDatumType.INT if width == 32
                else TDatumType.BIGINT)
        return kind, "int_col", int, 0
    if pa.types.is_decimal(arrow_type):  # DuckDB sums integers into HUGEINT/DECIMAL
        if arrow_type.scale == 0:
            return TDatumType.BIGINT, "int_col", int, 0
        return TDatumType.DOUBLE, "real_col", float, 0.0
    if pa.types.is_floating(arrow_type) or pa.types.is_null(arrow_type):
        return TDatumType.DOUBLE, "real_col", float, 0.0
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return TDatumType.STR, "str_col", str, ""
    if pa.types.is_date(arrow_type):
        return TDatumType.DATE, "int_col", lambda d: (d - _EPOCH.date()).days * 86400, 0
    if pa.types.is_timestamp(arrow_type):
        return TDatumType.TIMESTAMP, "int_col", lambda t: int((t - _EPOCH).total_seconds()), 0
    raise TDBException(error_msg=f"test server: no HeavyDB type for Arrow {arrow_type}")


def _query_result(table: pa.Table | None, started: float) -> TQueryResult:
    row_desc, columns = [], []
    for name, column in zip(table.column_names if table else [], table.columns if table else [],
                            strict=True):
        kind, thrift_column = _thrift_column(column)
        row_desc.append(_column_type(name, kind))
        columns.append(thrift_column)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    return TQueryResult(row_set=TRowSet(row_desc=row_desc, rows=[], columns=columns,
                                        is_columnar=True),
                        execution_time_ms=elapsed_ms, total_time_ms=elapsed_ms, nonce="")


class _Handler:
    """The Iface methods; each checks the session, then asks the server."""

    def __init__(self, server: HeavyDBTestServer) -> None:
        self._server = server

    def connect(self, user: str, passwd: str, dbname: str) -> str:
        return self._server._login(user, passwd, dbname)

    def disconnect(self, session: str) -> None:
        self._server._sessions.pop(session, None)

    def get_version(self) -> str:
        return self._server.version

    def get_tables(self, session: str) -> list[str]:
        self._server._user(session)
        return [row[0] for row in self._server.sql(
            "SELECT table_name FROM information_schema.tables ORDER BY table_name")]

    def get_table_details(self, session: str, table_name: str) -> TTableDetails:
        self._server._user(session)
        try:
            described = self._server.sql(f"DESCRIBE {_quote(table_name)}")
        except duckdb.Error:
            raise TDBException(error_msg=f"Table/View {table_name} for catalog "
                                         f"{self._server.database} does not exist") from None
        row_desc = [_column_type(name, _SQL_TYPES.get(kind.split("(")[0], TDatumType.STR))
                    for name, kind, *_ in described]
        return TTableDetails(row_desc=row_desc, fragment_size=32_000_000, page_size=2_097_152,
                             max_rows=2**62, view_sql="", shard_count=0, key_metainfo="[]",
                             is_temporary=False, partition_detail=0, table_type=0)

    def sql_execute(self, session: str, query: str, column_format: bool, nonce: str,
                    first_n: int, at_most_n: int) -> TQueryResult:
        started = time.monotonic()
        table = self._server._execute(self._server._user(session), query)
        if table is not None and first_n >= 0:
            table = table.slice(0, first_n)
        return _query_result(table, started)

    def sql_execute_df(self, session: str, query: str, device_type: int, device_id: int,
                       first_n: int, transport_method: int) -> TDataFrame:
        started = time.monotonic()
        if device_type != 0 or transport_method != TArrowTransport.WIRE:
            raise TDBException(error_msg="test server: only CPU Arrow results over the wire")
        table = self._server._execute(self._server._user(session), query)
        if table is None:
            raise TDBException(error_msg="SQL Error: not a SELECT statement")
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        buffer = sink.getvalue().to_pybytes()
        return TDataFrame(sm_handle=b"", sm_size=0, df_handle=b"", df_size=len(buffer),
                          execution_time_ms=int((time.monotonic() - started) * 1000),
                          arrow_conversion_time_ms=0, df_buffer=buffer)

    def load_table_binary_arrow(self, session: str, table_name: str, arrow_stream: bytes,
                                use_column_names: bool) -> None:
        user = self._server._user(session)
        self._server._check_write(user, f"load into {table_name}")
        data = pa.ipc.open_stream(arrow_stream).read_all()
        self._server._insert(table_name, data)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def unsupported(*_args: Any) -> None:
            raise TApplicationException(TApplicationException.UNKNOWN_METHOD,
                                        f"{name} is not implemented by the HeavyDB test server")
        return unsupported


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class HeavyDBTestServer:
    """A threaded Thrift server on 127.0.0.1 with an in-memory DuckDB behind it.

    Args:
        users: user -> password accepted by ``connect``.
        read_only_users: Users whose non-SELECT statements and loads are refused.
        database: The only database name ``connect`` accepts.
        version: What ``get_version`` answers.
    """

    def __init__(self, *, users: dict[str, str] | None = None,
                 read_only_users: frozenset[str] = frozenset(), database: str = "heavyai",
                 version: str = "8.0.1-duckdb") -> None:
        self.users = dict(users or {"admin": "HyperInteractive"})
        self.read_only_users = read_only_users
        self.database = database
        self.version = version
        #: RPC name -> calls received (counted before any fault applies).
        self.calls: Counter[str] = Counter()
        self._faults: dict[str, Fault] = {}
        self._sessions: dict[str, str] = {}
        self._db = duckdb.connect(":memory:")
        self._db_lock = threading.Lock()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._clients: set[socket.socket] = set()
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> HeavyDBTestServer:
        """Listen on a free port of 127.0.0.1 and serve until :meth:`stop`."""
        self._stopping.clear()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop, "heavydb-test-accept")
        return self

    def stop(self) -> None:
        """Close the port and every connection; join all threads. The port stays reserved
        in ``self.port``, so a later :meth:`start` comes back on it."""
        self._stopping.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._threads = [t for t in self._threads if t.is_alive()]
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def close(self) -> None:
        """Stop and release the database."""
        self.stop()
        self._db.close()

    def __enter__(self) -> HeavyDBTestServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- test controls ---------------------------------------------------------------------

    def inject(self, rpc: str, fault: Fault) -> None:
        """Apply ``fault`` to the next calls of ``rpc``."""
        with self._lock:
            self._faults[rpc] = fault

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self._lock:
            self._faults.clear()

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        """Run SQL directly on the database (test setup and assertions), bypassing Thrift."""
        with self._db_lock:
            return self._db.execute(query).fetchall()

    def executemany(self, query: str, rows: list[tuple[Any, ...]]) -> None:
        """Run a parameterised statement for many rows directly on the database (setup)."""
        with self._db_lock:
            self._db.executemany(query, rows)

    def tables(self) -> set[str]:
        """Names of every table in the database."""
        return {row[0] for row in self.sql("SELECT table_name FROM information_schema.tables")}

    # -- serving ---------------------------------------------------------------------------

    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self._clients.add(client)
            self._spawn(self._serve, "heavydb-test-client", client)

    def _serve(self, client: socket.socket) -> None:
        handle = TSocket.TSocket()
        handle.setHandle(client)
        transport = TTransport.TBufferedTransport(handle)
        protocol = TBinaryProtocol.TBinaryProtocolAccelerated(transport)
        processor = Heavy.Processor(_Handler(self))
        processor.on_message_begin(self._on_message)
        try:
            while not self._stopping.is_set():
                processor.process(protocol, protocol)
        except (TTransport.TTransportException, OSError, EOFError):
            pass  # the client went away, or a fault dropped it
        finally:
            with self._lock:
                self._clients.discard(client)
            transport.close()

    def _on_message(self, name: str, _type: int, _seqid: int) -> None:
        with self._lock:
            self.calls[name] += 1
            fault = self._faults.get(name)
            if fault is not None and fault.times is not None:
                fault.times -= 1
                if fault.times < 0:
                    fault = None
        if fault is None:
            return
        if fault.delay_seconds:
            self._stopping.wait(fault.delay_seconds)
        if fault.drop:
            raise _Dropped(message=f"test server dropped the connection at {name}")

    # -- what the handler uses -------------------------------------------------------------

    def _login(self, user: str, password: str, dbname: str) -> str:
        if self.users.get(user) != password or dbname not in ("", None, self.database):
            raise TDBException(error_msg="Invalid credentials.")
        session = uuid.uuid4().hex
        self._sessions[session] = user
        return session

    def _user(self, session: str) -> str:
        user = self._sessions.get(session)
        if user is None:
            raise TDBException(error_msg="Session not valid.")
        return user

    def _check_write(self, user: str, what: str) -> None:
        if user in self.read_only_users:
            raise TDBException(error_msg=f"Violation of access privileges: user {user} has no "
                                         f"proper privileges for {what}")

    def _execute(self, user: str, query: str) -> pa.Table | None:
        try:
            statements = duckdb.extract_statements(query)
        except duckdb.Error as exc:
            raise TDBException(error_msg=f"SQL Error: {exc}") from None
        if len(statements) != 1:
            raise TDBException(error_msg="SQL Error: exactly one statement per request")
        if statements[0].type not in _READ_ONLY_STATEMENTS:
            self._check_write(user, statements[0].type.name)
        try:
            with self._db_lock:
                relation = self._db.sql(query)
                return None if relation is None else relation.to_arrow_table()
        except duckdb.Error as exc:
            raise TDBException(error_msg=f"SQL Error: {exc}") from None

    def _insert(self, table_name: str, data: pa.Table) -> None:
        view = f"load_{uuid.uuid4().hex}"
        try:
            with self._db_lock:
                self._db.register(view, data)
                try:
                    self._db.execute(f"INSERT INTO {_quote(table_name)} SELECT * FROM {view}")
                finally:
                    self._db.unregister(view)
        except duckdb.Error as exc:
            raise TDBException(error_msg=f"Loader Error: {exc}") from None


__all__ = ["Fault", "HeavyDBTestServer"]
