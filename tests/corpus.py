"""Broken inputs an analyst can drop on the share, as data, with the reason each must produce.

Each :class:`BrokenInput` is a set of files (paths relative to the share root) and the
substring its failure reason must contain. ``stage`` says where the problem is found:
``"intake"`` problems are caught before a job is queued (the job ends in jobs/failed/ without
running); ``"run"`` problems are in the CSV's content, which intake does not parse, so the job
passes intake and fails when the data is loaded. The first file of each entry is the *drop*
(the job file or the CSV) whose failure is expected. Valid jobs to mix in are in
``VALID_FILES`` / ``VALID_JOB_IDS``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: A small valid strategy CSV: 6 days x 40 strategies (enough for portfolio sizes up to 40).
GOOD_CSV = "Date," + ",".join(f"S{i}" for i in range(40)) + "\n" + "".join(
    f"2024-01-{day:02d}," + ",".join(str((day * 7 + i * 3) % 11 - 5) for i in range(40)) + "\n"
    for day in range(1, 7))


@dataclass(frozen=True)
class Link:
    """A symbolic link to ``target`` (relative to the share root, or absolute)."""

    target: str


FileContent = str | bytes | dict[str, Any] | list[Any] | Link


@dataclass(frozen=True)
class BrokenInput:
    name: str
    files: dict[str, FileContent]
    reason: str
    stage: str = "intake"

    @property
    def drop(self) -> str:
        """The file whose failure is expected (first in ``files``)."""
        return next(iter(self.files))


def write_files(root: Path, files: dict[str, FileContent]) -> None:
    """Write ``files`` under ``root`` (dicts and lists as JSON, Link as a symlink)."""
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            target = Path(content.target)
            os.symlink(target if target.is_absolute() else root / target, path)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_text(json.dumps(content), encoding="utf-8")


def _job(name: str, reason: str, stage: str = "intake", *, csv: str | None = None,
         **spec: Any) -> BrokenInput:
    """A job file ``jobs/queue/<name>.json`` (job_id = name unless given) plus its CSV."""
    body = {"job_id": name, "input_file": "good.csv", "portfolio_size": 35, **spec}
    files: dict[str, FileContent] = {f"jobs/queue/{name}.json": body}
    files[f"input/{body['input_file']}" if csv is not None else "input/good.csv"] = (
        csv if csv is not None else GOOD_CSV)
    return BrokenInput(name, files, reason, stage)


def _raw(name: str, content: FileContent, reason: str) -> BrokenInput:
    return BrokenInput(name, {f"jobs/queue/{name}.json": content}, reason)


def _csv_run(name: str, csv: str, reason: str, **spec: Any) -> BrokenInput:
    return _job(name, reason, "run", csv=csv, input_file=f"{name}.csv", **spec)


_WIDE = ",".join(f"S{i}" for i in range(3))
BROKEN_INPUTS: list[BrokenInput] = [
    # -- the job file itself -------------------------------------------------------------
    _raw("bad_json", '{"input_file": "good.csv", "portfolio_size": 35,,}', "not valid JSON"),
    _raw("truncated_json", '{"input_file": "good.csv", "portf', "not valid JSON"),
    _raw("not_utf8", b'{"input_file": "\xff\xfe.csv", "portfolio_size": 35}', "not valid JSON"),
    _raw("json_array", [{"input_file": "good.csv"}], "must be a JSON object, got a list"),
    _raw("json_string", "\"good.csv\"", "must be a JSON object, got a str"),
    _raw("empty_object", {}, "'input_file' is missing"),
    _raw("too_big", '{"input_file": "good.csv", "pad": "' + "x" * 1_100_000 + '"}',
         "a job file is a small JSON object"),
    _job("missing_input_file", "'input_file' is missing", input_file=None),
    _job("input_file_number", "'input_file' is missing or empty", input_file=42),
    _job("portfolio_too_small", "'portfolio_size' is 5; allowed: a whole number from 10 to 100",
         portfolio_size=5),
    _job("portfolio_too_big", "'portfolio_size' is 101", portfolio_size=101),
    _job("portfolio_string", "'portfolio_size' is \"35\"", portfolio_size="35"),
    _job("portfolio_bool", "'portfolio_size' is true", portfolio_size=True),
    _job("portfolio_bad_range", "'portfolio_size' is [60, 40]", portfolio_size=[60, 40]),
    _job("portfolio_missing", "'portfolio_size' is null", portfolio_size=None),
    _job("unknown_algorithm", "'algorithms' has unknown XYZ; allowed: GA",
         algorithms=["GA", "XYZ"]),
    _job("algorithms_number", "'algorithms' must be a list", algorithms=5),
    _job("unknown_fitness", "'fitness' \"sharpe_x\" is unknown; allowed:", fitness="sharpe_x"),
    _job("negative_seed", "'seed' -1 must be a whole number", seed=-1),
    _job("float_seed", "'seed' 1.5 must be a whole number", seed=1.5),
    _job("zero_timeout", "'timeout_seconds' 0 must be a number of seconds", timeout_seconds=0),
    _job("string_timeout", "'timeout_seconds' \"fast\" must be", timeout_seconds="fast"),
    _job("bad_priority", "'priority' \"high\" must be a whole number", priority="high"),
    _job("unknown_execution_mode", "'execution_mode' \"gpu\" is unknown; allowed:",
         execution_mode="gpu"),
    _job("bad_job_id_chars", "'job_id' \"my job/1\" is not allowed; use 1-128 letters",
         job_id="my job/1"),
    _job("too_long_job_id", "is not allowed; use 1-128 letters", job_id="a" * 129),
    _job("number_job_id", "'job_id' 123 is not allowed", job_id=123),
    # -- what the job file points at ------------------------------------------------------
    _job("path_traversal", "'input_file' '../x.csv' points outside the input folder",
         input_file="../x.csv"),
    _job("absolute_path", "'input_file' '/etc/passwd' is not a .csv file name",
         input_file="/etc/passwd"),
    _job("windows_traversal", "points outside the input folder",
         input_file="..\\..\\secret.csv"),
    _job("non_csv_input", "'input_file' 'data.xlsx' is not a .csv file name",
         input_file="data.xlsx"),
    _job("missing_csv", "'nowhere.csv' was not found in the share's input folder",
         input_file="nowhere.csv"),
    BrokenInput("symlinked_input", {
        "jobs/queue/symlinked_input.json": {"input_file": "linked.csv", "portfolio_size": 35},
        "input/linked.csv": Link("outside/real.csv"),
        "outside/real.csv": GOOD_CSV,
    }, "'linked.csv' points outside the share's input folder"),
    BrokenInput("symlink_inside_input", {
        "jobs/queue/symlink_inside_input.json": {"input_file": "alias.csv",
                                                 "portfolio_size": 35},
        "input/alias.csv": Link("input/good.csv"),
        "input/good.csv": GOOD_CSV,
    }, "'alias.csv' is a symbolic link"),
    BrokenInput("symlinked_job_file", {
        "jobs/queue/symlinked_job_file.json": Link("outside/job.json"),
        "outside/job.json": {"input_file": "good.csv", "portfolio_size": 35},
        "input/good.csv": GOOD_CSV,
    }, "is a symbolic link; a job file must be a regular file"),
    BrokenInput("empty_csv_input", {
        "jobs/queue/empty_csv_input.json": {"input_file": "empty.csv", "portfolio_size": 35},
        "input/empty.csv": "",
    }, "'empty.csv' is empty (0 bytes)"),
    BrokenInput("id_already_completed", {
        "jobs/queue/id_already_completed.json": {"job_id": "done_before",
                                                 "input_file": "good.csv", "portfolio_size": 35},
        "jobs/completed/done_before.json": {"job_id": "done_before", "status": "completed"},
        "input/good.csv": GOOD_CSV,
    }, "job id 'done_before' already completed on"),
    BrokenInput("id_already_failed", {
        "jobs/queue/id_already_failed.json": {"job_id": "failed_before",
                                              "input_file": "good.csv", "portfolio_size": 35},
        "jobs/failed/failed_before.json": {"job_id": "failed_before", "status": "failed"},
        "input/good.csv": GOOD_CSV,
    }, "`heavy-optimizer retry failed_before` to run it again"),
    # -- CSV drops (auto_jobs_from_csv): the header is checked before a job is made --------
    BrokenInput("drop_no_date", {"input/drop_no_date.csv": "Day,S1,S2\n1,2,3\n"},
                "must be a header with a 'Date' column"),
    BrokenInput("drop_date_only", {"input/drop_date_only.csv": "Date\n2024-01-01\n"},
                "found 1 column(s): 'Date'"),
    BrokenInput("drop_symlink", {"input/drop_symlink.csv": Link("outside/drop.csv"),
                                 "outside/drop.csv": GOOD_CSV},
                "input/drop_symlink.csv is a symbolic link; links are not followed"),
    BrokenInput("drop_not_utf8", {"input/drop_not_utf8.csv": b"Date,\xff\xfeS1\n1,2\n"},
                "the first line is not UTF-8 text"),
    # -- CSV content: found only when the job runs and loads the data ----------------------
    _csv_run("csv_blank", "\n\n", "file is empty"),
    _csv_run("csv_non_numeric", f"Date,{_WIDE}\n2024-01-01,1,x,3\n2024-01-02,1,2,3\n",
             "non-numeric value 'x'", portfolio_size=10),
    _csv_run("csv_too_few_strategies", f"Date,{_WIDE}\n2024-01-01,1,2,3\n2024-01-02,1,2,3\n",
             "portfolio size 35 exceeds the 3 strategy columns"),
    _csv_run("csv_duplicate_columns", "Date,S1,S1\n2024-01-01,1,2\n2024-01-02,1,2\n",
             "duplicate column name"),
    _csv_run("csv_no_date", "Day,S1,S2\n1,1,2\n2,1,2\n", "no Date column"),
    _csv_run("csv_one_row", f"Date,{_WIDE}\n2024-01-01,1,2,3\n", "at least 2 needed"),
    _csv_run("csv_unsorted_dates", f"Date,{_WIDE}\n2024-01-02,1,2,3\n2024-01-01,1,2,3\n",
             "dates not sorted"),
]

#: Valid jobs to drop among the broken ones; each must stay queued and come out ready.
VALID_FILES: dict[str, FileContent] = {
    "input/good.csv": GOOD_CSV,
    "jobs/queue/valid_plain.json": {"job_id": "valid_plain", "input_file": "good.csv",
                                    "portfolio_size": 35},
    "jobs/queue/valid_launcher.json": {
        "job_id": "valid_launcher", "input_file": "Z:\\input\\good.csv", "portfolio_size": 20,
        "job_type": "complete_optimization", "timestamp": "2025-07-30 15:45:00",
        "client_info": {"computer_name": "DESKTOP-X", "username": "analyst"},
        "execution_mode": "server_side_heavydb", "input_format": "csv_only"},
    "jobs/queue/valid_no_id.json": {"input_file": "good.csv", "portfolio_size": [10, 12],
                                    "algorithms": ["ga", "SA"], "seed": 7, "priority": 2},
}
VALID_JOB_IDS = ("valid_plain", "valid_launcher", "valid_no_id")
