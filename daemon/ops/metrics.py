"""The Prometheus metrics, one registry per daemon (so daemons in one process never collide)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import get_args

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..model import DeliveryOutcome, DeviceOutcome, ReportOutcome
from .activity import Activity
from .log import describe

__all__ = ["CONTENT_TYPE", "Metrics"]

log = logging.getLogger("pnbridge.metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
PUSH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every metric pnbridge exports, and what to refresh before a scrape."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.reports = Counter(
            "pnbridge_reports", "Reporter requests by route kind (token, removal) and outcome "
            f"({', '.join(get_args(ReportOutcome))}).",
            ["kind", "outcome"], registry=r,
        )
        self.request_latency = Histogram(
            "pnbridge_request_duration_seconds",
            "HTTP request latency by route kind (token, removal, health, metrics, none).",
            ["kind"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.devices = Gauge("pnbridge_devices_stored", "Devices in the database.", registry=r)
        self.journal_pending = Gauge(
            "pnbridge_journal_pending_events",
            "Journal events a plugin has not yet received.", ["plugin"], registry=r,
        )
        self.journal_oldest_age = Gauge(
            "pnbridge_journal_oldest_pending_age_seconds",
            "Age of the oldest journal event a plugin has not yet received.",
            ["plugin"], registry=r,
        )
        self.deliveries = Counter(
            "pnbridge_deliveries", "Event deliveries to plugins by plugin and outcome "
            f"({', '.join(get_args(DeliveryOutcome))}).", ["plugin", "outcome"], registry=r,
        )
        self.plugin_errors = Counter(
            "pnbridge_plugin_errors", "Plugin failures outside event delivery, each contained "
            "to its plugin, by plugin and where (startup of an optional plugin, shutdown, reload, "
            "task).",
            ["plugin", "where"], registry=r,
        )
        self.pushes = Counter(
            "pnbridge_pushes", "Pushes sent to devices by verb and outcome "
            f"({', '.join(get_args(DeviceOutcome))}).",
            ["verb", "outcome"], registry=r,
        )
        self.push_requests = Counter(
            "pnbridge_push_requests", "Push API requests by verb and answer: the HTTP status, "
            "or client-left (the connection was reset before the answer; the push ran to its "
            "end).",
            ["verb", "answer"], registry=r,
        )
        self.push_requests_in_flight = Gauge(
            "pnbridge_push_requests_in_flight",
            "Push requests whose fan-out is under way ([api] max_in_flight at most).", registry=r,
        )
        self.push_latency = Histogram(
            "pnbridge_push_duration_seconds", "Push transport latency by verb.",
            ["verb"], buckets=PUSH_BUCKETS, registry=r,
        )
        self.push_config_errors = Counter(
            "pnbridge_push_config_errors", "Pushes whose transport answer points at a wrong "
            "configuration (pnmediator's url answering a 404 that is not pnmediator's).",
            registry=r,
        )
        self.push_history_written = Counter(
            "pnbridge_push_history_written", "Push history records written to the store.",
            registry=r,
        )
        self.push_history_dropped = Counter(
            "pnbridge_push_history_dropped", "Push history records dropped: too many were "
            "waiting to be written (the store slow or failing).", registry=r,
        )
        self.task_errors = Counter(
            "pnbridge_task_errors", "Errors background tasks survived, by task (expiry, "
            "delivery, pruning, cursors, metrics, push history): a row skipped or a pass to "
            "be run again.",
            ["task"], registry=r,
        )
        self.connection_errors = Counter(
            "pnbridge_connection_errors", "Client connections that failed inside the HTTP "
            "server (contained: logged at debug, the daemon serves on), by exception.",
            ["error"], registry=r,
        )
        self.agi_sessions = Counter(
            "pnbridge_agi_sessions", "FastAGI sessions by script (wake, missed, "
            "answered-elsewhere, - when unknown) and outcome (the PNBRIDGE_STATUS set: sent, "
            "none, failed, unknown-user, queued, error; or hangup, timeout, garbage).",
            ["script", "outcome"], registry=r,
        )
        self.agi_refused = Counter(
            "pnbridge_agi_refused", "FastAGI connections closed at once: [agi] max_sessions "
            "were under way.", registry=r,
        )
        self.instance_info = Gauge(
            "pnbridge_instance_info", "This instance's name ([server] instance): always 1.",
            ["instance"], registry=r,
        )
        self.lease_held = Gauge(
            "pnbridge_lease_held", "1 while this instance holds the lease (delivery:PLUGIN: "
            "it delivers that plugin's events; maintenance: it expires devices and prunes), "
            "else 0.", ["lease"], registry=r,
        )
        # Reports and pushes per minute over the last hour (the console's plot).
        self.activity = Activity(time.time())
        # Async callables that update gauges from their source just before a scrape.
        self.refreshers: list[Callable[[], Awaitable[None]]] = []

    async def render(self) -> bytes:
        """The metrics in the Prometheus text format, gauges refreshed first."""
        for refresh in self.refreshers:
            try:
                await refresh()
            except Exception as error:  # e.g. the database is locked: serve the last values
                log.warning("metrics: cannot refresh gauges: %s", describe(error))
                self.task_errors.labels("metrics").inc()
        return generate_latest(self.registry)
