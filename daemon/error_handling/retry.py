"""Retry decorators built from tenacity objects.

``retry`` composes tenacity's stop, wait, retry and before_sleep objects; this module adds
only what tenacity leaves to its users: our backoff vocabulary (exponential, linear, fixed,
capped, with proportional jitter), a ``RetryError`` in our hierarchy, one WARNING line per
retry, and an injectable, interruptible sleep so tests never wait and shutdown cuts waits.

The specialised decorators (``retry_on_network_error`` ...) retry only what
:mod:`.transient` calls transient for their kind, and take their budgets from
``error_handling_config.json`` at decoration time, never at import.
"""

from __future__ import annotations

import inspect
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Literal, TypeVar

import tenacity
from tenacity.nap import sleep_using_event
from tenacity.wait import wait_base

from .config import ErrorHandlingConfig, RetryConfig, RetryKindConfig, load_error_handling_config
from .errors import HeavyOptimizerError
from .transient import (
    is_transient_database_error,
    is_transient_network_error,
    is_transient_resource_error,
)

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
BackoffKind = Literal["exponential", "linear", "fixed"]
#: ``on_retry(exception, attempt, wait_seconds)``: called before each wait.
OnRetry = Callable[[BaseException, int, float], None]
ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]

#: Jitter adds a random extra of up to this share of the wait (never beyond ``max_delay``).
JITTER_FRACTION = 0.1


class RetryError(HeavyOptimizerError):
    """Raised when every attempt of a retried call failed; chained from the last error.

    ``recoverable`` follows the last error: the retries are spent, but a later or different
    attempt (the recovery manager's business) may still help if that error says so.
    """

    error_code = "RETRY_EXHAUSTED"

    def __init__(self, *, function: str, attempts: int, last_exception: BaseException) -> None:
        super().__init__(
            f"{function} failed after {attempts} attempt(s): "
            f"{type(last_exception).__name__}: {last_exception}",
            context={
                "function": function,
                "attempts": attempts,
                "last_error_type": type(last_exception).__name__,
            },
            recoverable=bool(getattr(last_exception, "recoverable", False)),
        )
        self.function = function
        self.attempts = attempts
        self.last_exception = last_exception


class wait_backoff(wait_base):  # lower case: tenacity's naming for wait strategies
    """Wait ``delay`` grown by ``backoff``, capped at ``max_delay``, plus optional jitter.

    For attempt n (n = 1 after the first failure): exponential ``delay * 2**(n-1)``, linear
    ``delay * n``, fixed ``delay``. Jitter adds a uniform extra in ``[0, 0.1 * wait]`` so that
    several workers failing together do not retry in lockstep; the result never exceeds
    ``max_delay``, which is the promise callers plan around.
    """

    def __init__(
        self,
        *,
        delay: float,
        backoff: BackoffKind,
        max_delay: float,
        jitter: bool = True,
        rng: random.Random | None = None,
    ) -> None:
        if delay < 0 or max_delay < 0:
            raise ValueError("delay and max_delay must not be negative")
        bases: dict[str, wait_base] = {
            "exponential": tenacity.wait_exponential(multiplier=delay, exp_base=2, max=max_delay),
            "linear": tenacity.wait_incrementing(start=delay, increment=delay, max=max_delay),
            "fixed": tenacity.wait_fixed(min(delay, max_delay)),
        }
        if backoff not in bases:
            raise ValueError(f"backoff must be one of {sorted(bases)}, got {backoff!r}")
        self.base = bases[backoff]
        self.max_delay = max_delay
        self.jitter = jitter
        self.rng = rng or random.Random()

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self.base(retry_state)
        if self.jitter:
            wait += self.rng.uniform(0.0, wait * JITTER_FRACTION)
        return min(wait, self.max_delay)


def retry(
    max_attempts: int | None = None,
    delay: float | None = None,
    backoff: BackoffKind | None = None,
    max_delay: float | None = None,
    jitter: bool = True,
    exceptions: ExceptionTypes = (Exception,),
    on_retry: OnRetry | None = None,
    *,
    config: ErrorHandlingConfig | RetryConfig | None = None,
    sleep: Callable[[float], Any] | None = None,
    stop_event: threading.Event | None = None,
    rng: random.Random | None = None,
) -> Callable[[F], F]:
    """Retry a function (sync or ``async def``) on the given exceptions with backoff.

    An exception outside ``exceptions`` propagates at once, unwrapped. When the last attempt
    fails, :class:`RetryError` is raised from the last exception.

    Args:
        max_attempts: Attempts in total, the first one included (default: config
            ``retry.default_max_attempts``, 3).
        delay: Base wait in seconds after the first failure (``retry.default_delay``, 1.0).
        backoff: How the wait grows: ``exponential``, ``linear`` or ``fixed``
            (``retry.default_backoff``).
        max_delay: Upper bound of any single wait, jitter included (``retry.max_delay``, 60).
        jitter: Add up to 10 % random extra to each wait (see :class:`wait_backoff`).
        exceptions: Exception types worth another attempt.
        on_retry: Called as ``on_retry(exception, attempt, wait_seconds)`` before each wait;
            an error inside it is logged and does not stop the retries.
        sleep: Replaces the wait (tests record waits instead of sleeping).
        stop_event: Shutdown event. Once set, no attempt starts after a failure; in sync
            functions it also cuts the current wait short (unless ``sleep`` is given).
        rng: Random source of the jitter.
        config: Where defaults come from; ``None`` loads the config file when a default is
            needed (at decoration time, never at import).

    Raises:
        ValueError: An argument is out of range.
    """
    if None in (max_attempts, delay, backoff, max_delay):
        loaded = config if config is not None else load_error_handling_config()
        defaults = loaded.retry if isinstance(loaded, ErrorHandlingConfig) else loaded
        max_attempts = defaults.default_max_attempts if max_attempts is None else max_attempts
        delay = defaults.default_delay if delay is None else delay
        backoff = defaults.default_backoff if backoff is None else backoff
        max_delay = defaults.max_delay if max_delay is None else max_delay
    assert max_attempts is not None and delay is not None and backoff is not None
    assert max_delay is not None
    return _retry_when(
        tenacity.retry_if_exception_type(exceptions),
        max_attempts=max_attempts,
        wait=wait_backoff(
            delay=delay, backoff=backoff, max_delay=max_delay, jitter=jitter, rng=rng
        ),
        on_retry=on_retry,
        sleep=sleep,
        stop_event=stop_event,
    )


def retry_on_network_error(
    max_attempts: int | None = None,
    initial_delay: float | None = None,
    *,
    config: ErrorHandlingConfig | RetryConfig | None = None,
    sleep: Callable[[float], Any] | None = None,
    stop_event: threading.Event | None = None,
    on_retry: OnRetry | None = None,
) -> Callable[[F], F]:
    """Retry only transient network failures (see :func:`is_transient_network_error`).

    Budgets default to ``retry.network_errors`` of the config; ``config=None`` loads the
    config file now. Backoff and cap come from ``retry.default_backoff`` and ``max_delay``.
    Other arguments are as for :func:`retry`.
    """
    return _retry_for_kind(
        "network_errors",
        is_transient_network_error,
        max_attempts,
        initial_delay,
        config=config,
        sleep=sleep,
        stop_event=stop_event,
        on_retry=on_retry,
    )


def retry_on_database_error(
    max_attempts: int | None = None,
    initial_delay: float | None = None,
    *,
    config: ErrorHandlingConfig | RetryConfig | None = None,
    sleep: Callable[[float], Any] | None = None,
    stop_event: threading.Event | None = None,
    on_retry: OnRetry | None = None,
) -> Callable[[F], F]:
    """Retry only lost or refused database connections (see :func:`is_transient_database_error`).

    Budgets default to ``retry.database_errors`` of the config; otherwise as
    :func:`retry_on_network_error`.
    """
    return _retry_for_kind(
        "database_errors",
        is_transient_database_error,
        max_attempts,
        initial_delay,
        config=config,
        sleep=sleep,
        stop_event=stop_event,
        on_retry=on_retry,
    )


def retry_on_resource_error(
    max_attempts: int | None = None,
    initial_delay: float | None = None,
    *,
    config: ErrorHandlingConfig | RetryConfig | None = None,
    sleep: Callable[[float], Any] | None = None,
    stop_event: threading.Event | None = None,
    on_retry: OnRetry | None = None,
) -> Callable[[F], F]:
    """Retry only temporary shortages of memory, disk or descriptors.

    See :func:`is_transient_resource_error`. Budgets default to ``retry.resource_errors``
    of the config; otherwise as :func:`retry_on_network_error`.
    """
    return _retry_for_kind(
        "resource_errors",
        is_transient_resource_error,
        max_attempts,
        initial_delay,
        config=config,
        sleep=sleep,
        stop_event=stop_event,
        on_retry=on_retry,
    )


# -- assembly -----------------------------------------------------------------------------


def _retry_for_kind(
    kind: str,
    predicate: Callable[[BaseException], bool],
    max_attempts: int | None,
    initial_delay: float | None,
    *,
    config: ErrorHandlingConfig | RetryConfig | None,
    sleep: Callable[[float], Any] | None,
    stop_event: threading.Event | None,
    on_retry: OnRetry | None,
) -> Callable[[F], F]:
    if config is None:
        config = load_error_handling_config()
    retry_config = config.retry if isinstance(config, ErrorHandlingConfig) else config
    budget: RetryKindConfig = getattr(retry_config, kind)
    return _retry_when(
        tenacity.retry_if_exception(predicate),
        max_attempts=budget.max_attempts if max_attempts is None else max_attempts,
        wait=wait_backoff(
            delay=budget.initial_delay if initial_delay is None else initial_delay,
            backoff=retry_config.default_backoff,
            max_delay=retry_config.max_delay,
        ),
        on_retry=on_retry,
        sleep=sleep,
        stop_event=stop_event,
    )


def _retry_when(
    condition: tenacity.retry_base,
    *,
    max_attempts: int,
    wait: wait_base,
    on_retry: OnRetry | None,
    sleep: Callable[[float], Any] | None,
    stop_event: threading.Event | None,
) -> Callable[[F], F]:
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(max_attempts)
    if stop_event is not None:
        stop = stop | tenacity.stop_when_event_set(stop_event)

    def before_sleep(retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        assert exc is not None  # tenacity sleeps only after a failed attempt here
        wait_seconds = retry_state.upcoming_sleep
        logger.warning(
            "Retrying %s in %.2f seconds (attempt %d/%d failed): %s: %s",
            retry_state.get_fn_name(),
            wait_seconds,
            retry_state.attempt_number,
            max_attempts,
            type(exc).__name__,
            exc,
        )
        if on_retry is not None:
            try:
                on_retry(exc, retry_state.attempt_number, wait_seconds)
            except Exception:
                logger.exception("on_retry callback failed for %s", retry_state.get_fn_name())

    def give_up(retry_state: tenacity.RetryCallState) -> None:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        assert exc is not None  # stop is checked only after a retryable failure
        raise RetryError(
            function=retry_state.get_fn_name(),
            attempts=retry_state.attempt_number,
            last_exception=exc,
        ) from exc

    def decorate(fn: F) -> F:
        is_async = inspect.iscoroutinefunction(fn)
        nap: Callable[[float], Any] | None = sleep
        if nap is None and stop_event is not None and not is_async:
            nap = sleep_using_event(stop_event)
        if nap is not None and is_async and not inspect.iscoroutinefunction(nap):
            nap = _as_coroutine(nap)
        options: dict[str, Any] = {"sleep": nap} if nap is not None else {}
        wrapped = tenacity.retry(
            stop=stop,
            wait=wait,
            retry=condition,
            before_sleep=before_sleep,
            retry_error_callback=give_up,
            **options,
        )(fn)
        return wrapped

    return decorate


def _as_coroutine(fn: Callable[[float], Any]) -> Callable[[float], Awaitable[None]]:
    async def nap(seconds: float) -> None:
        fn(seconds)

    return nap


__all__ = [
    "RetryError",
    "is_transient_database_error",
    "is_transient_network_error",
    "is_transient_resource_error",
    "retry",
    "retry_on_database_error",
    "retry_on_network_error",
    "retry_on_resource_error",
    "sleep_using_event",
    "wait_backoff",
]
