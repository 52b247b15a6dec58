"""Admission by machine resources, and the memory a job's process tree uses.

A new job starts only while memory, CPU and disk are under the ``resource_monitoring``
thresholds (DESIGN 5): starting a job on a machine that is already swapping or a share that
is nearly full turns one slow job into several failed ones. Running jobs are never touched
here; the gate only delays the next start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import psutil

logger = logging.getLogger(__name__)

#: Bytes per mebibyte, for the ``_mb`` values (psutil reports bytes).
BYTES_PER_MB = 2**20


@dataclass(frozen=True)
class ResourceSample:
    """One reading of the machine, each as a percentage in [0, 100].

    ``disk_percent`` is ``None`` when the disk could not be read (say, the share is not
    mounted), which the gate treats as a reason to wait.
    """

    memory_percent: float
    cpu_percent: float
    disk_percent: float | None
    disk_error: str = ""


#: A callable returning the current :class:`ResourceSample` (injectable for tests).
ResourceProbe = Callable[[], ResourceSample]


def psutil_probe(disk_path: str | os.PathLike[str]) -> ResourceProbe:
    """The real probe: system memory, CPU since the previous call, disk usage of ``disk_path``.

    ``psutil.cpu_percent(interval=None)`` never blocks; it reports the average since its
    previous call, and its very first call has nothing to compare with and returns 0.0. So
    this primes it once here, and the first real reading covers the time since construction.
    """
    psutil.cpu_percent(interval=None)
    path = os.fspath(disk_path)

    def probe() -> ResourceSample:
        memory = psutil.virtual_memory().percent
        cpu = psutil.cpu_percent(interval=None)
        try:
            return ResourceSample(memory, cpu, psutil.disk_usage(path).percent)
        except OSError as exc:
            return ResourceSample(memory, cpu, None, f"{type(exc).__name__}: {exc}")

    return probe


class ResourceGate:
    """Says whether new jobs must wait for resources, and logs only the changes.

    Args:
        enabled: ``resource_monitoring.enabled``; when false nothing is probed and jobs
            never wait.
        memory_threshold: Used memory percentage above which new jobs wait.
        cpu_threshold: CPU percentage above which new jobs wait.
        disk_threshold: Used percentage of ``disk_path``'s file system above which jobs wait.
        disk_path: Where jobs write (the share root).
        probe: Source of readings; the psutil probe of ``disk_path`` when omitted.
    """

    def __init__(
        self,
        *,
        enabled: bool,
        memory_threshold: float,
        cpu_threshold: float,
        disk_threshold: float,
        disk_path: str | os.PathLike[str],
        probe: ResourceProbe | None = None,
    ) -> None:
        self.enabled = enabled
        self.memory_threshold = memory_threshold
        self.cpu_threshold = cpu_threshold
        self.disk_threshold = disk_threshold
        self.disk_path = os.fspath(disk_path)
        if probe is None and enabled:
            probe = psutil_probe(disk_path)
        self._probe = probe
        self._waiting_since: float | None = None
        self._waiting_reason: str | None = None

    @property
    def waiting_reason(self) -> str | None:
        """Why jobs wait as of the last :meth:`should_wait`; ``None`` when they do not."""
        return self._waiting_reason

    def check(self) -> str | None:
        """Probe now.

        Returns:
            A human-readable reason new jobs must wait, or ``None`` when they may start.
        """
        if not self.enabled or self._probe is None:
            return None
        sample = self._probe()
        reasons: list[str] = []
        if sample.memory_percent > self.memory_threshold:
            reasons.append(
                f"memory {sample.memory_percent:.1f}% > {self.memory_threshold:g}%"
            )
        if sample.cpu_percent > self.cpu_threshold:
            reasons.append(f"CPU {sample.cpu_percent:.1f}% > {self.cpu_threshold:g}%")
        if sample.disk_percent is None:
            reasons.append(f"disk usage of {self.disk_path} unknown ({sample.disk_error})")
        elif sample.disk_percent > self.disk_threshold:
            reasons.append(
                f"disk {self.disk_path} {sample.disk_percent:.1f}% > {self.disk_threshold:g}%"
            )
        return "; ".join(reasons) or None

    def should_wait(self, now: float) -> bool:
        """Probe and decide; log once when a wait starts and once when it ends.

        Args:
            now: Monotonic time of the supervisor's tick (for the wait's duration).

        Returns:
            Whether new jobs must wait.
        """
        reason = self.check()
        if reason is not None and self._waiting_since is None:
            logger.warning("New jobs wait for resources: %s", reason)
            self._waiting_since = now
        elif reason is None and self._waiting_since is not None:
            logger.info(
                "Resources available again after %.0f s; starting jobs",
                now - self._waiting_since,
            )
            self._waiting_since = None
        self._waiting_reason = reason
        return reason is not None


def process_tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB.

    Processes that exit, turn zombie or deny access while being read count as 0: the tree
    changes while we walk it, and a job's memory check must never crash the supervisor.

    Args:
        pid: The root process (a job's child process).

    Returns:
        The summed RSS; 0.0 when the root process is gone.
    """
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total / BYTES_PER_MB


__all__ = [
    "BYTES_PER_MB",
    "ResourceGate",
    "ResourceProbe",
    "ResourceSample",
    "process_tree_rss_mb",
    "psutil_probe",
]
