"""What a plugin's hooks get as ``app``: one ``PluginContext`` per enabled plugin instance.

It carries the instance's name, its typed settings, a logger, metrics in the daemon's
registry, a slot for the state it keeps between hooks, and (while it runs) the nursery for
its background tasks. Everything a plugin keeps lives here, not in module globals, so one
plugin can run as several instances (``[plugins.NAME] plugin = "webhook"``).
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from .containment import PluginNursery

T = TypeVar("T")

KINDS: dict[str, type[Counter | Gauge | Histogram]] = {
    "counter": Counter, "gauge": Gauge, "histogram": Histogram,
}


class PluginRegistry(CollectorRegistry):
    """The plugins' metrics, exported by the daemon's registry; each made once, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.made: dict[str, tuple[str, tuple[str, ...], Any]] = {}


class PluginMetrics:
    """``app.metrics``: a plugin's metrics, exported by the daemon's ``/metrics``.

    ``counter``, ``gauge`` and ``histogram`` make (or, called again, e.g. after a restart or
    by another instance of the plugin, return) the metric ``pnbridge_plugin_PLUGIN_NAME``
    with a first label ``plugin``, the instance's name, filled in: ``inc``/``set``/
    ``observe`` it directly, or ``labels(...)`` for the other labels."""

    def __init__(self, registry: PluginRegistry, plugin: str, instance: str):
        self._registry = registry
        self._prefix = "pnbridge_plugin_" + re.sub(r"\W", "_", plugin)
        self._instance = instance

    def counter(self, name: str, doc: str, labels: Sequence[str] = ()) -> PluginMetric:
        return self._metric("counter", name, doc, labels)

    def gauge(self, name: str, doc: str, labels: Sequence[str] = ()) -> PluginMetric:
        return self._metric("gauge", name, doc, labels)

    def histogram(
        self, name: str, doc: str, labels: Sequence[str] = (),
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> PluginMetric:
        return self._metric("histogram", name, doc, labels, buckets=buckets)

    def _metric(
        self, kind: str, name: str, doc: str, labels: Sequence[str], **options: Any
    ) -> PluginMetric:
        full = f"{self._prefix}_{name}"
        names = ("plugin", *labels)
        if full not in self._registry.made:
            metric = KINDS[kind](full, doc, names, registry=self._registry, **options)
            self._registry.made[full] = (kind, names, metric)
        made_kind, made_names, metric = self._registry.made[full]
        if (made_kind, made_names) != (kind, names):
            raise ValueError(f"metric {full} is a {made_kind} labelled {', '.join(made_names)}")
        return PluginMetric(metric, self._instance)


class PluginMetric:
    """One metric of a plugin, its ``plugin`` label filled in with the instance's name."""

    def __init__(self, metric: Any, instance: str):
        self._metric = metric
        self._instance = instance

    def labels(self, *values: str) -> Any:
        """The child for the metric's other labels, in order (``.inc()``, ``.set()``...)."""
        return self._metric.labels(self._instance, *values)

    def inc(self, amount: float = 1) -> None:
        self.labels().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self.labels().dec(amount)

    def set(self, value: float) -> None:
        self.labels().set(value)

    def observe(self, value: float) -> None:
        self.labels().observe(value)


class PluginContext:
    """What every hook may take as ``app``: one per enabled plugin instance.

    - ``name``: the instance's name (``[plugins] enabled``); ``plugin``: the plugin's own name
      (the same, unless ``[plugins.NAME] plugin`` makes NAME an instance of it);
    - ``settings(cls)``: the instance's ``[plugins.NAME]`` table as ``cls``, its
      ``settings_class``;
    - ``log``: the logger ``pnbridge.plugins.NAME``;
    - ``metrics``: counters, gauges and histograms in the daemon's ``/metrics``;
    - ``state``: anything the plugin keeps between hooks (None until it sets it);
    - ``nursery``: for background tasks, between ``startup`` and ``shutdown`` (and in
      ``doctor``);
    - ``version``: pnbridge's version.

    A test builds one with ``PluginContext("eventlog", Settings(...))``.
    """

    def __init__(
        self, name: str, settings: Any = None, *, plugin: str | None = None,
        registry: PluginRegistry | None = None,
    ):
        self.name = name
        self.plugin = plugin or name
        self.log = logging.getLogger(f"pnbridge.plugins.{name}")
        self.metrics = PluginMetrics(registry or PluginRegistry(), self.plugin, name)
        self.state: Any = None
        self._settings = settings
        self._nursery: PluginNursery | None = None

    def __repr__(self) -> str:
        return f"<PluginContext {self.name}>"

    def settings(self, cls: type[T]) -> T:
        """This instance's settings, which ``cls`` (its ``settings_class``) must be the type of."""
        if not isinstance(self._settings, cls):
            raise LookupError(f"{cls.__name__} is not the settings_class of plugin {self.name}")
        return self._settings

    @property
    def nursery(self) -> PluginNursery:
        """Start background tasks here; they are cancelled after the plugin's ``shutdown``. A
        task that fails is logged and counted (``pnbridge_plugin_errors_total``) and ends
        alone."""
        if self._nursery is None:
            raise RuntimeError(f"plugin {self.name}: app.nursery exists from startup to shutdown")
        return self._nursery

    @property
    def version(self) -> str:
        return importlib.metadata.version("pnbridge")
