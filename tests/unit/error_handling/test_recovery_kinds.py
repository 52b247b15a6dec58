"""Error kinds: exceptions and the error records children report, classified for recovery."""

from __future__ import annotations

import dataclasses
import errno
from typing import Any

import pytest

from daemon.error_handling.config import RecoveryStrategies
from daemon.error_handling.errors import (
    CheckpointLoadError,
    CheckpointSaveError,
    DataValidationError,
    JobStuckError,
)
from daemon.error_handling.recovery_kinds import ERROR_KINDS, classify_error, error_facts

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        ({"type": "MemoryLimitError", "code": "MEMORY_LIMIT"}, "memory"),
        ({"code": "JOB_TIMEOUT"}, "timeout"),
        ({"code": "JOB_STUCK"}, "stuck"),
        ({"code": "JOB_CRASHED"}, "crash"),
        ({"code": "DATA_VALIDATION_ERROR"}, "data"),
        ({"code": "DATABASE_ERROR"}, "database"),
        ({"code": "DATABASE_QUERY_ERROR"}, "configuration"),
        ({"code": "NETWORK_ERROR"}, "network"),
        ({"code": "DISK_SPACE"}, "disk"),
        ({"code": "CHECKPOINT_LOAD_ERROR"}, "checkpoint"),
        ({"code": "ALGORITHM_ERROR"}, "algorithm"),
        ({"code": "ALGORITHM_TIMEOUT"}, "algorithm"),
        ({"code": "CONFIGURATION_ERROR"}, "configuration"),
        ({"code": "INVALID_JOB"}, "data"),
        ({"type": "MemoryError", "code": "UNEXPECTED_ERROR"}, "memory"),
        ({"type": "ConnectionResetError", "message": "peer reset"}, "network"),
        ({"type": "KeyError", "code": "UNEXPECTED_ERROR"}, "unknown"),
        ({"type": "NoSuchThing"}, "unknown"),
        ({}, "unknown"),
    ],
)
def test_classify_error_records(record: dict[str, Any], kind: str) -> None:
    assert classify_error(record) == kind


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (MemoryError(), "memory"),
        (OSError(errno.ENOSPC, "No space left on device"), "disk"),
        (OSError(errno.ENOENT, "No such file"), "unknown"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "network"),
        (TimeoutError("read timed out"), "network"),
        (JobStuckError("x"), "stuck"),
        (ValueError("x"), "unknown"),
    ],
)
def test_classify_exceptions(error: BaseException, kind: str) -> None:
    assert classify_error(error) == kind
    assert kind in ERROR_KINDS


def test_checkpoint_save_error_from_full_disk_is_a_disk_error() -> None:
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise CheckpointSaveError("cannot save checkpoint load") from exc
    except CheckpointSaveError as caught:
        assert classify_error(caught) == "disk"
    assert classify_error(CheckpointSaveError("permission denied")) == "checkpoint"


def test_every_error_kind_has_a_strategy() -> None:
    strategies = {f.name for f in dataclasses.fields(RecoveryStrategies)}
    assert set(ERROR_KINDS) == strategies


def test_facts_of_an_exception_of_ours() -> None:
    error = CheckpointLoadError("validate is corrupt", previous="load")
    facts = error_facts(error, classify_error(error))
    assert (facts.type, facts.code, facts.message, facts.recoverable) == (
        "CheckpointLoadError", "CHECKPOINT_LOAD_ERROR", "validate is corrupt", True,
    )  # fmt: skip
    assert facts.context["previous_checkpoint"] == "load"


def test_facts_of_a_builtin_exception_use_the_code_of_its_kind() -> None:
    facts = error_facts(MemoryError(), "memory")
    assert (facts.code, facts.text, facts.recoverable) == ("MEMORY_LIMIT", "MemoryError", True)


def test_facts_of_a_record_take_recoverable_from_its_class_unless_given() -> None:
    record = DataValidationError("row 3 is empty", context={"row": 3}).to_dict()
    del record["recoverable"]
    facts = error_facts(record, classify_error(record))
    assert (facts.code, facts.message, facts.recoverable) == (
        "DATA_VALIDATION_ERROR", "row 3 is empty", False,
    )  # fmt: skip
    assert facts.context == {"row": 3}
    stuck = {"code": "JOB_STUCK", "message": "no heartbeat", "recoverable": False}
    assert error_facts(stuck, classify_error(stuck)).recoverable is False
    bare = {"type": "Weird"}
    assert error_facts(bare, "unknown").code == "UNEXPECTED_ERROR"


def test_classification_walks_causes_and_survives_a_cause_cycle() -> None:
    wrapped = ValueError("wrapper")
    wrapped.__cause__ = MemoryError()
    assert classify_error(wrapped) == "memory"
    first, second = ValueError("a"), ValueError("b")
    first.__cause__, second.__cause__ = second, first
    assert classify_error(first) == "unknown"
