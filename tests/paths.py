"""Where the tests find the bundled sample data (real extracts of production files)."""

from pathlib import Path

#: The repository root.
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real CSV extracts and an example job file, shipped with the repository.
SAMPLES_DIR = REPO_ROOT / "samples"
