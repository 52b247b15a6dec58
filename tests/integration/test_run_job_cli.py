"""``heavy-optimizer run-job`` as a user runs it: a real process, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.daemon_harness import make_config_dir, wait_for
from tests.paths import SAMPLES_DIR

pytestmark = pytest.mark.timeout(120)


def _run_job(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", "run-job", *args],
                          capture_output=True, text=True, cwd=cwd, timeout=100)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return make_config_dir(tmp_path / "cfg")


def test_missing_input_exits_2_with_one_line_naming_the_path(tmp_path: Path) -> None:
    result = _run_job("--input", str(tmp_path / "nope.csv"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"heavy-optimizer run-job: input file not found: {tmp_path / 'nope.csv'}"]


@pytest.mark.parametrize(("content", "args", "expected"), [
    ("", (), "empty"),
    ("Date,Day\n2024-01-04,Thursday\n2024-01-11,Thursday\n", (), "strategy"),
    ("Date,S1,S2\n2024-01-04,1,2\n2024-01-11,abc,3\n", (), "'abc'"),
    ("Date,S1,S1\n2024-01-04,1,2\n2024-01-11,2,3\n", (), "duplicate"),
    ("Date,S1,S2\n2024-01-04,1,2\n2024-01-11,2,3\n", ("--portfolio-size", "10"),
     "exceeds the 2 strategy columns"),
    ("Date,S1,S2\n2024-01-04,1,2\n", (), "row"),
    (None, ("--portfolio-size", "5"), "--portfolio-size"),
    (None, ("--algorithms", "GA,XX"), "XX"),
    (None, ("--fitness", "luck"), "luck"),
])
def test_bad_input_is_one_clear_line_and_nonzero(
    tmp_path: Path, config: Path, content: str | None, args: tuple[str, ...], expected: str
) -> None:
    csv = tmp_path / "input.csv"
    if content is None:
        shutil.copy(SAMPLES_DIR / "sensex_82x500.csv", csv)
    else:
        csv.write_text(content)
    result = _run_job("--input", str(csv), "--config-dir", str(config), *args, cwd=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected.lower() in lines[0].lower()
    assert "Traceback" not in result.stderr


def test_job_runs_and_resumes_after_sigkill(tmp_path: Path) -> None:
    config = make_config_dir(tmp_path / "cfg", optimizer={"optimizer": {
        "budget": {"max_evaluations": 40000}}})
    args = ("--input", str(SAMPLES_DIR / "sensex_82x500.csv"), "--portfolio-size", "10",
            "--algorithms", "GA,SA,RS", "--seed", "5", "--config-dir", str(config), "--quiet")
    plain = _run_job(*args, "--job-id", "plain", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.startswith("best: ")
    # When a second run is killed -9 inside its SA stage and then resumed
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run-job", *args, "--job-id",
                             "killed"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metadata = tmp_path / "heavy_optimizer_runs" / "checkpoints" / "killed" / "metadata.json"
    try:
        wait_for(lambda: metadata.is_file() and "algorithm-SA-k10-partial" in metadata.read_text(),
                 timeout=60, interval=0.01, message="a checkpoint inside SA")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    resumed = _run_job(*args, "--job-id", "killed", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    # Then the resumed run found exactly what the uninterrupted one did
    out = tmp_path / "heavy_optimizer_runs" / "output"
    first = json.loads((out / "plain" / "summary.json").read_text())
    second = json.loads((out / "killed" / "summary.json").read_text())
    assert second["best"]["column_indices"] == first["best"]["column_indices"]
    assert [r["best_indices"] for r in second["algorithms"]] == \
        [r["best_indices"] for r in first["algorithms"]]
