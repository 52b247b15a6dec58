"""Fixtures for the CLI verbs: a real share, a config folder, and ``cli(...)`` in-process.

Records are made by the real registry (claim, fail, complete) and status files by the real
status board, so the verbs read exactly what a daemon writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.cli import main
from daemon.share import ShareLayout
from tests.corpus import GOOD_CSV
from tests.daemon_harness import make_config_dir
from tests.unit.commands.cli_support import Cli, CliResult


@pytest.fixture
def share(tmp_path: Path) -> ShareLayout:
    layout = ShareLayout(tmp_path / "share")
    layout.ensure()
    (layout.input / "data.csv").write_text(GOOD_CSV)
    return layout


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("HEAVY_OPTIMIZER_SHARE_ROOT", raising=False)
    monkeypatch.delenv("HEAVY_OPTIMIZER_CONFIG_DIR", raising=False)
    return make_config_dir(tmp_path / "config")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], share: ShareLayout, config_dir: Path) -> Cli:
    """Run ``heavy-optimizer ARGS --share SHARE --config-dir CONFIG`` in this process."""

    def run(*args: str, share_root: Path | None = None) -> CliResult:
        root = share.root if share_root is None else share_root
        code = main([*args, "--share", str(root), "--config-dir", str(config_dir)])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
