"""Every hook is documented with its exact signature, its ``app`` argument (the plugin's
context) included, and has a test (Datasette's rule)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from pnbridge.delivery import hookspecs
from pnbridge.delivery.discovery import HOOKS

ROOT = Path(__file__).parent.parent
HOOKS_DOC = (ROOT / "docs" / "plugin-hooks.md").read_text()
HEADINGS = re.findall(r"^## `([^`]+)`$", HOOKS_DOC, re.M)
SECTIONS = dict(re.findall(r"^## `([^`]+)`\n(.*?)(?=^## |\Z)", HOOKS_DOC, re.M | re.S))
WITHOUT_APP = {"settings_class", "register_commands"}  # asked before there is a context
TEST_NAMES = {
    name
    for path in Path(__file__).parent.glob("test_*.py")
    if path.name != "test_docs.py"
    for name in re.findall(r"^(?:async )?def (test_hook_\w+)\(", path.read_text(), re.M)
}


def signature(hook: str) -> str:
    params = inspect.signature(getattr(hookspecs, hook)).parameters
    return f"{hook}({', '.join(params)})"


def test_hooks_are_found():
    assert set(HOOKS) >= {"device_registered", "device_removed", "startup", "shutdown"}


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook):
    assert signature(hook) in HEADINGS, f"docs/plugin-hooks.md lacks ## `{signature(hook)}`"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    assert any(hook in name for name in TEST_NAMES), f"no test_hook_... test names {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_takes_app_and_its_section_documents_it(hook):
    takes = "app" in inspect.signature(getattr(hookspecs, hook)).parameters
    assert takes == (hook not in WITHOUT_APP)
    if takes:
        assert "`app`" in SECTIONS[signature(hook)], f"## `{signature(hook)}` does not say " \
            "what `app` is"


def test_no_heading_without_hook():
    assert sorted(HEADINGS) == sorted(signature(hook) for hook in HOOKS)
