"""Job specs from the share: parse, validate, and say exactly what is wrong.

A job file comes from an analyst's machine, so every field is untrusted. Validation collects
every problem at once and names each field, what it held and what is allowed, so an analyst
can fix the file in one go. Unknown fields are kept (old launchers write extra ones) and
passed through to the result record untouched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from daemon.error_handling.errors import JobSpecError
from daemon.workflow.algorithms import ALGORITHMS
from daemon.workflow.backends.heavydb_sql import query_problem, table_name_problem
from daemon.workflow.fitness import FITNESS_METRICS

#: What a job id may contain: it becomes a file and folder name on the share, so no leading
#: dot ("." and ".." would name the share's own folders; dot-names are hidden temp files).
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
#: Smallest and largest portfolio an analyst may ask for.
MIN_PORTFOLIO_SIZE, MAX_PORTFOLIO_SIZE = 10, 100
#: A `_ps<N>` suffix in a dropped CSV's stem sets its portfolio size.
CSV_SIZE_SUFFIX = re.compile(r"_ps(\d+)$", re.IGNORECASE)
#: Execution modes today's Windows launchers write.
EXECUTION_MODES = ("server_side", "server_side_heavydb", "local", "numpy")


class JobStatus(str, Enum):
    """Where a job is in its lifecycle (DESIGN.md section 5)."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class JobSpec:
    """A validated job: what to optimise and how.

    The input is ``input_file`` (a CSV in input/) or, for sites with HeavyDB, ``input_table``
    / ``input_query``; ``input_file`` is then empty.
    """

    job_id: str
    input_file: str
    portfolio_sizes: tuple[int, ...]
    algorithms: tuple[str, ...] | None = None
    fitness: str | None = None
    seed: int | None = None
    timeout_seconds: float | None = None
    priority: int = 0
    execution_mode: str | None = None
    input_table: str | None = None
    input_query: str | None = None
    #: The file as the client wrote it (unknown fields included), echoed in result records.
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


def sanitize_job_id(text: str) -> str:
    """Turn a file stem into a valid job id (replacing anything outside the allowed set)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", text).strip(".")[:128]
    return cleaned or "job"


def portfolio_size_from_csv_name(stem: str) -> int | None:
    """The N of a `_ps<N>` suffix, or None."""
    match = CSV_SIZE_SUFFIX.search(stem)
    return int(match.group(1)) if match else None


def parse_job_json(text: str | bytes, *, source: str) -> dict[str, Any]:
    """Parse a job file's bytes into a JSON object.

    Raises:
        JobSpecError: Not JSON or not an object; the message says where.
    """
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(
            exc, json.JSONDecodeError) else ""
        raise JobSpecError(
            f"{source}: not valid JSON{where}: {getattr(exc, 'msg', exc)}. "
            "A job file must be one JSON object such as "
            '{"input_file": "data.csv", "portfolio_size": 35}',
            context={"file": source},
        ) from exc
    if not isinstance(value, dict):
        raise JobSpecError(
            f"{source}: a job file must be a JSON object, got a {type(value).__name__}",
            context={"file": source},
        )
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _portfolio_sizes(value: Any, problems: list[str]) -> tuple[int, ...]:
    allowed = (f"a whole number from {MIN_PORTFOLIO_SIZE} to {MAX_PORTFOLIO_SIZE}, "
               "or [min, max] to try every size in that range")
    if _is_int(value) and MIN_PORTFOLIO_SIZE <= value <= MAX_PORTFOLIO_SIZE:
        return (value,)
    if (isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value)
            and MIN_PORTFOLIO_SIZE <= value[0] <= value[1] <= MAX_PORTFOLIO_SIZE):
        return tuple(range(value[0], value[1] + 1))
    problems.append(f"'portfolio_size' is {json.dumps(value)}; allowed: {allowed}")
    return ()


def _input_file(value: Any, problems: list[str]) -> str:
    if not isinstance(value, str) or not value.strip():
        problems.append("'input_file' is missing or empty; give the name of a CSV file in the "
                        "share's input folder, e.g. \"strategies.csv\"")
        return ""
    # Windows launchers may send "Z:\\input\\x.csv" or "input/x.csv": keep only a plain name.
    name = PureWindowsPath(value).name if "\\" in value else PurePosixPath(value).name
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if ".." in parts or name in ("", ".", ".."):
        problems.append(f"'input_file' {value!r} points outside the input folder; give a plain "
                        "file name inside input/")
        return ""
    if not name.lower().endswith(".csv"):
        problems.append(f"'input_file' {value!r} is not a .csv file name")
    return name


def _server_input(raw: dict[str, Any], problems: list[str]) -> tuple[str | None, str | None]:
    """``input_table`` / ``input_query`` (HeavyDB sites), checked; at most one of the inputs."""
    table, query = raw.get("input_table"), raw.get("input_query")
    given = [key for key in ("input_file", "input_table", "input_query") if raw.get(key)]
    if len(given) > 1:
        problems.append(f"give only one of {', '.join(repr(k) for k in given)}: a CSV file, "
                        "a HeavyDB table or a read-only HeavyDB query")
        return None, None
    if table is not None:
        problem = table_name_problem(table)
        if problem:
            problems.append(problem)
    if query is not None:
        problem = query_problem(query)
        if problem:
            problems.append(problem)
    return table, query


def _algorithms(value: Any, problems: list[str]) -> tuple[str, ...] | None:
    if value is None:
        return None
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        problems.append("'algorithms' must be a list of names like [\"GA\", \"SA\"]")
        return None
    chosen = tuple(dict.fromkeys(n.strip().upper() for n in names))
    unknown = [n for n in chosen if n not in ALGORITHMS]
    if unknown:
        problems.append(f"'algorithms' has unknown {', '.join(unknown)}; allowed: "
                        f"{', '.join(ALGORITHMS)}")
    return chosen


def validate_job_spec(raw: dict[str, Any], *, source: str, default_job_id: str) -> JobSpec:
    """Check every field of a job file; collect all problems into one error.

    Args:
        raw: The parsed JSON object.
        source: The file name, used in messages.
        default_job_id: The id to use when the file has none (its stem, sanitised).

    Raises:
        JobSpecError: One or more fields are invalid; the message lists each.
    """
    problems: list[str] = []
    job_id = raw.get("job_id", default_job_id)
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        problems.append(f"'job_id' {json.dumps(job_id)} is not allowed; use 1-128 letters, "
                        "digits, '.', '_' or '-'")
        job_id = default_job_id
    input_table, input_query = _server_input(raw, problems)
    input_file = ("" if input_table is not None or input_query is not None
                  else _input_file(raw.get("input_file"), problems))
    sizes = _portfolio_sizes(raw.get("portfolio_size"), problems)
    algorithms = _algorithms(raw.get("algorithms"), problems)
    fitness = raw.get("fitness")
    if fitness is not None and fitness not in FITNESS_METRICS:
        problems.append(f"'fitness' {json.dumps(fitness)} is unknown; allowed: "
                        f"{', '.join(FITNESS_METRICS)}")
    seed = raw.get("seed")
    if seed is not None and not (_is_int(seed) and 0 <= seed < 2**63):
        problems.append(f"'seed' {json.dumps(seed)} must be a whole number ≥ 0")
    timeout = raw.get("timeout_seconds")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not 0 < timeout <= 86_400):
        problems.append(f"'timeout_seconds' {json.dumps(timeout)} must be a number of seconds "
                        "between 0 and 86400")
    priority = raw.get("priority", 0)
    if not _is_int(priority):
        problems.append(f"'priority' {json.dumps(priority)} must be a whole number "
                        "(higher runs first)")
        priority = 0
    mode = raw.get("execution_mode")
    if mode is not None and mode not in EXECUTION_MODES:
        problems.append(f"'execution_mode' {json.dumps(mode)} is unknown; allowed: "
                        f"{', '.join(EXECUTION_MODES)}")
    if problems:
        raise JobSpecError(
            f"{source}: invalid job: " + "; ".join(problems),
            context={"file": source, "job_id": job_id, "problems": len(problems)},
        )
    return JobSpec(
        job_id=job_id,
        input_file=input_file,
        portfolio_sizes=sizes,
        algorithms=algorithms,
        fitness=fitness,
        seed=seed,
        timeout_seconds=float(timeout) if timeout is not None else None,
        priority=priority,
        execution_mode=mode,
        input_table=input_table,
        input_query=input_query,
        raw=dict(raw),
    )
