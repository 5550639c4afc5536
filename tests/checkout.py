"""The project as a fresh clone holds it: the files git tracks, as they are in the working tree
(no build/, .venv or caches a local run left behind)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def tracked_files() -> list[Path]:
    """Every tracked file of the checkout that exists in the working tree."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    return [ROOT / name for name in listed if name and (ROOT / name).is_file()]


def copy_checkout(dest: Path) -> Path:
    """A copy of the tracked files at ``dest``, what ``git clone`` would give."""
    for path in tracked_files():
        target = dest / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest
