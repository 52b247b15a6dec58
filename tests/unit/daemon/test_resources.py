"""ResourceGate decisions and logging, and the RSS of a real process tree."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from daemon.resources import (
    ResourceGate,
    ResourceSample,
    process_tree_rss_mb,
    psutil_probe,
)

pytestmark = pytest.mark.timeout(30)

#: The allocating grandchild fills its pages (b"\x01" * n), so they are resident, not lazy.
ALLOCATE_MB = 200
GRANDCHILD = (
    "import sys\n"
    f"block = b'\\x01' * ({ALLOCATE_MB} * 2**20)\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read()\n"
)
#: The child only starts the grandchild and waits for it: a tree of two processes.
CHILD = (
    "import subprocess, sys\n"
    f"sys.exit(subprocess.call([sys.executable, '-c', {GRANDCHILD!r}]))\n"
)


class Probe:
    """A probe whose readings the test sets."""

    def __init__(self, memory: float = 10.0, cpu: float = 10.0, disk: float | None = 10.0) -> None:
        self.sample = ResourceSample(memory, cpu, disk, "" if disk is not None else "gone")
        self.calls = 0

    def set(self, memory: float = 10.0, cpu: float = 10.0, disk: float | None = 10.0) -> None:
        self.sample = ResourceSample(memory, cpu, disk, "" if disk is not None else "gone")

    def __call__(self) -> ResourceSample:
        self.calls += 1
        return self.sample


def _gate(probe: Probe, *, enabled: bool = True) -> ResourceGate:
    return ResourceGate(
        enabled=enabled, memory_threshold=90.0, cpu_threshold=95.0, disk_threshold=80.0,
        disk_path="/srv/share", probe=probe,
    )  # fmt: skip


def test_under_every_threshold_jobs_may_start() -> None:
    assert _gate(Probe(memory=90.0, cpu=95.0, disk=80.0)).check() is None


@pytest.mark.parametrize(
    ("reading", "expected"),
    [
        ({"memory": 93.25}, "memory 93.2% > 90%"),
        ({"cpu": 99.0}, "CPU 99.0% > 95%"),
        ({"disk": 85.0}, "disk /srv/share 85.0% > 80%"),
        ({"disk": None}, "disk usage of /srv/share unknown (gone)"),
    ],
)
def test_each_threshold_gives_a_reason(reading: dict[str, float | None], expected: str) -> None:
    probe = Probe()
    probe.set(**reading)  # type: ignore[arg-type]
    assert _gate(probe).check() == expected


def test_several_reasons_are_joined() -> None:
    reason = _gate(Probe(memory=95.0, cpu=99.0)).check()
    assert reason == "memory 95.0% > 90%; CPU 99.0% > 95%"


def test_disabled_gate_never_probes() -> None:
    probe = Probe(memory=99.0)
    gate = _gate(probe, enabled=False)
    assert gate.check() is None
    assert not gate.should_wait(0.0)
    assert probe.calls == 0


def test_should_wait_logs_start_and_end_once(caplog: pytest.LogCaptureFixture) -> None:
    # Given a gate whose machine is short of memory for three ticks, then recovers
    probe = Probe(memory=95.0)
    gate = _gate(probe)
    with caplog.at_level(logging.INFO, logger="daemon.resources"):
        # When the supervisor ticks five times
        decisions = [gate.should_wait(float(t)) for t in range(3)]
        reason_while_waiting = gate.waiting_reason
        probe.set(memory=50.0)
        decisions += [gate.should_wait(3.0), gate.should_wait(4.0)]
    # Then jobs waited three ticks, and only the two transitions were logged
    assert decisions == [True, True, True, False, False]
    assert reason_while_waiting == "memory 95.0% > 90%"
    assert gate.waiting_reason is None
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "New jobs wait for resources: memory 95.0% > 90%",
        "Resources available again after 3 s; starting jobs",
    ]


def test_real_probe_reads_this_machine(tmp_path: Path) -> None:
    sample = psutil_probe(tmp_path)()
    assert 0.0 < sample.memory_percent <= 100.0
    assert 0.0 <= sample.cpu_percent <= 100.0
    assert sample.disk_percent is not None and 0.0 <= sample.disk_percent <= 100.0


def test_real_probe_reports_a_missing_disk_path(tmp_path: Path) -> None:
    sample = psutil_probe(tmp_path / "not-mounted")()
    assert sample.disk_percent is None
    assert "FileNotFoundError" in sample.disk_error


@pytest.fixture
def allocating_tree() -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A child whose own child holds ALLOCATE_MB resident; yields (child, grandchild pid)."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        (grandchild,) = psutil.Process(child.pid).children()
        yield child, grandchild.pid
    finally:
        tree = [psutil.Process(child.pid), *psutil.Process(child.pid).children(recursive=True)]
        for process in tree:
            process.kill()
        psutil.wait_procs(tree, timeout=10)
        child.communicate(timeout=10)


def test_process_tree_rss_counts_children(
    allocating_tree: tuple[subprocess.Popen[str], int],
) -> None:
    # Given a child whose grandchild holds 200 MiB
    child, grandchild_pid = allocating_tree
    # When the tree's memory is measured from the child
    tree_mb = process_tree_rss_mb(child.pid)
    # Then the grandchild's memory is included
    assert tree_mb >= 150.0
    assert process_tree_rss_mb(grandchild_pid) >= 150.0
    assert tree_mb > process_tree_rss_mb(grandchild_pid)


def test_process_tree_rss_of_a_gone_process_is_zero() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=20)
    assert process_tree_rss_mb(process.pid) == 0.0
