"""Fixtures shared by the error-handling library's unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from daemon.error_handling.context_logger import clear_context


@pytest.fixture(autouse=True)
def _empty_context() -> Iterator[None]:
    """The main thread's logging context outlives a test; start and end each one empty."""
    clear_context()
    yield
    clear_context()
