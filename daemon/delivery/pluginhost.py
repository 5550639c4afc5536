"""The plugin host: the enabled plugins (found by discovery.py) loaded with their settings,
registered with pluggy, started, stopped and called, each failure contained
(containment.py).

Only the names in ``[plugins] enabled`` run, each as an instance of its own: a
fresh object holding the plugin's hook implementations is registered with pluggy, and its
hooks get that instance's ``PluginContext`` as ``app``; ``[plugins.NAME] plugin = "OTHER"``
makes NAME one more instance of the plugin OTHER.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import pluggy
import trio

from ..config.tables import DeliveryConfig, PluginsConfig
from ..config.typed import convert
from ..errors import ConfigError, PluginError
from ..ops.log import describe
from .containment import PluginNursery, uncontained
from .context import PluginContext, PluginRegistry
from .discovery import Found, discover, new_manager, plugin_of

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from ..ops.metrics import Metrics

log = logging.getLogger("pnbridge.plugins")

RELOAD_TIMEOUT = 10.0
REQUEST_HOOKS = ("send_push", "authenticate_report")  # a request waits for their answer
STARTUP_TIMEOUT = 30.0  # seconds one plugin's startup hook may take
RESERVED = ("delivery", "plugin")  # keys of [plugins.NAME] that are not the plugin's settings


@dataclass(frozen=True)
class _NoSettings:
    """The settings of a plugin that declares none: the table must be empty."""


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
