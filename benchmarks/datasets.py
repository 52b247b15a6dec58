"""Inputs for the benchmarks: the bundled real extracts, and the production-scale file.

The production-scale file (82 x 25,544, about 40 MB) is not committed: it is generated once
from the real 82 x 2,500 extract by ``make_production_csv.py`` (deterministic for its seed)
and cached under ``$XDG_CACHE_HOME/heavy-optimizer`` (or ``~/.cache/heavy-optimizer``).
"""

from __future__ import annotations

import os
from pathlib import Path

import make_production_csv

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
SENSEX_2500 = SAMPLES / "sensex_82x2500.csv"
SENSEX_500 = SAMPLES / "sensex_82x500.csv"


def production_csv(explicit: Path | None = None) -> Path:
    """The 82 x 25,544 file: ``explicit``, ``$HEAVY_OPTIMIZER_PRODUCTION_CSV``, or generated."""
    if explicit is not None:
        return explicit
    if os.environ.get("HEAVY_OPTIMIZER_PRODUCTION_CSV"):
        return Path(os.environ["HEAVY_OPTIMIZER_PRODUCTION_CSV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "heavy-optimizer"
    path = cache / "production_82x25544_seed7.csv"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        make_production_csv.main([str(path), "--strategies", "25544", "--seed", "7",
                                  "--source", str(SENSEX_2500)])
    return path
