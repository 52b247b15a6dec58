"""Tests of the retry decorators: attempts, waits, filtering, RetryError, logging, config."""

from __future__ import annotations

import asyncio
import errno
import http.server
import json
import logging
import random
import smtplib
import socket
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import tenacity

from daemon.error_handling.config import (
    CONFIG_DIR_ENV,
    ErrorHandlingConfig,
    RetryConfig,
    RetryKindConfig,
)
from daemon.error_handling.errors import (
    DatabaseError,
    DatabaseQueryError,
    DataError,
    DiskSpaceError,
    HeavyOptimizerError,
    MemoryLimitError,
    NetworkError,
    ResourceError,
)
from daemon.error_handling.retry import (
    RetryError,
    retry,
    retry_on_database_error,
    retry_on_network_error,
    retry_on_resource_error,
    sleep_using_event,
    wait_backoff,
)
from daemon.error_handling.transient import (
    is_transient_database_error,
    is_transient_network_error,
    is_transient_resource_error,
)

pytestmark = pytest.mark.timeout(20)


class Flaky:
    """A callable that raises the given errors in turn, then returns ``result``."""

    def __init__(self, *errors: BaseException, result: str = "ok") -> None:
        self.errors = list(errors)
        self.calls = 0
        self.result = result
        self.raised: list[BaseException] = []

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            exc = self.errors.pop(0)
            self.raised.append(exc)
            raise exc
        return self.result


def always(exc_factory: Callable[[], BaseException]) -> Flaky:
    return Flaky(*(exc_factory() for _ in range(50)))


def http_error(code: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("http://example.invalid/", code, "status", {}, None)  # type: ignore[arg-type]


def state_at(attempt: int) -> tenacity.RetryCallState:
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.attempt_number = attempt
    return state


# -- attempts and waits -------------------------------------------------------------------


def test_returns_result_after_transient_failures() -> None:
    # Given a call that fails twice and then succeeds
    waits: list[float] = []
    flaky = Flaky(ConnectionResetError("reset"), TimeoutError("slow"))
    # When it is retried with three attempts
    result = retry(max_attempts=3, jitter=False, sleep=waits.append)(flaky)()
    # Then the third attempt's result comes back after two waits
    assert result == "ok"
    assert flaky.calls == 3
    assert waits == [1.0, 2.0]


def test_success_on_first_attempt_never_waits() -> None:
    waits: list[float] = []
    flaky = Flaky()
    assert retry(sleep=waits.append)(flaky)() == "ok"
    assert flaky.calls == 1
    assert waits == []


@pytest.mark.parametrize(
    ("backoff", "delay", "expected"),
    [
        ("exponential", 1.0, [1.0, 2.0, 4.0, 8.0, 16.0]),
        ("exponential", 0.5, [0.5, 1.0, 2.0, 4.0, 8.0]),
        ("linear", 1.0, [1.0, 2.0, 3.0, 4.0, 5.0]),
        ("linear", 0.25, [0.25, 0.5, 0.75, 1.0, 1.25]),
        ("fixed", 1.5, [1.5, 1.5, 1.5, 1.5, 1.5]),
    ],
)
def test_wait_sequence_for_each_backoff(backoff: Any, delay: float, expected: list[float]) -> None:
    waits: list[float] = []
    flaky = always(lambda: OSError(errno.ECONNRESET, "reset"))
    decorated = retry(
        max_attempts=6, delay=delay, backoff=backoff, jitter=False, sleep=waits.append
    )
    with pytest.raises(RetryError):
        decorated(flaky)()
    assert waits == pytest.approx(expected)
    assert flaky.calls == 6


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("exponential", [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]),
        ("linear", [1.0, 2.0, 3.0, 4.0, 5.0, 5.0]),
        ("fixed", [5.0] * 6),
    ],
)
def test_max_delay_caps_every_wait(backoff: Any, expected: list[float]) -> None:
    delay = 7.0 if backoff == "fixed" else 1.0
    waits: list[float] = []
    decorated = retry(
        max_attempts=7, delay=delay, backoff=backoff, max_delay=5.0, jitter=False,
        sleep=waits.append,
    )  # fmt: skip
    with pytest.raises(RetryError):
        decorated(always(ValueError))()
    assert waits == pytest.approx(expected)


@pytest.mark.parametrize("backoff", ["exponential", "linear", "fixed"])
def test_jitter_stays_within_ten_percent_and_under_the_cap(backoff: Any) -> None:
    without = wait_backoff(delay=1.0, backoff=backoff, max_delay=6.0, jitter=False)
    with_jitter = wait_backoff(
        delay=1.0, backoff=backoff, max_delay=6.0, jitter=True, rng=random.Random(42)
    )
    extras = []
    for attempt in range(1, 8):
        for _ in range(200):
            base = without(state_at(attempt))
            jittered = with_jitter(state_at(attempt))
            assert base <= jittered <= min(base * 1.1, 6.0)
            extras.append(jittered - base)
    assert max(extras) > 0.05  # jitter is really applied, not always zero


def test_jitter_follows_the_injected_rng() -> None:
    def waits_for(seed: int) -> list[float]:
        waits: list[float] = []
        decorated = retry(max_attempts=5, sleep=waits.append, rng=random.Random(seed))
        with pytest.raises(RetryError):
            decorated(always(ValueError))()
        return waits

    assert waits_for(1) == waits_for(1)
    assert waits_for(1) != waits_for(2)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"delay": -1.0}, {"max_delay": -1.0}, {"backoff": "quadratic"}],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        retry(**kwargs)


# -- filtering and the final error --------------------------------------------------------


def test_non_matching_exception_propagates_after_one_attempt_unwrapped() -> None:
    waits: list[float] = []
    flaky = Flaky(KeyError("missing"))
    decorated = retry(exceptions=(ConnectionError,), sleep=waits.append)(flaky)
    with pytest.raises(KeyError) as caught:
        decorated()
    assert caught.value is flaky.raised[0]
    assert flaky.calls == 1
    assert waits == []


def test_retry_error_carries_last_exception_attempts_and_function() -> None:
    # Given a function that always fails with a fresh error
    raised: list[BaseException] = []

    def fetch_prices() -> None:
        raised.append(NetworkError("share offline"))
        raise raised[-1]

    # When all four attempts fail
    with pytest.raises(RetryError) as caught:
        retry(max_attempts=4, sleep=lambda _s: None)(fetch_prices)()
    # Then the error holds the last exception, is chained from it and names the function
    error = caught.value
    assert len(raised) == 4
    assert error.last_exception is raised[-1]
    assert error.__cause__ is raised[-1]
    assert error.attempts == 4
    assert error.function.endswith("fetch_prices")
    assert isinstance(error, HeavyOptimizerError)
    assert error.recoverable is True  # NetworkError is recoverable
    record = error.to_dict()
    assert record["code"] == "RETRY_EXHAUSTED"
    assert record["context"]["attempts"] == 4
    assert record["context"]["last_error_type"] == "NetworkError"


def test_retry_error_is_not_recoverable_when_last_error_is_not() -> None:
    with pytest.raises(RetryError) as caught:
        retry(max_attempts=2, sleep=lambda _s: None)(always(ValueError))()
    assert caught.value.recoverable is False


def test_on_retry_gets_exception_attempt_and_wait() -> None:
    calls: list[tuple[BaseException, int, float]] = []
    flaky = Flaky(ConnectionResetError("a"), ConnectionResetError("b"))
    decorated = retry(
        max_attempts=3, delay=0.5, jitter=False, sleep=lambda _s: None,
        on_retry=lambda exc, attempt, wait: calls.append((exc, attempt, wait)),
    )  # fmt: skip
    assert decorated(flaky)() == "ok"
    assert calls == [(flaky.raised[0], 1, 0.5), (flaky.raised[1], 2, 1.0)]


def test_failing_on_retry_callback_is_logged_and_retries_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(_exc: BaseException, _attempt: int, _wait: float) -> None:
        raise RuntimeError("callback bug")

    flaky = Flaky(ConnectionResetError("a"))
    with caplog.at_level(logging.ERROR, logger="daemon.error_handling.retry"):
        assert retry(sleep=lambda _s: None, on_retry=broken)(flaky)() == "ok"
    assert any("on_retry callback failed" in r.getMessage() for r in caplog.records)


def test_each_retry_is_logged_at_warning(caplog: pytest.LogCaptureFixture) -> None:
    def load_quotes() -> None:
        raise ConnectionRefusedError("peer refused")

    decorated = retry(max_attempts=3, delay=2.0, jitter=False, sleep=lambda _s: None)(load_quotes)
    with (
        caplog.at_level(logging.WARNING, logger="daemon.error_handling.retry"),
        pytest.raises(RetryError),
    ):
        decorated()
    records = [r for r in caplog.records if r.name == "daemon.error_handling.retry"]
    assert [r.levelno for r in records] == [logging.WARNING, logging.WARNING]
    assert records[0].args  # lazy %-style arguments, not a pre-formatted string
    first, second = (r.getMessage() for r in records)
    assert "load_quotes" in first
    assert "attempt 1/3" in first and "2.00 seconds" in first
    assert "ConnectionRefusedError: peer refused" in first
    assert "attempt 2/3" in second and "4.00 seconds" in second


def test_async_functions_are_retried() -> None:
    waits: list[float] = []
    calls = 0

    async def ping() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TimeoutError("slow")
        return "pong"

    decorated = retry(max_attempts=3, jitter=False, sleep=waits.append)(ping)
    assert asyncio.run(decorated()) == "pong"
    assert waits == [1.0, 2.0]


# -- shutdown -----------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_sleep_using_event_returns_at_once_when_event_is_set() -> None:
    event = threading.Event()
    event.set()
    sleep_using_event(event)(3600.0)  # would hit the timeout if it really waited


@pytest.mark.timeout(10)
def test_stop_event_cuts_a_long_wait_and_stops_further_attempts() -> None:
    # Given a retried call waiting an hour after its first failure, in a worker thread
    shutdown = threading.Event()
    first_failed = threading.Event()
    outcome: list[BaseException] = []

    def connect() -> None:
        first_failed.set()
        raise ConnectionRefusedError("down")

    decorated = retry(max_attempts=10, delay=3600.0, jitter=False, stop_event=shutdown)(connect)

    def run() -> None:
        try:
            decorated()
        except RetryError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, name="retry-worker")
    worker.start()
    # When shutdown is requested during the wait
    assert first_failed.wait(5)
    shutdown.set()
    worker.join(5)
    # Then the wait ends early and no attempt follows the next failure
    assert not worker.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], RetryError)
    assert outcome[0].attempts <= 2


# -- what each specialised decorator retries ----------------------------------------------


class TTransportException(Exception):
    """Stands in for thrift's transport error (thrift is not installed here)."""


class ProgrammingError(Exception):
    """Stands in for a DB-API driver's ProgrammingError."""


def sqlite_syntax_error() -> sqlite3.OperationalError:
    with sqlite3.connect(":memory:") as connection:
        try:
            connection.execute("SELEC 1")
        except sqlite3.OperationalError as exc:
            return exc
    raise AssertionError("sqlite accepted a syntax error")


NETWORK_CASES: list[tuple[str, Callable[[], BaseException], bool]] = [
    ("NetworkError", lambda: NetworkError("down"), True),
    ("ConnectionResetError", ConnectionResetError, True),
    ("ConnectionRefusedError", ConnectionRefusedError, True),
    ("ConnectionAbortedError", ConnectionAbortedError, True),
    ("BrokenPipeError", BrokenPipeError, True),
    ("TimeoutError", TimeoutError, True),
    ("gaierror EAI_AGAIN", lambda: socket.gaierror(socket.EAI_AGAIN, "try again"), True),
    ("SMTPServerDisconnected", lambda: smtplib.SMTPServerDisconnected("gone"), True),
    ("SMTPConnectError", lambda: smtplib.SMTPConnectError(554, "no"), True),
    ("SMTP 421", lambda: smtplib.SMTPResponseException(421, "closing"), True),
    ("URLError(refused)", lambda: urllib.error.URLError(ConnectionRefusedError()), True),
    ("URLError(timeout)", lambda: urllib.error.URLError(TimeoutError("timed out")), True),
    ("HTTP 429", lambda: http_error(429), True),
    ("HTTP 500", lambda: http_error(500), True),
    ("HTTP 503", lambda: http_error(503), True),
    ("OSError EHOSTUNREACH", lambda: OSError(errno.EHOSTUNREACH, "no route"), True),
    ("OSError ENETUNREACH", lambda: OSError(errno.ENETUNREACH, "unreachable"), True),
    ("OSError ENETDOWN", lambda: OSError(errno.ENETDOWN, "down"), True),
    ("OSError ETIMEDOUT", lambda: OSError(errno.ETIMEDOUT, "timed out"), True),
    ("FileNotFoundError", lambda: FileNotFoundError(errno.ENOENT, "missing"), False),
    ("PermissionError", lambda: PermissionError(errno.EACCES, "denied"), False),
    ("IsADirectoryError", lambda: IsADirectoryError(errno.EISDIR, "dir"), False),
    ("HTTP 404", lambda: http_error(404), False),
    ("HTTP 400", lambda: http_error(400), False),
    ("HTTP 401", lambda: http_error(401), False),
    ("ValueError", lambda: ValueError("bad"), False),
    ("gaierror EAI_NONAME", lambda: socket.gaierror(socket.EAI_NONAME, "unknown"), False),
    ("URLError(str)", lambda: urllib.error.URLError("unknown url type: foo"), False),
    ("URLError(missing)", lambda: urllib.error.URLError(FileNotFoundError()), False),
    ("SMTP 550", lambda: smtplib.SMTPResponseException(550, "no such user"), False),
    ("SMTPAuthenticationError", lambda: smtplib.SMTPAuthenticationError(535, "bad"), False),
    ("DataError", lambda: DataError("bad csv"), False),
]

DATABASE_CASES: list[tuple[str, Callable[[], BaseException], bool]] = [
    ("DatabaseError", lambda: DatabaseError("dropped"), True),
    ("ConnectionResetError", ConnectionResetError, True),
    ("TimeoutError", TimeoutError, True),
    ("OSError ECONNREFUSED", lambda: OSError(errno.ECONNREFUSED, "refused"), True),
    ("sqlite locked", lambda: sqlite3.OperationalError("database is locked"), True),
    ("sqlite InterfaceError", lambda: sqlite3.InterfaceError("bad binding"), True),
    ("TTransportException", lambda: TTransportException("socket closed"), True),
    ("DatabaseQueryError", lambda: DatabaseQueryError("syntax"), False),
    ("ProgrammingError", lambda: ProgrammingError("no such table"), False),
    ("sqlite ProgrammingError", lambda: sqlite3.ProgrammingError("closed"), False),
    ("sqlite IntegrityError", lambda: sqlite3.IntegrityError("unique"), False),
    ("real sqlite syntax error", sqlite_syntax_error, False),
    ("Operational permission", lambda: sqlite3.OperationalError("permission denied"), False),
    ("Operational not authorized", lambda: sqlite3.OperationalError("not authorized"), False),
    ("ValueError", lambda: ValueError("bad"), False),
    ("FileNotFoundError", lambda: FileNotFoundError(errno.ENOENT, "missing"), False),
]

RESOURCE_CASES: list[tuple[str, Callable[[], BaseException], bool]] = [
    ("ResourceError", lambda: ResourceError("short"), True),
    ("MemoryLimitError", lambda: MemoryLimitError("oom"), True),
    ("DiskSpaceError", lambda: DiskSpaceError("full"), True),
    ("MemoryError", MemoryError, True),
    ("ENOSPC", lambda: OSError(errno.ENOSPC, "No space left on device"), True),
    ("ENOMEM", lambda: OSError(errno.ENOMEM, "Cannot allocate memory"), True),
    ("EAGAIN", lambda: BlockingIOError(errno.EAGAIN, "try again"), True),
    ("EMFILE", lambda: OSError(errno.EMFILE, "Too many open files"), True),
    ("ENFILE", lambda: OSError(errno.ENFILE, "File table overflow"), True),
    ("EBUSY", lambda: OSError(errno.EBUSY, "busy"), True),
    ("FileNotFoundError", lambda: FileNotFoundError(errno.ENOENT, "missing"), False),
    ("PermissionError", lambda: PermissionError(errno.EACCES, "denied"), False),
    ("EIO", lambda: OSError(errno.EIO, "I/O error"), False),
    ("ConnectionResetError", ConnectionResetError, False),
    ("ValueError", lambda: ValueError("bad"), False),
]

DECORATORS: dict[str, Callable[..., Any]] = {
    "network": retry_on_network_error,
    "database": retry_on_database_error,
    "resource": retry_on_resource_error,
}
PREDICATES: dict[str, Callable[[BaseException], bool]] = {
    "network": is_transient_network_error,
    "database": is_transient_database_error,
    "resource": is_transient_resource_error,
}
ALL_CASES = [
    pytest.param(kind, factory, retried, id=f"{kind}-{name}")
    for kind, cases in (
        ("network", NETWORK_CASES),
        ("database", DATABASE_CASES),
        ("resource", RESOURCE_CASES),
    )
    for name, factory, retried in cases
]


@pytest.mark.parametrize(("kind", "factory", "retried"), ALL_CASES)
def test_specialised_decorator_retries_only_transient_errors(
    kind: str, factory: Callable[[], BaseException], retried: bool
) -> None:
    # Given a function that always raises this kind of error
    flaky = always(factory)
    decorated = DECORATORS[kind](3, 0.01, config=RetryConfig(), sleep=lambda _s: None)(flaky)
    # When it is called
    with pytest.raises(BaseException) as caught:
        decorated()
    # Then transient errors are retried to the end, others propagate unwrapped at once
    assert PREDICATES[kind](flaky.raised[0]) is retried
    if retried:
        assert isinstance(caught.value, RetryError)
        assert flaky.calls == 3
        assert caught.value.last_exception is flaky.raised[-1]
    else:
        assert caught.value is flaky.raised[0]
        assert flaky.calls == 1


def test_network_decorator_retries_a_real_refused_connection() -> None:
    with socket.socket() as probe:  # a port nobody listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    attempts = 0

    def connect() -> None:
        nonlocal attempts
        attempts += 1
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass

    decorated = retry_on_network_error(2, 0.01, config=RetryConfig(), sleep=lambda _s: None)
    with pytest.raises(RetryError) as caught:
        decorated(connect)()
    assert isinstance(caught.value.last_exception, ConnectionRefusedError)
    assert attempts == 2


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    statuses: ClassVar[list[int]] = []

    def do_GET(self) -> None:
        status = self.statuses.pop(0)
        body = json.dumps({"status": status}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass


@pytest.fixture
def status_server() -> Iterator[tuple[str, list[int]]]:
    statuses: list[int] = []
    handler = type("Handler", (_StatusHandler,), {"statuses": statuses})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="status-server"
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", statuses
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(json.load(response)["status"])
    except urllib.error.HTTPError as exc:
        exc.close()
        raise


def test_network_decorator_retries_real_http_503_and_429_until_200(
    status_server: tuple[str, list[int]],
) -> None:
    url, statuses = status_server
    statuses.extend([503, 429, 200])
    decorated = retry_on_network_error(4, 0.01, config=RetryConfig(), sleep=lambda _s: None)
    assert decorated(_get)(url) == 200
    assert statuses == []


def test_network_decorator_does_not_retry_real_http_404(
    status_server: tuple[str, list[int]],
) -> None:
    url, statuses = status_server
    statuses.extend([404, 200])
    decorated = retry_on_network_error(4, 0.01, config=RetryConfig(), sleep=lambda _s: None)
    with pytest.raises(urllib.error.HTTPError) as caught:
        decorated(_get)(url)
    assert caught.value.code == 404
    assert statuses == [200]  # only one request was made


# -- budgets from the config --------------------------------------------------------------


def test_budgets_come_from_the_config_file_at_decoration_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a config file, found through the environment after this module was imported
    retry_section = {
        "default_backoff": "linear",
        "max_delay": 0.6,
        "network_errors": {"max_attempts": 4, "initial_delay": 0.25},
    }
    (tmp_path / "error_handling_config.json").write_text(json.dumps({"retry": retry_section}))
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path))
    waits: list[float] = []
    # When a function is decorated without explicit budgets
    flaky = always(ConnectionResetError)
    decorated = retry_on_network_error(sleep=waits.append)(flaky)
    with pytest.raises(RetryError):
        decorated()
    # Then attempts, linear backoff and the cap follow the file (jitter adds at most 10 %)
    assert flaky.calls == 4
    bases = [0.25, 0.5, 0.6]
    assert all(b <= w <= min(b * 1.1, 0.6) for b, w in zip(bases, waits, strict=True))


def test_explicit_arguments_override_the_config() -> None:
    config = ErrorHandlingConfig(
        retry=RetryConfig(
            default_backoff="fixed", max_delay=10.0, database_errors=RetryKindConfig(5, 3.0)
        )
    )
    waits: list[float] = []
    flaky = always(TimeoutError)
    with pytest.raises(RetryError):
        retry_on_database_error(2, 0.5, config=config, sleep=waits.append)(flaky)()
    assert flaky.calls == 2
    assert 0.5 <= waits[0] <= 0.55

    waits.clear()
    flaky = always(MemoryError)
    with pytest.raises(RetryError):
        retry_on_resource_error(config=config, sleep=waits.append)(flaky)()
    assert flaky.calls == RetryConfig().resource_errors.max_attempts
    assert all(0.5 <= w <= 0.55 for w in waits)  # fixed backoff from the config


def test_plain_retry_takes_its_defaults_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a config whose retry defaults differ from the built-in ones
    (tmp_path / "error_handling_config.json").write_text(json.dumps({"retry": {
        "default_max_attempts": 4, "default_delay": 0.25, "default_backoff": "linear",
        "max_delay": 0.6}}))
    monkeypatch.setenv("HEAVY_OPTIMIZER_CONFIG_DIR", str(tmp_path))
    waits: list[float] = []
    calls = 0

    @retry(jitter=False, sleep=waits.append)
    def flaky() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("again")

    # When it keeps failing
    with pytest.raises(RetryError):
        flaky()
    # Then the config's attempts, linear waits and cap were used
    assert calls == 4
    assert waits == [0.25, 0.5, 0.6]
