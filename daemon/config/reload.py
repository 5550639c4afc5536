"""Reloading the config at run time (SIGHUP).

A reload loads the config file again, with the settings of its plugins, and hands both to
every registered step. A step checks and prepares what it needs (raising to refuse the new
config) and returns a function that applies it; only when every step has prepared are they
all applied, so a bad config (unreadable, not UTF-8, not TOML, a wrong key or type, an
unreadable users file, a bad plugin setting) changes nothing. Parts of the daemon that can
change at run time (the reporter, logging, API keys, plugin delivery limits and journal
retention) each add a step; a running plugin that only takes events restarts alone with its
new settings. The keys of ``running.restart_values`` (sockets, the database, which plugins
run, the settings of a plugin a request waits for) only take effect at the next start: a
reload names those that differ.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from ..delivery.pluginhost import PluginHost, load_plugins
from ..errors import ConfigError
from ..ops.log import describe
from .running import changed, restart_values
from .tables import Config

# Given the new config and its plugins: check and prepare, return what applies it; raise to
# refuse it.
Step = Callable[[Config, PluginHost], Callable[[], None]]


class Reloader:
    """The config the daemon started with, how to load a new one, and the steps that apply
    it."""

    def __init__(self, config: Config, load: Callable[[], Config], plugins: PluginHost):
        self.started = config
        self.plugins = plugins
        self._load = load
        self._steps: list[Step] = []

    def add(self, step: Step) -> None:
        self._steps.append(step)

    def _load_all(self) -> tuple[Config, PluginHost]:
        new = self._load()
        return new, load_plugins(new.plugins)

    async def reload(self) -> list[str]:
        """Load and apply the config; return the changed keys that wait for a restart.

        Raises ConfigError, having changed nothing, when the new config cannot be read, is
        not valid, or a step refuses it.
        """
        try:
            new, plugins = await trio.to_thread.run_sync(self._load_all)
            apply = [step(new, plugins) for step in self._steps]
        except ConfigError:
            raise
        except Exception as error:
            raise ConfigError([f"cannot load the new config: {describe(error)}"]) from error
        for function in apply:
            function()
        both = [name for name in self.plugins.enabled
                if name in plugins.settings and not self.plugins.restartable(name)]
        return changed(
            restart_values(self.started, {n: self.plugins.settings[n] for n in both}),
            restart_values(new, {n: plugins.settings[n] for n in both}),
        )
