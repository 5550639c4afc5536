"""The public plugin API is exactly what ``pnbridge`` exports: the built-in plugins, the test
plugins and the docs' examples import nothing else of pnbridge, and the docs list it all."""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

import pnbridge
import pytest

ROOT = Path(__file__).parent.parent
PLUGINS = sorted((ROOT / "plugins").glob("[!_]*.py")) + sorted(
    (Path(__file__).parent / "plugins").rglob("*.py")
)
DOCS = [ROOT / "docs" / "writing-plugins.md", ROOT / "docs" / "plugin-hooks.md",
        *sorted((ROOT / "docs" / "plugins").glob("*.md"))]


def pnbridge_imports(tree: ast.AST) -> list[str]:
    """What ``tree`` imports of pnbridge that is not a top-level name of ``pnbridge.__all__``
    (a module of it, or a name it does not export), as written."""
    wrong = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            wrong += [a.name for a in node.names if a.name.startswith("pnbridge.")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or module.startswith("pnbridge."):
                wrong.append("." * node.level + module)
            elif module == "pnbridge":
                wrong += [f"pnbridge.{a.name}" for a in node.names
                          if a.name not in pnbridge.__all__]
    return wrong


def test_the_checker_finds_what_is_not_public():
    code = ("import pnbridge.store\nfrom pnbridge.doctor import Finding\n"
            "from pnbridge import hookimpl, log\nfrom . import auditlog\n")
    assert pnbridge_imports(ast.parse(code)) == [
        "pnbridge.store", "pnbridge.doctor", "pnbridge.log", ".",
    ]


def test_all_is_what_the_package_has():
    assert sorted(pnbridge.__all__) == sorted(set(pnbridge.__all__))
    assert all(hasattr(pnbridge, name) for name in pnbridge.__all__)


@pytest.mark.parametrize("path", PLUGINS, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugin_imports_only_the_public_api(path):
    assert pnbridge_imports(ast.parse(path.read_text())) == []


@pytest.mark.parametrize("path", sorted((ROOT / "plugins").glob("[!_]*.py")),
                         ids=lambda p: p.name)
def test_builtin_plugin_keeps_no_state_in_module_globals(path):
    """Everything a built-in keeps lives in its ``app`` (so it can run twice): no function
    rebinds a module global."""
    tree = ast.parse(path.read_text())
    assert [node.names for node in ast.walk(tree) if isinstance(node, ast.Global)] == []


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_docs_examples_import_only_the_public_api(path):
    text = path.read_text()
    assert not re.search(r"from pnbridge\.\w+ import|import pnbridge\.\w+", text)
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        assert pnbridge_imports(ast.parse(textwrap.dedent(block))) == [], block


def test_writing_plugins_lists_the_public_api():
    """The table under "The public API" names every exported name, and nothing else."""
    text = (ROOT / "docs" / "writing-plugins.md").read_text()
    section = text.split("## The public API", 1)[1].split("\n## ", 1)[0]
    listed = [name for row in re.findall(r"^\| (`.*?) \|", section, re.M)
              for name in re.findall(r"`(\w+)`", row)]
    assert sorted(listed) == sorted(pnbridge.__all__)
