"""`bench/run --quick` runs every benchmark (the numbers are not checked here)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent

pytestmark = pytest.mark.slow  # runs a subprocess for tens of seconds


def test_bench_quick_runs_every_benchmark(tmp_path):
    out = tmp_path / "benchmarks.md"
    result = subprocess.run(
        [str(ROOT / "bench" / "run"), "--quick", "--out", str(out)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = out.read_text()
    for row in ("GET query, ceiling", "GET query, 10,000 devices", "POST JSON, 1,000 devices", "| no-op |", "| webhook |", "| 64 |", "ratio to ceiling |",
                "resident memory, idle", "start-up to READY=1, 10,000 devices",
                "database size per device", "| SQLite, 2 |", "| PostgreSQL, 1 |",
                "two instances over one, PostgreSQL", "added by PostgreSQL at 100 calls/s"):
        assert row in report, row
    assert "| 0 |" in report  # the error column of the load runs
    assert "| errors (API / bare) | 0 / 0 |" in report
