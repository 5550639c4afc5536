"""Readiness (``/readyz``): a list of named checks. The server adds the database's, and any
part of the daemon that runs a task the daemon needs (a plugin's delivery task, say) adds
its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

# A readiness check: None when ready, else a one-line reason.
Check = Callable[[], Awaitable[str | None]]
# A fact /readyz shows beside the checks (this instance's name, what it delivers): a
# string, or a list of them (JSON-able either way).
Fact = Callable[[], Any]


class Readiness:
    """Named readiness checks, each given ``timeout`` seconds."""

    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout
        self.checks: dict[str, Check] = {}
        self.facts: dict[str, Fact] = {}

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    def note(self, name: str, fact: Fact) -> None:
        """Show ``fact()`` as ``name`` beside the checks (never a failure)."""
        self.facts[name] = fact

    async def problems(self) -> dict[str, str]:
        """The reason each failing check gives; empty when everything is ready."""
        found: dict[str, str] = {}
        for name, check in list(self.checks.items()):
            problem: str | None = f"no answer within {self.timeout:g} s"
            with trio.move_on_after(self.timeout):
                try:
                    problem = await check()
                except Exception as error:
                    problem = f"{type(error).__name__}: {error}"
            if problem:
                found[name] = problem
        return found
