"""Which failures are transient: the predicates behind the retry decorators and recovery.

A retry pays off only when the same call can succeed a moment later. A missing file, an HTTP
404 or a SQL syntax error fails identically every time, and retrying only delays the report a
person needs, so each predicate lists what is really temporary for its kind and nothing else.
Driver errors are matched by class name so that heavydb/heavyai/thrift need not be installed.
"""

from __future__ import annotations

import errno
import smtplib
import socket
import urllib.error

from .errors import DatabaseError, NetworkError, ResourceError

#: errno values that mean the peer or the route is away for now, not that the request is wrong.
NETWORK_ERRNOS = frozenset(
    {
        errno.ECONNRESET,
        errno.ECONNREFUSED,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EPIPE,
        errno.ECONNABORTED,
    }
)
#: errno values that mean the machine is short of memory, disk, descriptors or a busy device.
RESOURCE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.ENOMEM, errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.EBUSY}
)
#: Class names of database-driver errors about the connection, not the statement. Matched by
#: name so that heavydb/heavyai/thrift need not be installed.
TRANSIENT_DB_CLASS_NAMES = frozenset({"OperationalError", "InterfaceError", "TTransportException"})
#: Class names that always mean the statement or the account is wrong.
PERMANENT_DB_CLASS_NAMES = frozenset(
    {"ProgrammingError", "DatabaseQueryError", "IntegrityError", "NotSupportedError"}
)
#: Message fragments that make even an ``OperationalError`` permanent.
PERMANENT_DB_MESSAGES = (
    "syntax error",
    "permission denied",
    "not authorized",
    "access denied",
    "authentication failed",
)


def is_transient_network_error(exc: BaseException) -> bool:
    """Whether ``exc`` means a remote peer is unreachable for now.

    True for our ``NetworkError``, dropped/refused/timed-out connections, temporary DNS
    failure (``EAI_AGAIN``), SMTP disconnects and 4xx replies, HTTP 429 and 5xx, and
    ``URLError`` whose reason is one of those. False for local file errors (a missing file is
    not a network error), other HTTP 4xx and everything else.
    """
    if isinstance(exc, NetworkError):
        return True
    if isinstance(exc, urllib.error.HTTPError):  # before URLError: it is one
        return exc.code == 429 or exc.code >= 500
    if isinstance(exc, urllib.error.URLError):
        return isinstance(exc.reason, BaseException) and is_transient_network_error(exc.reason)
    if isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError):
        return True
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500  # RFC 5321: 4yz is "transient negative completion"
    return _is_transport_error(exc)


def is_transient_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the database connection failed rather than the statement.

    True for our ``DatabaseError``, transport errors (as for the network) and driver errors
    named ``OperationalError``, ``InterfaceError`` or ``TTransportException``, unless the
    message says syntax or permissions. Never for ``ProgrammingError`` or
    ``DatabaseQueryError``: the same statement would fail the same way.
    """
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & PERMANENT_DB_CLASS_NAMES:
        return False
    if isinstance(exc, DatabaseError):
        return True
    if names & TRANSIENT_DB_CLASS_NAMES:
        message = str(exc).lower()
        return not any(fragment in message for fragment in PERMANENT_DB_MESSAGES)
    return _is_transport_error(exc)


def is_transient_resource_error(exc: BaseException) -> bool:
    """Whether ``exc`` means memory, disk space or descriptors ran short for now.

    True for our ``ResourceError`` family, ``MemoryError`` and ``OSError`` with ``ENOSPC``,
    ``ENOMEM``, ``EAGAIN``, ``EMFILE``, ``ENFILE`` or ``EBUSY``.
    """
    if isinstance(exc, ResourceError | MemoryError):
        return True
    return isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS


def _is_transport_error(exc: BaseException) -> bool:
    if isinstance(exc, socket.gaierror):  # before OSError: its errno is an EAI_* code
        return exc.errno == socket.EAI_AGAIN
    if isinstance(exc, ConnectionError | TimeoutError):  # TimeoutError is socket.timeout
        return True
    return isinstance(exc, OSError) and exc.errno in NETWORK_ERRNOS


__all__ = [
    "NETWORK_ERRNOS",
    "PERMANENT_DB_CLASS_NAMES",
    "PERMANENT_DB_MESSAGES",
    "RESOURCE_ERRNOS",
    "TRANSIENT_DB_CLASS_NAMES",
    "is_transient_database_error",
    "is_transient_network_error",
    "is_transient_resource_error",
]
