"""``/healthz``, ``/readyz`` and ``/metrics``: the endpoints that can face only the operator.

Readiness is a list of named checks; the server adds the database's, and any part of the
daemon that runs a task the daemon needs (a plugin's delivery task, say) adds its own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from quart import Response, g
from quart_trio import QuartTrio

from .metrics import CONTENT_TYPE, Metrics
from .store import Store
from .writer import Writer

log = logging.getLogger("pnbridge.health")

# A readiness check: None when ready, else a one-line reason.
Check = Callable[[], Awaitable[str | None]]


class Readiness:
    """Named readiness checks, each given ``timeout`` seconds."""

    def __init__(self, timeout: float = 5.0):
        self.timeout = timeout
        self.checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

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


def database_writable(writer: Writer) -> Check:
    """A check that the database takes a write (a real one, through the writer)."""

    async def check() -> str | None:
        await writer.call(_probe_write)
        return None

    return check


def _probe_write(store: Store) -> None:
    # Rewriting the schema version with its own value is a harmless write that commits.
    version = store.conn.execute("PRAGMA user_version").fetchone()[0]
    store.conn.execute(f"PRAGMA user_version={int(version)}")


def device_gauge(metrics: Metrics, writer: Writer) -> Callable[[], Awaitable[None]]:
    """A refresher that sets the devices-stored gauge from the database."""

    async def refresh() -> None:
        metrics.devices.set(await writer.call(_count_devices))

    return refresh


def _count_devices(store: Store) -> int:
    return store.conn.execute("SELECT count(*) FROM devices").fetchone()[0]


def add_health_routes(app: QuartTrio, readiness: Readiness, metrics: Metrics) -> None:
    """Register the three endpoints on ``app`` (they win over the reporter's catch-all)."""

    @app.get("/healthz")
    async def healthz() -> Response:
        g.kind = "health"
        return Response("ok\n", content_type="text/plain")

    @app.get("/readyz")
    async def readyz() -> Response:
        g.kind = "health"
        problems = await readiness.problems()
        if problems:
            lines = "".join(f"{name}: {problem}\n" for name, problem in problems.items())
            log.warning("not ready: %s", "; ".join(lines.splitlines()))
            return Response(lines, status=503, content_type="text/plain")
        body = "".join(f"{name}: ok\n" for name in readiness.checks)
        return Response(body or "ok\n", content_type="text/plain")

    @app.get("/metrics")
    async def prometheus() -> Response:
        g.kind = "metrics"
        return Response(await metrics.render(), content_type=CONTENT_TYPE)
