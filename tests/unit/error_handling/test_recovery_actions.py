"""Recovery actions and strategies on state records built directly (tenacity style)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from daemon.error_handling.config import RecoveryConfig
from daemon.error_handling.errors import HeavyOptimizerError
from daemon.error_handling.recovery_actions import (
    AdjustParameters,
    ErrorFacts,
    FailJob,
    RecoveryAction,
    RecoveryState,
    ResumeFromCheckpoint,
    RetryAfter,
    SkipAlgorithm,
    backoff_delay_seconds,
    decide,
    recovery_action_from_dict,
    reduce_parameters,
    skip_algorithm,
)

pytestmark = pytest.mark.timeout(10)

JOB = "job_actions"


@pytest.mark.parametrize(
    "action",
    [
        RetryAfter(4.0, reason="network"),
        ResumeFromCheckpoint("validate", 5.0, reason="crash"),
        ResumeFromCheckpoint(None),
        AdjustParameters({"population_size": 50}, 5.0, reason="memory"),
        SkipAlgorithm("PSO", reason="diverged"),
        FailJob("gave up", "JOB_STUCK"),
    ],
)
def test_actions_round_trip_through_json(action: RecoveryAction) -> None:
    data = json.loads(json.dumps(action.to_dict()))
    assert data["kind"] == action.kind
    assert {"reason", "delay_seconds"} <= set(data)
    assert recovery_action_from_dict(data) == action


def test_unknown_or_incomplete_action_record_is_refused() -> None:
    with pytest.raises(HeavyOptimizerError, match="unknown recovery action kind"):
        recovery_action_from_dict({"kind": "pray"})
    with pytest.raises(HeavyOptimizerError, match="wrong fields"):
        recovery_action_from_dict({"kind": "retry", "reason": "no delay given"})


def make_state(kind: str, **fields: Any) -> RecoveryState:
    facts = ErrorFacts("MemoryLimitError", "MEMORY_LIMIT", "oom", True)
    defaults: dict[str, Any] = {
        "job_id": JOB, "error": facts, "kind": kind, "attempt": 1, "context": {},
        "config": RecoveryConfig(),
    }  # fmt: skip
    return RecoveryState(**{**defaults, **fields})


def test_backoff_doubles_adds_bounded_jitter_and_respects_the_cap() -> None:
    assert backoff_delay_seconds(make_state("network", kind_attempt=1)) == 2.0
    assert backoff_delay_seconds(make_state("network", kind_attempt=3)) == 8.0
    assert backoff_delay_seconds(make_state("network", kind_attempt=3, jitter=0.5)) == 8.4
    assert backoff_delay_seconds(make_state("network", kind_attempt=200, jitter=0.9)) == 300.0
    assert backoff_delay_seconds(make_state("algorithm", kind_attempt=5)) == 0.0


def test_memory_strategy_on_a_state_record() -> None:
    state = make_state("memory", context={"population_size": 9.0, "batch_size": True})
    action = reduce_parameters(state)
    assert isinstance(action, AdjustParameters)
    assert action.changes == {"population_size": 4}  # a bool is not a size


def test_skip_strategy_names_the_algorithm_from_the_context() -> None:
    action = skip_algorithm(make_state("algorithm", context={"algorithm": "ACO"}))
    assert action == SkipAlgorithm("ACO", reason=action.reason)
    assert action.to_dict()["delay_seconds"] == 0.0


def test_decide_reports_which_rule_or_strategy_decided() -> None:
    assert decide(make_state("network"))[0] == "retry"
    name, action = decide(make_state("network", attempt=4))
    assert name == "attempts_exhausted"
    assert action == FailJob("gave up after 3 recovery attempts: oom", "MEMORY_LIMIT")
