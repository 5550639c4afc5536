"""The code base stays ruff clean (the settings are in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path


def test_ruff_clean():
    root = Path(__file__).parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(root)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
