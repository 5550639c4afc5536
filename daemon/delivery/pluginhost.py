"""The pluggy manager: finds plugins, loads the enabled ones with their settings, calls hooks.

Plugins come from three places, all alike once found: the built-ins (modules of
``pnbridge.plugins``), the ``pnbridge`` entry-point group, and ``*.py`` files in the
``[plugins] paths`` directories. A plugin's name is its module name, entry-point name or
file stem. Only the names in ``[plugins] enabled`` run, each as an instance of its own: a
fresh object holding the plugin's hook implementations is registered with pluggy, and its
hooks get that instance's ``PluginContext`` as ``app``; ``[plugins.NAME] plugin = "OTHER"``
makes NAME one more instance of the plugin OTHER.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import pkgutil
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import pluggy
import trio

from ..config.tables import DeliveryConfig, PluginsConfig
from ..config.typed import ConfigError, convert
from ..ops.log import describe
from . import hookspecs
from .context import PluginContext, PluginRegistry

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from ..ops.metrics import Metrics

log = logging.getLogger("pnbridge.plugins")

ENTRY_POINT_GROUP = hookspecs.PROJECT
RELOAD_TIMEOUT = 10.0
REQUEST_HOOKS = ("send_push", "authenticate_report")  # a request waits for their answer
STARTUP_TIMEOUT = 30.0  # seconds one plugin's startup hook may take
RESERVED = ("delivery", "plugin")  # keys of [plugins.NAME] that are not the plugin's settings
HOOKS = tuple(
    name for name, fn in vars(hookspecs).items()
    if inspect.isfunction(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")
)


class PluginError(Exception):
    """A plugin failed where the daemon cannot go on without it (startup)."""


# What a plugin raises that is not the plugin's failure but the daemon's own business: a
# cancellation (a timeout, the shutdown), Ctrl-C, an exit.
NOT_CONTAINED = (trio.Cancelled, KeyboardInterrupt, SystemExit)


def uncontained(error: BaseException) -> BaseException | None:
    """The part of ``error`` (a plugin's) that must go on up (NOT_CONTAINED, also inside an
    exception group), or None when all of it is the plugin's own failure."""
    if isinstance(error, BaseExceptionGroup):
        return error.split(NOT_CONTAINED)[0]
    return error if isinstance(error, NOT_CONTAINED) else None


class PluginNursery:
    """The nursery one plugin starts its background tasks in (``app.nursery``). A task that
    fails after it started is logged and counted, and ends alone: never the daemon."""

    def __init__(self, nursery: trio.Nursery, host: PluginHost, plugin: str):
        self._nursery = nursery
        self._host = host
        self.plugin = plugin

    @property
    def cancel_scope(self) -> trio.CancelScope:
        return self._nursery.cancel_scope

    def start_soon(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None:
        self._nursery.start_soon(self._run, partial(fn, *args), False, name=name or fn)

    async def start(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> Any:
        """Like ``trio.Nursery.start``: a failure before ``task_status.started()`` is
        raised here, to the plugin; one after it is contained."""
        return await self._nursery.start(self._run, partial(fn, *args), True, name=name or fn)

    async def _run(
        self, task: Callable[..., Awaitable[Any]], with_status: bool,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        status = _Status(task_status)
        tasks = self._host.tasks.setdefault(self.plugin, set())
        with trio.CancelScope() as scope:  # cancelled when the plugin restarts alone
            tasks.add(scope)
            try:
                await (task(task_status=status) if with_status else task())
            except BaseException as error:
                if (up := uncontained(error)) is not None:
                    raise up from None
                if with_status and not status.done:
                    raise
                self._host.failed(self.plugin, "task", error)
            finally:
                tasks.discard(scope)


class _Status:
    """A task status that remembers whether the task said it started."""

    def __init__(self, inner: trio.TaskStatus[Any]):
        self.inner = inner
        self.done = False

    def started(self, value: Any = None) -> None:
        self.done = True
        self.inner.started(value)


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


@dataclass(frozen=True)
class _NoSettings:
    """The settings of a plugin that declares none: the table must be empty."""


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


class _Instance:
    """One enabled plugin instance as pluggy sees it: the plugin's hook implementations on
    an object of its own (pluggy registers an object once; a plugin may run twice)."""

    def __init__(self, plugin: Any):
        pm = new_manager()
        for attr in dir(plugin):
            if pm.parse_hookimpl_opts(plugin, attr) is not None:
                setattr(self, attr, getattr(plugin, attr))


class PluginHost:
    """The enabled plugin instances, registered with pluggy, each with its context."""

    def __init__(
        self,
        pm: pluggy.PluginManager,
        contexts: dict[str, PluginContext],
        delivery: dict[str, DeliveryConfig],
        optional: Sequence[str] = (),
        registry: PluginRegistry | None = None,
    ):
        self.pm = pm
        self.contexts = contexts
        """Each enabled instance's ``app``, by name, in ``[plugins] enabled`` order."""
        self.enabled = list(contexts)
        self.optional = set(optional)
        self.delivery = delivery
        self.registry = registry or PluginRegistry()
        """The plugins' own metrics (``app.metrics``), exported once ``observe`` is called."""
        self.running = False
        """Whether the plugins were started (and not yet shut down)."""
        self.metrics: Metrics | None = None
        self._uncounted: Counter[tuple[str, str]] = Counter()  # before there were metrics
        self.tasks: dict[str, set[trio.CancelScope]] = {}
        """Each plugin's background tasks (``app.nursery``), while they run."""

    @property
    def settings(self) -> dict[str, Any]:
        """Each enabled instance's settings dataclass, by name."""
        return {name: context._settings for name, context in self.contexts.items()}

    def observe(self, metrics: Metrics) -> None:
        """Export the plugins' metrics in ``metrics``' registry, and count failures outside
        event delivery there: from now on, and those of the startup before."""
        self.metrics = metrics
        metrics.registry.register(self.registry)
        for (plugin, where), count in self._uncounted.items():
            metrics.plugin_errors.labels(plugin, where).inc(count)
        self._uncounted.clear()

    def _count(self, plugin: str, where: str) -> None:
        if self.metrics is None:
            self._uncounted[plugin, where] += 1
        else:
            self.metrics.plugin_errors.labels(plugin, where).inc()

    def failed(self, plugin: str, where: str, error: BaseException) -> None:
        """Log and count a failure of ``plugin`` outside event delivery, which stays with it."""
        self._count(plugin, where)
        log.error("plugin %s: %s failed: %s", plugin, where, describe(error),
                  exc_info=(type(error), error, error.__traceback__))

    def impl(self, plugin: str, hook: str) -> pluggy.HookImpl | None:
        """``plugin``'s implementation of ``hook``, if it has one."""
        instance = self.pm.get_plugin(plugin)
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            if impl.plugin is instance:
                return impl
        return None

    def is_async(self, plugin: str, hook: str) -> bool:
        impl = self.impl(plugin, hook)
        return impl is not None and inspect.iscoroutinefunction(impl.function)

    def call_sync(self, plugin: str, hook: str, **kwargs: Any) -> Any:
        """Call ``plugin``'s ``hook`` with the arguments it takes, ``app`` its context (a
        coroutine, if async)."""
        impl = self.impl(plugin, hook)
        if impl is None:
            return None
        kwargs["app"] = self.contexts[plugin]
        return impl.function(*(kwargs[name] for name in impl.argnames))

    async def call(self, plugin: str, hook: str, **kwargs: Any) -> Any:
        """Call ``plugin``'s ``hook`` on the trio loop, awaiting it if it is async."""
        result = self.call_sync(plugin, hook, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def implementers(self, hook: str) -> list[str]:
        """The enabled plugins that implement ``hook``, in the order pluggy asks them (the
        plugin enabled last first, unless ``tryfirst``/``trylast`` say otherwise)."""
        impls = getattr(self.pm.hook, hook).get_hookimpls()
        return [impl.plugin_name for impl in reversed(impls)]

    async def call_first(self, hook: str, *, threads: bool = False, **kwargs: Any) -> Any:
        """Call a ``firstresult`` hook whose implementations may be async: the first answer
        that is not None, or None. With ``threads``, a plain implementation runs in a worker
        thread (it may block)."""
        for name in self.implementers(hook):
            if threads and not self.is_async(name, hook):
                result = await trio.to_thread.run_sync(
                    partial(self.call_sync, name, hook, **kwargs)
                )
            else:
                result = await self.call(name, hook, **kwargs)
            if result is not None:
                return result
        return None

    def attach(self, nursery: trio.Nursery) -> None:
        """Give each plugin's ``app.nursery`` a view of ``nursery`` for its tasks."""
        for name, context in self.contexts.items():
            context._nursery = PluginNursery(nursery, self, name)

    async def startup(self) -> None:
        """Run the ``startup`` hooks in ``enabled`` order, each for at most STARTUP_TIMEOUT
        seconds (``attach`` first). An optional plugin that fails is logged and left out; on
        any other failure, shut down the started ones and raise PluginError."""
        started: list[str] = []
        for name in list(self.enabled):
            if (problem := await self._start(name)) is None:
                started.append(name)
            elif name in self.optional:
                log.error("plugin %s: startup failed: %s; running without it "
                          "(plugins.optional)", name, problem)
                self._leave_out(name)
            else:
                await self.shutdown(started)
                raise PluginError(f"plugin {name}: startup failed: {problem}")
        self.running = True

    def keep_only(self, names: Sequence[str]) -> None:
        """Leave out the enabled plugins not in ``names``: a command that needs only some
        (``pnbridge push`` its push transports) starts no other, whose startup would create
        its files as the command's user (root)."""
        for name in [name for name in self.enabled if name not in names]:
            self._leave_out(name)

    def _leave_out(self, name: str) -> None:
        """Unregister an optional plugin that cannot run: no hook of it is called again."""
        self.pm.unregister(name=name)
        self.enabled.remove(name)
        self.contexts.pop(name, None)
        self.delivery.pop(name, None)

    async def shutdown(self, names: list[str] | None = None) -> None:
        """Run the ``shutdown`` hooks in reverse order; log failures, stop none."""
        self.running = False
        for name in reversed(self.enabled if names is None else names):
            await self._shutdown_hook(name)

    def restartable(self, name: str) -> bool:
        """Whether ``name`` may restart alone with new settings on reload: it only takes
        events (no hook a request waits for)."""
        return all(self.impl(name, hook) is None for hook in REQUEST_HOOKS)

    async def restart(self, name: str, settings: Any) -> str | None:
        """Restart the running plugin ``name`` with ``settings``: its ``shutdown`` hook, its
        tasks cancelled, its ``startup`` hook with the new settings. When that startup fails,
        start it again with its old settings and return why."""
        assert self.running
        context = self.contexts[name]
        old = context._settings
        await self._stop(name)
        context._settings = settings
        if (problem := await self._start(name)) is None:
            return None
        await self._stop(name)
        context._settings = old
        if (again := await self._start(name)) is not None:
            log.error("plugin %s: startup with its old settings failed too: %s", name, again)
        return problem

    async def _stop(self, name: str) -> None:
        await self._shutdown_hook(name)
        for scope in self.tasks.pop(name, set()):
            scope.cancel()

    async def _shutdown_hook(self, name: str) -> None:
        """``name``'s ``shutdown`` hook; its failure is logged and counted, never raised."""
        try:
            await self.call(name, "shutdown")
        except BaseException as error:
            if (up := uncontained(error)) is not None:
                raise up from None
            self.failed(name, "shutdown", error)

    async def _start(self, name: str) -> str | None:
        """Run ``name``'s startup hook; None when it succeeded, else what failed (counted)."""
        try:
            with trio.fail_after(STARTUP_TIMEOUT):
                await self.call(name, "startup")
        except BaseException as error:
            if (up := uncontained(error)) is not None:
                raise up from None
            self._count(name, "startup")
            return (f"took more than {STARTUP_TIMEOUT:g}s"
                    if isinstance(error, trio.TooSlowError) else describe(error))
        return None

    async def reload(self) -> None:
        """Run the ``reload`` hooks of the running plugins (SIGHUP), a plain one in a worker
        thread, each for at most RELOAD_TIMEOUT seconds; log failures, stop none."""
        for name in self.enabled if self.running else ():
            if self.impl(name, "reload") is None:
                continue
            with trio.move_on_after(RELOAD_TIMEOUT) as scope:
                try:
                    if self.is_async(name, "reload"):
                        await self.call(name, "reload")
                    else:
                        call = partial(self.call_sync, name, "reload")
                        await trio.to_thread.run_sync(call, abandon_on_cancel=True)
                except BaseException as error:
                    if (up := uncontained(error)) is not None:
                        raise up from None
                    self.failed(name, "reload", error)
            if scope.cancelled_caught:
                log.error("plugin %s: reload took more than %gs", name, RELOAD_TIMEOUT)


def load_plugins(config: PluginsConfig) -> PluginHost:
    """Find the plugins, check ``config`` against them, register the enabled instances.

    Raises ConfigError naming every problem (``plugins.enabled``, ``plugins.NAME.key``...).
    """
    errors: list[str] = []
    found = discover(config.paths, errors)
    enabled = list(config.enabled)
    for name in config.optional:
        if name not in config.enabled:
            errors.append(f"plugins.optional: {name} is not in plugins.enabled")
    code = {name: plugin_of(name, config.tables.get(name, {}), found, errors)
            for name in dict.fromkeys([*config.enabled, *config.tables])}
    for name in config.enabled:
        entry = found.get(code[name] or "")
        if code[name] is None:
            continue
        if entry is None:
            known = ", ".join(sorted(found)) or "none"
            errors.append(f"plugins.enabled: no plugin named {name} (found: {known})")
        elif entry.error and name in config.optional:
            log.error("plugin %s %s; running without it (plugins.optional)", name, entry.error)
            enabled.remove(name)
        elif entry.error:
            errors.append(f"plugins.enabled: plugin {name} {entry.error}")
    for name in config.tables:
        if code[name] is not None and code[name] not in found:
            errors.append(f"plugins.{name}: no plugin named {name}")
    settings: dict[str, Any] = {}
    delivery: dict[str, DeliveryConfig] = {}
    for name, plugin in code.items():
        entry = found.get(plugin or "")
        if entry is None or entry.plugin is None:
            continue
        table = dict(config.tables.get(name, {}))
        table.pop("plugin", None)
        key = f"plugins.{name}"
        delivery_config = convert(DeliveryConfig, table.pop("delivery", {}), f"{key}.delivery",
                                  errors)
        if delivery_config is not None:  # else errors says why
            delivery[name] = delivery_config
        cls = _settings_class(entry, errors)
        if cls is not None:
            settings[name] = convert(cls, table, key, errors)
    if errors:
        raise ConfigError(errors)
    pm = new_manager()
    registry = PluginRegistry()
    contexts: dict[str, PluginContext] = {}
    for name in enabled:
        plugin = code[name]
        assert plugin is not None  # else plugin_of added an error, raised above
        pm.register(_Instance(found[plugin].plugin), name=name)
        contexts[name] = PluginContext(name, settings[name], plugin=plugin, registry=registry)
    pm.check_pending()
    return PluginHost(pm, contexts, {n: delivery[n] for n in enabled}, config.optional,
                      registry)


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


def _settings_class(entry: Found, errors: list[str]) -> type[DataclassInstance] | None:
    pm = new_manager()
    pm.register(entry.plugin, name=entry.name)
    try:
        classes = [cls for cls in pm.hook.settings_class() if cls is not None]
    except BaseException as error:
        if (up := uncontained(error)) is not None:
            raise up from None
        errors.append(f"plugins.{entry.name}: settings_class() failed: {describe(error)}")
        return None
    if not classes:
        return _NoSettings
    if not (isinstance(classes[0], type) and dataclasses.is_dataclass(classes[0])):
        errors.append(f"plugins.{entry.name}: settings_class() must return a dataclass")
        return None
    return classes[0]
