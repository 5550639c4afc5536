"""Reloading the config at run time (SIGHUP).

A reload loads the config file again and hands it to every registered step. A step checks
and prepares what it needs (raising to refuse the new config) and returns a function that
applies it; only when every step has prepared are they all applied, so a bad config changes
nothing. Parts of the daemon that can change at run time (the reporter, logging, plugin
settings, API keys) each add a step. Keys that need new sockets or a new database only take
effect at the next start; a reload says which of them differ.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from .config import Config
from .settings import ConfigError

# Given the new config: check and prepare it, return what applies it; raise to refuse it.
Step = Callable[[Config], Callable[[], None]]

RESTART_ONLY = (
    ("server", "listen"), ("server", "admin_listen"), ("api", "admin_only"),
    ("storage", "path"), ("storage", "busy_timeout"), ("storage", "expire_after"),
)


class Reloader:
    """The config the daemon started with, how to load a new one, and the steps that apply
    it."""

    def __init__(self, config: Config, load: Callable[[], Config]):
        self.started = config
        self._load = load
        self._steps: list[Step] = []

    def add(self, step: Step) -> None:
        self._steps.append(step)

    async def reload(self) -> list[str]:
        """Load and apply the config; return the changed keys that wait for a restart.

        Raises ConfigError, having changed nothing, when the new config is not valid or a
        step refuses it.
        """
        new = await trio.to_thread.run_sync(self._load)
        try:
            apply = [step(new) for step in self._steps]
        except ConfigError:
            raise
        except Exception as error:
            raise ConfigError([f"cannot apply the new config: {error}"]) from error
        for function in apply:
            function()
        return [
            f"{table}.{key}" for table, key in RESTART_ONLY
            if getattr(getattr(new, table), key) != getattr(getattr(self.started, table), key)
        ]
