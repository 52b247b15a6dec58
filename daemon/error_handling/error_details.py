"""Error detail files: one JSON document per serious error, written so a person can act on it.

A log line says that something failed; the detail file says in what state: the traceback
frame by frame with each frame's locals, the context (job, stage, attempt) and the machine's
memory, disk and load at that moment. Locals are where secrets hide (a password argument, a
webhook URL in a config object), so every value passes through the redaction here before it
reaches disk, and every value is cut to a readable length. Sampling the machine never blocks
(no CPU percentage over an interval).

Files are written atomically (temporary file, fsync, ``os.replace``) so a reader never sees
half a document, even on the share.
"""

from __future__ import annotations

import datetime as dt
import inspect
import itertools
import json
import linecache
import os
import platform
import re
import reprlib
import socket
import threading
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import psutil

#: What replaces a secret.
REDACTED = "***"
#: Longest text kept for one value (a local, a context value, a message).
MAX_VALUE_CHARS = 500
#: At most this many locals per frame and frames per traceback (innermost kept).
MAX_LOCALS_PER_FRAME = 50
MAX_FRAMES = 40

#: A name containing one of these is a secret wherever it appears in the name.
_SECRET_FRAGMENTS = ("password", "passwd", "secret", "token", "webhook", "credential", "apikey")
#: A name with one of these as a whole word (``api_key``, ``authKey``) is a secret; ``monkey``
#: and ``author`` are not.
_SECRET_WORDS = frozenset({"key", "auth", "pwd", "authorization", "cookie"})
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+")

#: ``scheme://user:password@host`` keeps the user, hides the password (bounded, as below).
_URL_CREDENTIALS = re.compile(
    r"\b([a-zA-Z][a-zA-Z0-9+.-]{0,20}://[^/\s:@]{0,100}):[^/\s@]{1,300}@"
)
#: A Slack incoming webhook URL is itself the credential.
_SLACK_HOOK = re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[^\s'\"<>]+")
#: ``password='x'``, ``"api_key": "x"``, ``token=x`` inside reprs and query strings.
#: Quantifiers are bounded and starts anchored at word boundaries: an unbounded ``[\w-]*``
#: backtracks quadratically over a long run of letters (a 5 kB string took most of a second).
_SECRET_ASSIGNMENT = re.compile(
    r"(?i)\b([\w-]{0,40}?(?:password|passwd|secret|token|api_?key|webhook|credential)[\w-]{0,40}"
    r"['\"]?\s{0,5}[=:]\s{0,5}['\"]?)[^'\"\s,;&)}\]]+"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[\w.~+/=-]+")

_name_lock = threading.Lock()


def is_secret_name(name: str) -> bool:
    """Whether a variable or key called ``name`` holds a secret (password, token, key ...)."""
    lowered = name.lower()
    if any(fragment in lowered for fragment in _SECRET_FRAGMENTS):
        return True
    words = _WORD_SPLIT.split(_CAMEL_BOUNDARY.sub("_", name).lower())
    return any(word in _SECRET_WORDS for word in words)


def scrub_urls(text: str) -> str:
    """Hide URL passwords and Slack webhook paths; cheap enough for every log message."""
    if "://" not in text and "hooks.slack.com" not in text:
        return text
    return _URL_CREDENTIALS.sub(rf"\1:{REDACTED}@", _SLACK_HOOK.sub(rf"\1{REDACTED}", text))


def scrub_text(text: str) -> str:
    """Hide secrets inside free text: URL credentials, webhooks, ``key=value`` and bearer tokens.

    Broader than :func:`scrub_urls` (it also hides the value after words like "token:"), so
    it is used for reprs and detail files rather than for ordinary log messages.
    """
    text = scrub_urls(text)
    text = _SECRET_ASSIGNMENT.sub(rf"\1{REDACTED}", text)
    return _BEARER.sub(rf"\1{REDACTED}", text)


def truncate(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """Cut ``text`` to ``limit`` characters, saying how much was dropped."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more chars]"


def redact_mapping(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Copy a flat mapping (a log context) with secret keys and secrets in text hidden.

    JSON scalars are kept as they are; anything else becomes its scrubbed, truncated repr.
    """
    clean: dict[str, Any] = {}
    for key, value in mapping.items():
        if is_secret_name(str(key)):
            clean[key] = REDACTED
        elif isinstance(value, str):
            clean[key] = truncate(scrub_text(value))
        elif value is None or isinstance(value, bool | int | float):
            clean[key] = value
        else:
            clean[key] = safe_repr(value)
    return clean


class _RedactingRepr(reprlib.Repr):
    """``reprlib`` with bounded size that hides the values of secret dict keys."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = 20
        # Long enough that scrubbing sees URLs whole before the final cut to 500 characters.
        self.maxstring = self.maxother = self.maxlong = 10 * MAX_VALUE_CHARS

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        pieces = [
            f"{self.repr1(key, level - 1)}: "
            + (repr(REDACTED) if is_secret_name(str(key)) else self.repr1(value, level - 1))
            for key, value in itertools.islice(x.items(), self.maxdict)
        ]
        if len(x) > self.maxdict:
            pieces.append("...")
        return "{" + ", ".join(pieces) + "}"


_repr = _RedactingRepr()


def safe_repr(value: Any) -> str:
    """A repr that cannot raise, with secrets hidden and at most ~500 characters."""
    try:
        text = _repr.repr(value)
    except Exception as exc:  # a broken __repr__ must not stop the report
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    return truncate(scrub_text(text))


def collect_system_state(disk_path: Path) -> dict[str, Any]:
    """Sample memory, disk, load and this process without blocking; each probe may fail alone."""
    state: dict[str, Any] = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "python_version": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    mib = 1024 * 1024

    def memory() -> dict[str, Any]:
        vm = psutil.virtual_memory()
        return {
            "total_mb": vm.total // mib,
            "available_mb": vm.available // mib,
            "percent": vm.percent,
        }

    def disk() -> dict[str, Any]:
        existing = next(p for p in (disk_path, *disk_path.parents) if p.exists())
        du = psutil.disk_usage(str(existing))
        return {"path": str(existing), "free_mb": du.free // mib, "percent": du.percent}

    def process() -> dict[str, Any]:
        me = psutil.Process()
        return {"rss_mb": me.memory_info().rss // mib, "threads": me.num_threads()}

    probes = {"memory": memory, "disk": disk, "load_average": os.getloadavg, "process": process}
    for key, probe in probes.items():
        try:
            state[key] = probe()
        except Exception as exc:  # e.g. a share gone away: report that, not nothing
            state[key] = {"error": f"{type(exc).__name__}: {exc}"}
    return state


def build_error_details(
    message: str,
    *,
    logger_name: str,
    level: str,
    context: Mapping[str, Any],
    exc: BaseException | None,
    include_locals: bool,
    caller: FrameType | None,
    disk_path: Path,
    now: dt.datetime,
) -> dict[str, Any]:
    """Assemble the detail document (not yet written).

    Args:
        message: The formatted log message.
        logger_name: Name of the logger that reported the error.
        level: ``ERROR`` or ``CRITICAL``.
        context: The log context at the time of the error.
        exc: The exception, or ``None`` when an error was logged without one.
        include_locals: Record each frame's locals (redacted, truncated).
        caller: Without an exception, the frame whose stack is recorded instead.
        disk_path: Where to measure free disk space (its nearest existing folder).
        now: Time of the error.
    """
    document: dict[str, Any] = {
        "message": truncate(scrub_text(message), 10 * MAX_VALUE_CHARS),
        "time": now.isoformat(),
        "logger": logger_name,
        "level": level,
        "context": redact_mapping(context),
        "exception": None,
        "stack": None,
    }
    if exc is not None:
        document["exception"] = _describe_exception(exc, include_locals)
    elif caller is not None:
        frames: list[dict[str, Any]] = []
        frame: FrameType | None = caller
        while frame is not None and len(frames) < MAX_FRAMES:
            frames.append(_describe_frame(frame, frame.f_lineno, include_locals))
            frame = frame.f_back
        document["stack"] = frames[::-1]
    document["system"] = collect_system_state(disk_path)
    return document


def write_error_details(directory: Path, document: dict[str, Any], *, name_hint: str) -> Path:
    """Write ``document`` as ``error_<name_hint>_<YYYYmmdd_HHMMSS_ffffff>.json`` atomically.

    The time in the name is the document's UTC time; a second error in the same microsecond
    gets a ``_1`` suffix instead of replacing the first.

    Raises:
        OSError: The folder cannot be created or the file written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.fromisoformat(document["time"]).strftime("%Y%m%d_%H%M%S_%f")
    safe_hint = re.sub(r"[^A-Za-z0-9._-]+", "_", name_hint).strip("._")[:80] or "unknown"
    payload = json.dumps(document, indent=2, default=str, ensure_ascii=False).encode()
    temp = directory / f".error_{safe_hint}_{stamp}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        with open(temp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        with _name_lock:  # pick a free name and claim it in one step within this process
            path = directory / f"error_{safe_hint}_{stamp}.json"
            for n in itertools.count(1):
                if not path.exists():
                    break
                path = directory / f"error_{safe_hint}_{stamp}_{n}.json"
            os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return path


def _describe_exception(exc: BaseException, include_locals: bool) -> dict[str, Any]:
    walked = list(_walk_traceback(exc.__traceback__))[-MAX_FRAMES:]
    chain: list[dict[str, str]] = []
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    while cause is not None and len(chain) < 5:
        chain.append({"type": _type_name(cause), "message": truncate(scrub_text(str(cause)))})
        cause = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
    described: dict[str, Any] = {
        "type": _type_name(exc),
        "message": truncate(scrub_text(str(exc)), 10 * MAX_VALUE_CHARS),
        "frames": [_describe_frame(frame, line, include_locals) for frame, line in walked],
        "chain": chain,
        "traceback": scrub_text("".join(traceback.format_exception(exc))),
    }
    to_dict = getattr(exc, "to_dict", None)  # our hierarchy's structured fields
    if callable(to_dict):
        record = to_dict()
        record["context"] = redact_mapping(record.get("context", {}))
        described["details"] = record
    return described


def _walk_traceback(tb: TracebackType | None) -> Iterator[tuple[FrameType, int]]:
    while tb is not None:
        yield tb.tb_frame, tb.tb_lineno
        tb = tb.tb_next


def _describe_frame(frame: FrameType, lineno: int, include_locals: bool) -> dict[str, Any]:
    code = frame.f_code
    described: dict[str, Any] = {
        "file": code.co_filename,
        "line": lineno,
        "function": code.co_name,
        "code": scrub_text(linecache.getline(code.co_filename, lineno).strip()),
    }
    if include_locals:
        at_module_level = code.co_name == "<module>"  # its locals are the module's globals
        local_values: dict[str, str] = {}
        for name, value in frame.f_locals.items():
            if len(local_values) >= MAX_LOCALS_PER_FRAME:
                local_values["..."] = "more locals not shown"
                break
            if name.startswith("__") or inspect.ismodule(value) or inspect.isclass(value):
                continue  # imports and class objects are noise, not state
            if at_module_level and inspect.isroutine(value):
                continue
            local_values[name] = REDACTED if is_secret_name(name) else safe_repr(value)
        described["locals"] = local_values
    return described


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


__all__ = [
    "MAX_VALUE_CHARS",
    "REDACTED",
    "build_error_details",
    "collect_system_state",
    "is_secret_name",
    "redact_mapping",
    "safe_repr",
    "scrub_text",
    "scrub_urls",
    "truncate",
    "write_error_details",
]
