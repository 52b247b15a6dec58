"""Alerts: the JSON record the notifier groups, queues, renders and keeps in its outbox.

An alert is built once, on the caller's thread, from an exception or a message. After that it
is plain JSON data, so it can wait in the outbox across a restart and be rendered for any
channel without the original exception object. Its fingerprint identifies "the same failure"
for grouping, so the volatile parts of a message (numbers, ids, paths, times) are normalised
out before hashing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .config import Severity
from .errors import HeavyOptimizerError
from .settings import build_dataclass

#: Severity names ordered by urgency; larger ranks are more urgent.
SEVERITY_RANK: dict[str, int] = {"INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
#: Titles are one line; longer error messages stay in the body.
MAX_TITLE_CHARS = 150
#: Context values are truncated so one huge value cannot bloat every channel and the outbox.
MAX_CONTEXT_VALUE_CHARS = 1000
#: Stack traces keep their innermost end (where the error happened) when truncated.
MAX_STACK_TRACE_CHARS = 20_000
#: Context keys whose values never leave the process in an alert.
SECRET_KEY_PATTERN = re.compile(r"pass(word|wd)?|secret|token|webhook|api_?key|credential", re.I)

#: Volatile parts of messages, replaced in this order (uuids before hex ids before numbers).
_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}\b", re.I), "<uuid>"),
    (
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?"
            r"(?:Z|[+-]\d{2}:?\d{2})?)?\b"
        ),
        "<time>",
    ),
    (re.compile(r"\b\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\b"), "<time>"),
    (
        re.compile(
            r"(?:[A-Za-z]:\\|\\\\)[^\s'\"]+"  # C:\dir\file, \\server\share\file
            r"|(?<![\w.])/[\w.@+-]+(?:/[\w.@+-]*)*"  # /abs/path
            r"|\b[\w.-]+(?:/[\w.-]+)+\.\w+\b"  # rel/path/file.ext
        ),
        "<path>",
    ),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{8,}\b", re.I), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"\s+"), " "),
)


def severity_rank(severity: str) -> int:
    """Return the rank of a severity name.

    Raises:
        ValueError: ``severity`` is not CRITICAL, ERROR, WARNING or INFO.
    """
    try:
        return SEVERITY_RANK[severity]
    except KeyError:
        raise ValueError(
            f"unknown severity {severity!r}; use one of {', '.join(SEVERITY_RANK)}"
        ) from None


def normalise_message(text: str) -> str:
    """Replace the parts of a message that differ between repeats of one failure."""
    for pattern, replacement in _NORMALISERS:
        text = pattern.sub(replacement, text)
    return text.strip()


def fingerprint(kind: str, stage: str | None, message: str) -> str:
    """Identify a failure by its kind, stage and normalised message (16 hex digits)."""
    key = "\x1f".join((kind, stage or "", normalise_message(message)))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Alert:
    """One notification, as queued, stored in the outbox and rendered per channel."""

    alert_id: str
    created_at: float
    severity: Severity
    title: str
    message: str
    source: str
    host: str
    fingerprint: str
    job_id: str | None = None
    stage: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    location: str | None = None
    stack_trace: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    #: Duplicates of this alert that were grouped (not sent) before it.
    repeated: int = 0

    @property
    def subject(self) -> str:
        """One-line headline: ``[CRITICAL] heavy-optimizer: <title> (job <id>)``.

        Grouped duplicates add ``(repeated N times)``.
        """
        job = f" (job {self.job_id})" if self.job_id else ""
        repeated = f" (repeated {self.repeated} times)" if self.repeated else ""
        return f"[{self.severity}] {self.source}: {self.title}{job}{repeated}"

    @property
    def time_text(self) -> str:
        """Creation time in ISO 8601, UTC."""
        return datetime.fromtimestamp(self.created_at, tz=UTC).isoformat(timespec="seconds")

    @property
    def location_text(self) -> str:
        """Where it happened: ``host / stage / file:line in function``."""
        return " / ".join(part for part in (self.host, self.stage, self.location) if part)

    @property
    def repeated_text(self) -> str:
        """Sentence about grouped duplicates, or "" when there were none."""
        if not self.repeated:
            return ""
        return (
            f"This alert repeated {self.repeated} times since it was last sent "
            "(duplicates are grouped, not re-sent)."
        )

    def fields(self) -> list[tuple[str, str]]:
        """Labelled facts shown by every channel, in display order."""
        error = self.error_type or ""
        if self.error_code:
            error = f"{error} ({self.error_code})" if error else self.error_code
        rows = [
            ("Severity", self.severity),
            ("Job ID", self.job_id or ""),
            ("Time", self.time_text),
            ("Location", self.location_text),
            ("Error", error),
            ("Repeated", f"{self.repeated} times" if self.repeated else ""),
        ]
        return [(label, value) for label, value in rows if value]

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form kept in the outbox."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> Alert:
        """Rebuild an alert from its JSON form, checking every field's type.

        Raises:
            ConfigurationError: A field is missing or has the wrong type (names ``source``).
        """
        return build_dataclass(cls, data, source=source)

    def summary(self, *, repeated: int, now: float) -> Alert:
        """A new alert like this one that reports ``repeated`` grouped duplicates."""
        return dataclasses.replace(
            self,
            alert_id=new_alert_id(),
            created_at=now,
            repeated=repeated,
        )


def new_alert_id() -> str:
    """Return a fresh, file-name-safe alert id."""
    return uuid.uuid4().hex


def alert_from_error(
    error: BaseException,
    *,
    severity: Severity,
    context: dict[str, Any] | None,
    source: str,
    host: str,
    now: float,
) -> Alert:
    """Build an alert from an exception, merging its structured context with ``context``."""
    merged: dict[str, Any] = {}
    if isinstance(error, HeavyOptimizerError):
        merged.update(error.context)
        text = error.message
        error_code: str | None = error.error_code
    else:
        text = str(error)
        error_code = None
    merged.update(context or {})
    kind = type(error).__name__
    stage = _optional_str(merged.get("stage"))
    frames = traceback.extract_tb(error.__traceback__)
    location = f"{frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else None
    stack_trace = None
    if error.__traceback__ is not None:
        stack_trace = "".join(traceback.format_exception(error))[-MAX_STACK_TRACE_CHARS:]
    return Alert(
        alert_id=new_alert_id(),
        created_at=now,
        severity=severity,
        title=_one_line(f"{kind}: {_first_line(text)}" if text.strip() else kind),
        message=text or kind,
        source=source,
        host=host,
        fingerprint=fingerprint(kind, stage, text),
        job_id=_optional_str(merged.get("job_id")),
        stage=stage,
        error_type=kind,
        error_code=error_code,
        location=location,
        stack_trace=stack_trace,
        context=safe_context(merged),
    )


def alert_from_message(
    title: str,
    message: str,
    *,
    severity: Severity,
    context: dict[str, Any] | None,
    source: str,
    host: str,
    now: float,
) -> Alert:
    """Build an alert from a title and message (no exception involved)."""
    merged = dict(context or {})
    stage = _optional_str(merged.get("stage"))
    return Alert(
        alert_id=new_alert_id(),
        created_at=now,
        severity=severity,
        title=_one_line(title),
        message=message,
        source=source,
        host=host,
        fingerprint=fingerprint("notice", stage, f"{title}\n{message}"),
        job_id=_optional_str(merged.get("job_id")),
        stage=stage,
        context=safe_context(merged),
    )


def safe_context(context: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready copy of ``context`` with secret-looking keys redacted and values truncated."""
    safe: dict[str, Any] = {}
    for key, value in context.items():
        name = str(key)
        if SECRET_KEY_PATTERN.search(name):
            safe[name] = "<redacted>"
        elif value is None or isinstance(value, bool | int) or (
            isinstance(value, float) and math.isfinite(value)
        ):
            safe[name] = value
        else:
            safe[name] = str(value)[:MAX_CONTEXT_VALUE_CHARS]
    return safe


def _optional_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _first_line(text: str) -> str:
    return next((line for line in text.splitlines() if line.strip()), "")


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    if len(line) <= MAX_TITLE_CHARS:
        return line
    return line[: MAX_TITLE_CHARS - 3] + "..."
