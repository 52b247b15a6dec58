"""What the recovery manager can decide, and the small strategies that decide it.

A decision is a typed, frozen :class:`RecoveryAction` that the daemon writes into the job's
record (``to_dict``) and acts on: wait and run again, resume from a named checkpoint, run
again with smaller sizes, skip one algorithm, or fail the job. Strategies copy tenacity's
shape (STYLE 9): each is a small callable over one :class:`RecoveryState` record, looked up by
the ``action`` name the config gives an error kind, so tests build the state directly and no
``if/elif`` ladder grows with every new kind. Before any strategy runs, the give-up rules
(recovery disabled, critical error, attempt bound, recovery time bound) may end the job.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from .config import RecoveryConfig, StrategyConfig
from .errors import HeavyOptimizerError
from .retry import JITTER_FRACTION

logger = logging.getLogger(__name__)

#: Context keys that the memory strategy shrinks by ``reduce_factor``.
SIZE_KEYS = ("population_size", "batch_size")
#: Exponent cap for the backoff so a long history cannot overflow a float.
_MAX_BACKOFF_EXPONENT = 60


class CheckpointStore(Protocol):
    """The part of ``CheckpointManager`` that recovery uses (resume targets, emergency saves)."""

    def get_latest_checkpoint(self) -> Any: ...

    def load_latest_valid(self) -> Any: ...

    def save_checkpoint(self, state: dict[str, Any], name: str, description: str = "") -> Any: ...


@dataclass(frozen=True)
class ErrorFacts:
    """What is known about one failure, whether it came as an exception or an error record."""

    type: str
    code: str
    message: str
    #: False when the error hierarchy says the failure repeats on every attempt.
    recoverable: bool
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The message, or the type name for exceptions raised without one (``MemoryError()``)."""
        return self.message or self.type


# -- actions ------------------------------------------------------------------------------


class RecoveryAction:
    """Base of every decision; subclasses are frozen dataclasses with JSON-ready fields.

    ``kind`` is the config's action name; ``reason`` says why in words an operator can act
    on; ``delay_seconds`` is how long to wait before acting.
    """

    kind: ClassVar[str]
    #: Whether the running state is discarded, so an emergency checkpoint should keep it.
    keeps_state: ClassVar[bool] = False
    reason: str
    delay_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready form written into job records (``kind`` plus every field)."""
        values = {f.name: copy.deepcopy(getattr(self, f.name)) for f in _fields(self)}
        return {"kind": self.kind, **values}


def _fields(action: RecoveryAction) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(action)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RetryAfter(RecoveryAction):
    """Run the job again after ``delay_seconds`` (transient network, database, disk)."""

    kind: ClassVar[str] = "retry"
    delay_seconds: float
    reason: str = ""


@dataclass(frozen=True)
class ResumeFromCheckpoint(RecoveryAction):
    """Run the job again from ``checkpoint_name``; ``None`` means from the beginning."""

    kind: ClassVar[str] = "resume_checkpoint"
    checkpoint_name: str | None
    delay_seconds: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class AdjustParameters(RecoveryAction):
    """Run the job again with ``changes`` applied to its parameters (smaller sizes)."""

    kind: ClassVar[str] = "adjust_parameters"
    # Restarting with other sizes discards the in-memory run; keep it as a checkpoint first.
    keeps_state: ClassVar[bool] = True
    changes: dict[str, Any]
    delay_seconds: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class SkipAlgorithm(RecoveryAction):
    """Go on without ``algorithm``; the other algorithms still run."""

    kind: ClassVar[str] = "skip_algorithm"
    algorithm: str
    reason: str = ""
    delay_seconds: float = field(default=0.0, init=False)


@dataclass(frozen=True)
class FailJob(RecoveryAction):
    """Stop trying: the job goes to failed/ with ``reason`` and ``error_code``."""

    kind: ClassVar[str] = "fail"
    # The job ends; its state is worth keeping for a person to resume from.
    keeps_state: ClassVar[bool] = True
    reason: str
    error_code: str
    delay_seconds: float = field(default=0.0, init=False)


#: Action classes by their ``kind``, for reading decisions back from job records.
ACTION_TYPES: dict[str, type[RecoveryAction]] = {
    cls.kind: cls
    for cls in (RetryAfter, ResumeFromCheckpoint, AdjustParameters, SkipAlgorithm, FailJob)
}


def recovery_action_from_dict(data: Mapping[str, Any]) -> RecoveryAction:
    """Rebuild an action from its ``to_dict`` form (as stored in a job record).

    Raises:
        HeavyOptimizerError: The record names no known action kind or has wrong fields.
    """
    cls = ACTION_TYPES.get(str(data.get("kind")))
    if cls is None:
        raise HeavyOptimizerError(
            f"unknown recovery action kind {data.get('kind')!r}; known: {sorted(ACTION_TYPES)}",
            error_code="INVALID_RECOVERY_ACTION",
        )
    init_names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in data.items() if k in init_names})
    except TypeError as exc:
        raise HeavyOptimizerError(
            f"recovery action {data.get('kind')!r} has wrong fields: {exc}",
            error_code="INVALID_RECOVERY_ACTION",
        ) from exc


# -- the state record ---------------------------------------------------------------------


@dataclass(frozen=True)
class RecoveryState:
    """Everything a strategy may look at for one failure (tenacity's ``RetryCallState``).

    Args:
        attempt: Recoveries for this job so far, this one included (bounded by config).
        kind_attempt: Failures of this same kind so far, this one included (drives backoff).
        elapsed_seconds: Time since the job's first recorded error.
        jitter: A uniform draw in [0, 1) from the manager's rng (see :func:`backoff_delay_seconds`).
        checkpoints: The job's checkpoint manager, for the resume strategy.
    """

    job_id: str
    error: ErrorFacts
    kind: str
    attempt: int
    context: Mapping[str, Any]
    config: RecoveryConfig
    kind_attempt: int = 1
    elapsed_seconds: float = 0.0
    jitter: float = 0.0
    checkpoints: CheckpointStore | None = None

    @property
    def strategy(self) -> StrategyConfig:
        """The configured strategy for this error's kind."""
        strategy: StrategyConfig = getattr(self.config.strategies, self.kind)
        return strategy

    @property
    def is_critical(self) -> bool:
        """True when the error itself cannot be recovered, as opposed to recovery running out."""
        return not self.error.recoverable or self.strategy.action == "fail"


Strategy = Callable[[RecoveryState], RecoveryAction]
GiveUpRule = Callable[[RecoveryState], str | None]


def backoff_delay_seconds(state: RecoveryState) -> float:
    """Exponential backoff with jitter, capped by the strategy's ``max_delay_seconds``.

    The curve of the retry decorators' ``wait_backoff``, computed from the state record so that
    tests set the jitter directly: ``delay_seconds * 2 ** (kind_attempt - 1)``, plus
    jitter of up to ``JITTER_FRACTION`` of that (``state.jitter`` is a uniform draw in [0, 1)
    from the manager's injected rng) so that jobs hit by one outage do not come back in
    lockstep. Jitter only adds, and less than the doubling, so delays still grow attempt by
    attempt; the cap is applied last and is a hard ceiling.
    """
    cfg = state.strategy
    exponent = min(state.kind_attempt - 1, _MAX_BACKOFF_EXPONENT)
    raw = cfg.delay_seconds * 2.0**exponent * (1.0 + JITTER_FRACTION * state.jitter)
    return max(0.0, min(cfg.max_delay_seconds, raw))


# -- strategies ---------------------------------------------------------------------------


def retry_later(state: RecoveryState) -> RecoveryAction:
    """Wait with backoff, then run again (transient network, database and disk errors)."""
    delay = backoff_delay_seconds(state)
    return RetryAfter(
        delay,
        reason=f"{state.kind} error, retry {state.kind_attempt} in {delay:.1f} s: "
        f"{state.error.text}",
    )


def resume_from_checkpoint(state: RecoveryState) -> RecoveryAction:
    """Resume from the newest checkpoint that can be used (crash, stuck, checkpoint errors).

    A checkpoint error may name the newest older checkpoint that loads (``previous``); if not,
    each candidate is loaded and verified, newest first, because the newest may be the one that
    is unreadable. For other kinds the latest checkpoint's name is enough: checkpoints are
    written atomically, and the supervisor need not read a large state just to pick a name.
    """
    delay = backoff_delay_seconds(state)
    name = state.context.get("previous_checkpoint") or _checkpoint_to_resume(state)
    where = f"checkpoint {name!r}" if name else "the beginning (no usable checkpoint)"
    return ResumeFromCheckpoint(
        str(name) if name else None,
        delay,
        reason=f"{state.kind} error, resuming from {where}: {state.error.text}",
    )


def _checkpoint_to_resume(state: RecoveryState) -> str | None:
    if state.checkpoints is None:
        return None
    try:
        if state.kind == "checkpoint":
            found = state.checkpoints.load_latest_valid()
            return str(found[0].name) if found else None
        latest = state.checkpoints.get_latest_checkpoint()
        return str(latest.name) if latest else None
    except (HeavyOptimizerError, OSError) as exc:
        logger.warning(
            "Job %s: cannot list checkpoints, resuming from the beginning: %s", state.job_id, exc
        )
        return None


def reduce_parameters(state: RecoveryState) -> RecoveryAction:
    """Free memory, shrink population and batch sizes by ``reduce_factor``, then run again.

    Sizes come from the context (``population_size``, ``batch_size``) and never drop below 1.
    With no size in the context the action still says "run again", with no changes.
    """
    freed = gc.collect()
    factor = state.strategy.reduce_factor
    changes = {
        key: max(1, int(value * factor))
        for key in SIZE_KEYS
        if isinstance(value := state.context.get(key), int | float) and not isinstance(value, bool)
    }
    delay = backoff_delay_seconds(state)
    shrunk = ", ".join(f"{k}={v}" for k, v in changes.items()) or "no sizes in context"
    return AdjustParameters(
        changes,
        delay,
        reason=f"{state.kind} error, freed {freed} objects, retrying with {shrunk}: "
        f"{state.error.text}",
    )


def skip_algorithm(state: RecoveryState) -> RecoveryAction:
    """Skip the failed algorithm and keep the others.

    Without an ``algorithm`` in the context there is nothing to skip, so the job resumes from
    its checkpoint instead (the algorithm stage runs again).
    """
    algorithm = state.context.get("algorithm")
    if not algorithm:
        logger.warning("Job %s: algorithm error names no algorithm; resuming", state.job_id)
        return resume_from_checkpoint(state)
    return SkipAlgorithm(
        str(algorithm),
        reason=f"algorithm {algorithm} failed and is skipped, the others go on: {state.error.text}",
    )


def fail_job(state: RecoveryState) -> RecoveryAction:
    """Fail fast with the error's own message: trying again would fail the same way."""
    return FailJob(state.error.text, state.error.code)


#: Strategy callables by the config's ``action`` name (``StrategyConfig.action``).
STRATEGIES: dict[str, Strategy] = {
    "retry": retry_later,
    "resume_checkpoint": resume_from_checkpoint,
    "adjust_parameters": reduce_parameters,
    "skip_algorithm": skip_algorithm,
    "fail": fail_job,
}


# -- give-up rules ------------------------------------------------------------------------


def _recovery_disabled(state: RecoveryState) -> str | None:
    return None if state.config.enabled else state.error.text


def _critical_error(state: RecoveryState) -> str | None:
    # The hierarchy's verdict wins over the kind's strategy: a CriticalError fails the same
    # way every time, so no strategy may retry it.
    return None if state.error.recoverable else state.error.text


def _attempts_exhausted(state: RecoveryState) -> str | None:
    limit = state.config.max_recovery_attempts
    if state.attempt <= limit:
        return None
    return f"gave up after {limit} recovery attempts: {state.error.text}"


def _recovery_timed_out(state: RecoveryState) -> str | None:
    limit = state.config.recovery_timeout_seconds
    if state.elapsed_seconds <= limit:
        return None
    return (
        f"gave up: recovery ran {state.elapsed_seconds:.0f} s since the first error "
        f"(limit {limit:.0f} s): {state.error.text}"
    )


#: Rules checked in order before any strategy; the first that returns a reason fails the job.
GIVE_UP_RULES: dict[str, GiveUpRule] = {
    "recovery_disabled": _recovery_disabled,
    "critical_error": _critical_error,
    "attempts_exhausted": _attempts_exhausted,
    "recovery_timeout": _recovery_timed_out,
}


def decide(state: RecoveryState) -> tuple[str, RecoveryAction]:
    """Apply the give-up rules, then the kind's strategy.

    Returns:
        The name of the rule or strategy that decided (recorded in the history), and the action.
    """
    for name, rule in GIVE_UP_RULES.items():
        reason = rule(state)
        if reason is not None:
            return name, FailJob(reason, state.error.code)
    action_name = state.strategy.action
    return action_name, STRATEGIES[action_name](state)
