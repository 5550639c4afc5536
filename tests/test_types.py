"""The code base is mypy clean (the settings are in pyproject.toml's [tool.mypy])."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def link_tree() -> Path:
    """Lay daemon/ and plugins/ out as the installed package pnbridge, out of symlinks.

    mypy names a module after its directory, and the code imports itself as ``pnbridge``.
    """
    src = ROOT / ".mypy_cache" / "src"
    package = src / "pnbridge"
    package.mkdir(parents=True, exist_ok=True)
    for old in package.iterdir():
        old.unlink()
    for entry in (ROOT / "daemon").iterdir():
        if entry.name != "__pycache__":
            (package / entry.name).symlink_to(entry)
    (package / "plugins").symlink_to(ROOT / "plugins")
    return package


def test_mypy_clean():
    package = link_tree()
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, cwd=ROOT,
    )
    # Name the files where they are, not where the link tree puts them.
    shown = package.relative_to(ROOT).as_posix()
    output = (result.stdout + result.stderr).replace(f"{shown}/plugins/", "plugins/")
    output = output.replace(f"{shown}/", "daemon/")
    code = result.returncode
    assert code == 0, output
