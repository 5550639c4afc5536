"""Plugin discovery: every plugin there is, from three places, all alike once found: the
built-ins (modules of ``pnbridge.plugins``), the ``pnbridge`` entry-point group, and ``*.py``
files in the ``[plugins] paths`` directories. A plugin's name is its module name,
entry-point name or file stem; an instance (``[plugins.NAME] plugin = "OTHER"``) runs the
plugin OTHER under the name NAME. Discovery loads and inspects; it registers nothing
(pluginhost.py does, for the enabled ones)."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import pkgutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import pluggy

from ..config.tables import PluginsConfig
from ..ops.log import describe
from . import hookspecs
from .containment import uncontained

log = logging.getLogger("pnbridge.plugins")

ENTRY_POINT_GROUP = hookspecs.PROJECT
HOOKS = tuple(
    name for name, fn in vars(hookspecs).items()
    if inspect.isfunction(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")
)


@dataclass
class Found:
    """A plugin found on disk or in the environment, loadable or not."""

    name: str
    source: str
    plugin: Any = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self, enabled: bool) -> dict[str, Any]:
        return {
            "name": self.name, "enabled": enabled, "source": self.source,
            "hooks": self.hooks, "error": self.error,
        }


def new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def discover(paths: Sequence[str], errors: list[str] | None = None) -> dict[str, Found]:
    """Every plugin there is, by name. Problems with ``paths`` go to ``errors``."""
    found: dict[str, Found] = {}

    def add(name: str, source: str, load: Any) -> None:
        if name in found:
            found[name].error = f"two plugins named {name}: {found[name].source} and {source}"
            found[name].plugin = None
            return
        entry = found[name] = Found(name, source)
        try:
            entry.plugin = load()
        except BaseException as error:
            if (up := uncontained(error)) is not None:
                raise up from None
            entry.error = f"cannot be loaded: {describe(error)}"
            log.debug("plugin %s from %s cannot be loaded", name, source, exc_info=True)

    from .. import plugins as builtins

    for module in pkgutil.iter_modules(builtins.__path__):
        if not module.name.startswith("_"):
            add(module.name, "built-in", lambda m=module.name: importlib.import_module(
                f"{builtins.__name__}.{m}"))
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = f" ({point.dist.name} {point.dist.version})" if point.dist else ""
        add(point.name, f"entry point {point.value}{dist}", point.load)
    for index, directory in enumerate(paths):
        if not Path(directory).is_dir():
            if errors is not None:
                errors.append(f"plugins.paths[{index}]: {directory} is not a directory")
            continue
        for file in sorted(Path(directory).glob("*.py")):
            if not file.name.startswith("_"):
                add(file.stem, str(file.resolve()), lambda f=file: _load_file(f))
    for entry in found.values():
        if entry.plugin is not None:
            _inspect(entry)
    return found


def _load_file(path: Path) -> Any:
    name = f"pnbridge_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and type hints look their module up here
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _inspect(entry: Found) -> None:
    """Fill in the hooks ``entry`` implements, or the error that keeps it from loading."""
    pm = new_manager()
    try:
        pm.register(entry.plugin, name=entry.name)
    except (pluggy.PluginValidationError, ValueError) as error:
        entry.error, entry.plugin = str(error), None
        return
    callers = pm.get_hookcallers(entry.plugin) or []
    entry.hooks = sorted(caller.name for caller in callers)
    unknown = [name for name in entry.hooks if name not in HOOKS]
    if unknown:
        entry.error = f"implements unknown hook(s): {', '.join(unknown)}"
        entry.plugin = None


def with_instances(found: dict[str, Found], config: PluginsConfig) -> dict[str, Found]:
    """``found`` and, after it, each instance ``config`` names (``[plugins.NAME] plugin``) as
    a plugin of its own, whose source says which it runs (for ``pnbridge plugins``)."""
    instances = {
        name: dataclasses.replace(found[table["plugin"]], name=name,
                                  source=f"instance of {table['plugin']}")
        for name, table in config.tables.items()
        if name not in found and table.get("plugin") in found
    }
    return {**found, **instances}


def plugin_of(name: str, table: dict[str, Any], found: dict[str, Found],
              errors: list[str]) -> str | None:
    """The plugin the instance ``name`` runs: its own, or its table's ``plugin`` key (None
    when that key is wrong, with the error in ``errors``)."""
    if "plugin" not in table:
        return name
    plugin = table["plugin"]
    if not isinstance(plugin, str) or plugin not in found:
        known = ", ".join(sorted(found)) or "none"
        errors.append(f"plugins.{name}.plugin: no plugin named {plugin!r} (found: {known})")
        return None
    if name in found and name != plugin:
        errors.append(f"plugins.{name}.plugin: {name} is a plugin's own name; give the "
                      f"instance of {plugin} another")
        return None
    return plugin


def add_commands(cli: click.Group) -> list[str]:
    """Let the built-in and entry-point plugins add their commands to ``cli``
    (``register_commands``), none under a name ``cli`` has; what went wrong, a line each. A
    file in a ``[plugins] paths`` directory adds none: which directories those are is in the
    config, which is read once a command runs."""
    problems: list[str] = []
    for entry in discover([]).values():
        if entry.plugin is None or "register_commands" not in entry.hooks:
            continue
        group = click.Group()
        pm = new_manager()
        pm.register(entry.plugin, name=entry.name)
        try:
            pm.hook.register_commands(cli=group)
        except Exception as error:
            problems.append(f"plugin {entry.name}: register_commands failed: {describe(error)}")
            continue
        for name, command in group.commands.items():
            if name in cli.commands:
                problems.append(f"plugin {entry.name}: a command {name} exists already; "
                                "the plugin's is left out")
            else:
                cli.add_command(command, name)
    return problems
