"""`bench/soak` with a short run: load with kill -9, receiver outages and database locks."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.slow  # runs a subprocess for tens of seconds


def test_soak_short_run_passes_every_check():
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak"), "--seconds", "8"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "all checks passed" in result.stdout
    assert "FAIL" not in result.stdout
