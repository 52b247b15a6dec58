"""Typed JSON config: turn a JSON object into a frozen dataclass, or refuse it clearly.

Every config file of the project goes through :func:`build_dataclass`. A wrong type stops
start-up with the file and the dotted key named; an unknown key is reported with the closest
known key (a typo must not silently fall back to a default). Secrets can be left out of files:
:func:`resolve_secret` reads them from the environment or from systemd credentials.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from .errors import ConfigurationError

logger = logging.getLogger(__name__)

T = TypeVar("T")


def build_dataclass(
    cls: type[T],
    data: Any,
    *,
    source: str,
    path: str = "",
    unknown: list[str] | None = None,
) -> T:
    """Build ``cls`` from a JSON value, checking every field's type.

    Args:
        cls: A dataclass whose field annotations describe the allowed JSON.
        data: The parsed JSON object for this section.
        source: The file name used in messages.
        path: Dotted key of this section inside the file ("" at the top).
        unknown: If given, unknown-key messages are appended here instead of being logged.

    Raises:
        ConfigurationError: A value has the wrong type, naming ``source`` and the key.
    """
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"{source}: {path or 'the file'} must be a JSON object, got {_describe(data)}",
            context={"file": source, "key": path},
        )
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, raw in data.items():
        dotted = f"{path}.{key}" if path else key
        if key not in fields:
            if key.startswith("_"):  # "_comment" style keys document a file; not config
                continue
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            hint = f"; did you mean '{(path + '.') if path else ''}{close[0]}'?" if close else ""
            message = f"{source}: unknown key '{dotted}' is ignored{hint}"
            if unknown is not None:
                unknown.append(message)
            else:
                logger.warning(message)
            continue
        values[key] = _convert(hints[key], raw, source=source, path=dotted, unknown=unknown)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{source}: {path or 'the file'}: {exc}") from exc


def _convert(tp: Any, raw: Any, *, source: str, path: str, unknown: list[str] | None) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if raw is None and type(None) in options:
            return None
        errors: list[ConfigurationError] = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, raw, source=source, path=path, unknown=unknown)
            except ConfigurationError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return build_dataclass(tp, raw, source=source, path=path, unknown=unknown)
    if origin is Literal:
        allowed = get_args(tp)
        if raw not in allowed:
            shown = ", ".join(repr(a) for a in allowed)
            _refuse(source, path, f"one of {shown}", raw)
        return raw
    if origin in (list, tuple):
        if not isinstance(raw, list):
            _refuse(source, path, "a list", raw)
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [
            _convert(item_tp, item, source=source, path=f"{path}[{i}]", unknown=unknown)
            for i, item in enumerate(raw)
        ]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(raw, dict):
            _refuse(source, path, "an object", raw)
        _, value_tp = get_args(tp) or (str, Any)
        return {
            str(k): _convert(value_tp, v, source=source, path=f"{path}.{k}", unknown=unknown)
            for k, v in raw.items()
        }
    if tp is Any:
        return raw
    if tp is bool:
        if not isinstance(raw, bool):
            _refuse(source, path, "true or false", raw)
        return raw
    if tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            _refuse(source, path, "a whole number", raw)
        return raw
    if tp is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            _refuse(source, path, "a number", raw)
        return float(raw)
    if tp is str:
        if not isinstance(raw, str):
            _refuse(source, path, "a string", raw)
        return raw
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")  # a bug in our schema


def _refuse(source: str, path: str, expected: str, raw: Any) -> typing.NoReturn:
    raise ConfigurationError(
        f"{source}: key '{path}' must be {expected}, got {_describe(raw)}",
        context={"file": source, "key": path},
    )


def _describe(raw: Any) -> str:
    text = json.dumps(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def read_json_file(path: Path) -> Any:
    """Read a config file, turning I/O and syntax problems into ``ConfigurationError``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc


def resolve_secret(value: str, *, env_var: str, credential: str) -> str:
    """Return a secret from, in order: the environment, a systemd credential, the file value.

    ``env_var`` lets operators keep secrets out of config files; ``credential`` is a file name
    under ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``).
    """
    from_env = os.environ.get(env_var)
    if from_env:
        return from_env
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred_path = Path(cred_dir) / credential
        if cred_path.is_file():
            return cred_path.read_text(encoding="utf-8").strip()
    return value
