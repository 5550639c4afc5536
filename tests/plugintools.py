"""Helpers for the plugin tests: the test plugins of tests/plugins/, the docs' example plugin,
waiting for deliveries, reading what plugins saw."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

DOCS = Path(__file__).parent.parent / "docs"

PLUGINS = Path(__file__).parent / "plugins"  # the test plugins, one file each


def install_plugins(directory: Path, *sources: str, **renamed: str) -> Path:
    """Copy test plugins (``tests/plugins/SOURCE.py``) into the plugins directory ``directory``,
    each named as its file, or as its keyword (``broken="containment/broken_recursion"``)."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in [*((Path(s).name, s) for s in sources), *renamed.items()]:
        shutil.copyfile(PLUGINS / f"{source}.py", directory / f"{name}.py")
    return directory


def write_plugin(directory: Path, name: str, code: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(code))
    return path


def docs_example() -> str:
    """The eventlog plugin of docs/writing-plugins.md, exactly as printed there."""
    text = (DOCS / "writing-plugins.md").read_text()
    section = text.split("## A plugin in a plugins directory", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "no python block in the plugins-directory section"
    return found.group(1)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def records(path: Path) -> list[tuple[str, int, str]]:
    """What the recorder plugin saw: (kind, seq, selector) per call."""
    return [(k, int(s), sel) for k, s, sel, _ in (line.split() for line in lines(path))]


async def wait_until(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``predicate`` until it is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        await trio.sleep(0.02)
    return value


def wait_until_sync(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {predicate}")
        time.sleep(0.05)
    return value


def json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(path)]
