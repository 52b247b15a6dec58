"""The README documents every config key (a key added without docs fails here)."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterator

import pytest

from daemon.config import JobProcessorConfig
from daemon.error_handling.config import ErrorHandlingConfig
from daemon.workflow.settings import OptimizerConfig
from tests.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(20)


def _keys(cls: type, prefix: str = "") -> Iterator[str]:
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        tp = hints[field.name]
        if dataclasses.is_dataclass(tp) and not prefix.startswith(("algorithms.",
                                                                    "recovery.strategies")):
            yield from _keys(tp, f"{prefix}{field.name}.")  # type: ignore[arg-type]
        else:
            yield f"{prefix}{field.name}"


@pytest.mark.parametrize("cls", [JobProcessorConfig, ErrorHandlingConfig, OptimizerConfig])
def test_every_config_key_is_in_the_readme(cls: type) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    documented = {m.removesuffix(".*") for m in re.findall(r"`([A-Za-z_.<>*]+)`", readme)}
    # a row may document several sibling keys: `a.b.x`, `y`, `z` or `a.b.x` / `.y`
    words = set(re.findall(r"[A-Za-z_]+", " ".join(documented)))
    missing = []
    for key in _keys(cls):
        leaf = key.rsplit(".", 1)[-1]
        if key not in documented and not (leaf in words and key.split(".")[0] in words):
            missing.append(key)
    assert not missing, f"config keys missing from README.md: {missing}"
