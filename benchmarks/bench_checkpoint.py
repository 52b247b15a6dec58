"""Benchmark: CheckpointManager save/load against pickle (protocol 5) of the same state.

The production-sized state is a float64 array of 82 x 25,544 (a year of daily returns of
every strategy) plus a small dict. Both sides write with the same durability: our save is
temp file + fsync + rename + folder fsync + metadata; the pickle baseline is write + flush +
fsync of one file ("pickle") and, for reference, the same atomic sequence as ours ("pickle
atomic"). Our load verifies a sha256; "pickle + sha256" adds that check to pickle.load.
Runs alternate between ours and the baseline so background load hits both alike, and each
figure is the median of ``--repeat`` runs. Run on a real disk (the default folder is made
inside the repository), not tmpfs, or fsync costs nothing.

Usage: python benchmarks/bench_checkpoint.py [--repeat N] [--dir FOLDER]
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daemon.error_handling.checkpoint import CheckpointManager  # noqa: E402
from daemon.error_handling.config import CheckpointConfig  # noqa: E402

ROWS, COLUMNS = 82, 25_544


def make_states() -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(42)
    returns = rng.standard_normal((ROWS, COLUMNS))
    small = {
        "algorithm": "GA",
        "generation": 120,
        "best_fitness": 1.8734,
        "seed": 42,
        "best_portfolio": rng.choice(COLUMNS, 35, replace=False).tolist(),
    }
    labels = [f"SYM{i:05d}" for i in range(COLUMNS)]
    frame = pd.DataFrame(returns, columns=pd.Index(labels, dtype="str"))
    return {
        "array 82x25544 + dict": {"returns": returns, "meta": small},
        "DataFrame 82x25544 + dict": {"returns": frame, "meta": small},
    }


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pickle_save(state: dict[str, Any], path: Path) -> None:
    with open(path, "wb") as file:
        pickle.dump(state, file, protocol=5)
        file.flush()
        os.fsync(file.fileno())


def pickle_save_atomic(state: dict[str, Any], path: Path) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    pickle_save(state, temp)
    os.replace(temp, path)
    fsync_folder(path.parent)


def pickle_load(path: Path) -> Any:
    with open(path, "rb") as file:
        return pickle.load(file)  # the benchmark's own file, written just above


def pickle_load_verified(path: Path) -> Any:
    with open(path, "rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
        file.seek(0)
        state = pickle.load(file)
    assert digest
    return state


def timed_pair(
    ours: Callable[[int], Any], baseline: Callable[[int], Any], repeat: int
) -> tuple[float, float]:
    """Median milliseconds of ``ours`` and ``baseline``, run alternately."""
    ours_ms: list[float] = []
    base_ms: list[float] = []
    for i in range(repeat):
        for fn, sink in ((ours, ours_ms), (baseline, base_ms)):
            start = time.perf_counter()
            fn(i)
            sink.append((time.perf_counter() - start) * 1000)
    return statistics.median(ours_ms), statistics.median(base_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs per figure (median)")
    parser.add_argument("--dir", type=Path, default=REPO, help="folder on the disk to test")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix=".bench_checkpoint_", dir=args.dir))
    try:
        run(work, args.repeat)
    finally:
        shutil.rmtree(work)


def bench_state(
    label: str, state: dict[str, Any], manager: CheckpointManager, pkl: Path, repeat: int
) -> list[tuple[str, float, float, str]]:
    """Rows of the table for one state: save and load against each baseline."""
    names = (f"gen_{i:06d}" for i in itertools.count())
    # Fill the job up to max_checkpoints_per_job: a long job saves at capacity, where each
    # save retires the oldest checkpoint.
    for _ in range(manager.config.max_checkpoints_per_job):
        manager.save_checkpoint(state, next(names))
    pickle_save(state, pkl)

    def ours_save(_: int) -> None:
        manager.save_checkpoint(state, next(names))

    def ours_load(_: int) -> None:
        manager.load_checkpoint()

    def pickle_save_plain(_: int) -> None:
        pickle_save(state, pkl)

    def pickle_save_replace(_: int) -> None:
        pickle_save_atomic(state, pkl)

    def pickle_load_plain(_: int) -> None:
        pickle_load(pkl)

    def pickle_load_checked(_: int) -> None:
        pickle_load_verified(pkl)

    return [
        (f"save, {label}", *timed_pair(ours_save, pickle_save_plain, repeat), "pickle"),
        (f"save, {label}", *timed_pair(ours_save, pickle_save_replace, repeat), "pickle atomic"),
        (f"load, {label}", *timed_pair(ours_load, pickle_load_plain, repeat), "pickle"),
        (f"load, {label}", *timed_pair(ours_load, pickle_load_checked, repeat), "pickle + sha256"),
    ]


def run(work: Path, repeat: int) -> None:
    config = CheckpointConfig(base_directory=str(work), max_checkpoints_per_job=3)
    rows = []
    sizes = []
    for number, (label, state) in enumerate(make_states().items()):
        manager = CheckpointManager(f"bench_{number}", work, config=config)
        pkl = work / f"bench_{number}.pkl"
        rows += bench_state(label, state, manager, pkl, repeat)
        latest = manager.get_latest_checkpoint()
        assert latest is not None
        sizes.append((label, latest.size_bytes, pkl.stat().st_size))

    print(f"folder: {work.parent} | repeat: {repeat} | median ms")
    print(f"{'operation':<34} | {'ours (ms)':>9} | {'baseline':<15} | {'base (ms)':>9} | ratio")
    print("-" * 86)
    for operation, ours_ms, base_ms, baseline in rows:
        print(
            f"{operation:<34} | {ours_ms:9.1f} | {baseline:<15} | {base_ms:9.1f} | "
            f"{ours_ms / base_ms:5.2f}"
        )
    print()
    print(f"{'state':<34} | {'ours (bytes)':>12} | {'pickle (bytes)':>14}")
    for label, ours_bytes, pickle_bytes in sizes:
        print(f"{label:<34} | {ours_bytes:>12,} | {pickle_bytes:>14,}")


if __name__ == "__main__":
    main()
