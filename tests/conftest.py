"""Fixtures shared by every test: hygiene checks that fail on leaked threads and children."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psutil
import pytest


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    """Fail a test that leaves a non-daemon or library thread running after it ends."""
    before = set(threading.enumerate())
    yield
    leaked: list[threading.Thread] = []
    for thread in set(threading.enumerate()) - before:
        thread.join(timeout=5)
        if thread.is_alive():
            leaked.append(thread)
    assert not leaked, f"threads leaked by the test: {[t.name for t in leaked]}"


@pytest.fixture(autouse=True)
def _no_child_leaks() -> Iterator[None]:
    """Fail a test that leaves child processes behind (they would outlive the run)."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    leaked = [p for p in me.children(recursive=True) if p.pid not in before]
    if leaked:
        _, alive = psutil.wait_procs(leaked, timeout=5)
        for proc in alive:
            proc.kill()
        assert not alive, f"child processes leaked by the test: {[p.pid for p in alive]}"
