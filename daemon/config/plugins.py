"""``[plugins]`` and each plugin's ``[plugins.NAME.delivery]``: which plugins run, how
their events are retried, the journal's retention, the leases of delivery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .typed import check


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _at_least_zero(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _at_least_one(value: int) -> str | None:
    return None if value >= 1 else "must be 1 or more"


def _check_enabled(names: list[str]) -> str | None:
    twice = sorted({n for n in names if names.count(n) > 1})
    return f"listed twice: {', '.join(twice)}" if twice else None


@dataclass(frozen=True)
class DeliveryConfig:
    """How one plugin's events are retried: ``[plugins.NAME.delivery]``."""

    max_attempts: int = field(default=10, metadata=check(_at_least_one))
    max_age: float = field(default=86400.0, metadata=check(_positive))
    timeout: float = field(default=30.0, metadata=check(_positive))
    backoff: float = field(default=1.0, metadata=check(_positive))
    max_backoff: float = field(default=600.0, metadata=check(_positive))


@dataclass(frozen=True)
class PluginsConfig:
    """``[plugins]``; ``tables`` holds the ``[plugins.NAME]`` tables, checked by pluginhost."""

    enabled: list[str] = field(default_factory=list, metadata=check(_check_enabled))
    # Enabled plugins the daemon may run without: one that cannot be loaded or whose
    # startup fails is logged and left out instead of stopping startup.
    optional: list[str] = field(default_factory=list, metadata=check(_check_enabled))
    paths: list[str] = field(default_factory=list)
    retention: float = field(default=7 * 86400.0, metadata=check(_at_least_zero))
    prune_interval: float = field(default=600.0, metadata=check(_positive))
    # Seconds a delivery or maintenance lease lasts unless renewed (every third of it):
    # a dead holder's plugins are taken over within this (docs/cluster.md).
    lease_time: float = field(
        default=15.0, metadata=check(lambda t: None if t >= 3 else "must be 3 or more"))
    # Seconds between looks at the journal for events other processes wrote.
    poll_interval: float = field(default=0.5, metadata=check(_positive))
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
