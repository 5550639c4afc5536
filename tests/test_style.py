"""The code base stays ruff clean (the settings are in pyproject.toml), and no test module
imports another: what tests share lives in helper modules (conftest, reports, configs, ...)."""

import ast
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def test_ruff_clean():
    root = TESTS.parent
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", str(root)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_test_module_imports_another():
    found = []
    for path in sorted(TESTS.glob("**/*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(TESTS)}: {n}" for n in names
                      if n.split(".")[0].startswith("test_")]
    assert not found, "\n".join(found)
