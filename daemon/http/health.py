"""``/healthz``, ``/readyz`` and ``/metrics``: the endpoints that can face only the operator,
and the database's readiness check (ops/readiness.py holds the list of checks)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from operator import methodcaller

import trio
from quart import Response, g, request
from quart_trio import QuartTrio

from ..errors import StoreError
from ..ops.metrics import CONTENT_TYPE, Metrics
from ..ops.readiness import Check, Readiness
from ..storage.writer import Writer

log = logging.getLogger("pnbridge.health")

# /readyz fails once this many storage operations in a row failed, the last one within
# FAILING_FOR seconds (what reports see, whatever the probe below does).
FAILING_IN_A_ROW = 3
FAILING_FOR = 60.0


def database_writable(writer: Writer) -> Check:
    """A check that the database takes what a report does: a probe through the writer (a
    device and a journal event written and rolled back, a commit), and no run of failed
    operations just before (corruption the probe does not reach, say)."""

    async def check() -> str | None:
        try:
            await writer.untracked(methodcaller("probe_write"))
        except StoreError as error:
            return f"cannot write: {error.problem}"
        failing = writer.failing
        recent = trio.current_time() - failing.at < FAILING_FOR
        if failing.count >= FAILING_IN_A_ROW and failing.error is not None and recent:
            return (f"the last {failing.count} storage operations failed: "
                    f"{failing.error.problem}")
        return None

    return check


def device_gauge(metrics: Metrics, writer: Writer) -> Callable[[], Awaitable[None]]:
    """A refresher that sets the devices-stored gauge from the database."""

    async def refresh() -> None:
        metrics.devices.set(await writer.untracked(methodcaller("count_devices")))

    return refresh


def add_health_routes(app: QuartTrio, readiness: Readiness, metrics: Metrics) -> None:
    """Register the three endpoints on ``app`` (they win over the reporter's catch-all)."""

    @app.get("/healthz")
    async def healthz() -> Response:
        g.kind = "health"
        return Response("ok\n", content_type="text/plain")

    @app.get("/readyz")
    async def readyz() -> Response:
        """The checks' problems (503) or each check ``ok``, then the facts (this instance,
        what it delivers); as JSON with ``?format=json``."""
        g.kind = "health"
        problems = await readiness.problems()
        status = 503 if problems else 200
        facts = {name: fact() for name, fact in readiness.facts.items()}
        if request.args.get("format") == "json":
            checks = {name: problems.get(name, "ok") for name in readiness.checks}
            body = json.dumps({"ready": not problems, "checks": checks, **facts}, indent=2)
            return Response(body + "\n", status=status, content_type="application/json")
        if problems:
            lines = "".join(f"{name}: {problem}\n" for name, problem in problems.items())
            log.warning("not ready: %s", "; ".join(lines.splitlines()))
        else:
            lines = "".join(f"{name}: ok\n" for name in readiness.checks) or "ok\n"
        lines += "".join(f"{name}: {_text(fact)}\n" for name, fact in facts.items())
        return Response(lines, status=status, content_type="text/plain")

    @app.get("/metrics")
    async def prometheus() -> Response:
        g.kind = "metrics"
        return Response(await metrics.render(), content_type=CONTENT_TYPE)


def _text(fact: object) -> str:
    """A fact on one line: a list's items, a dict's pairs joined (``none`` when empty)."""
    if isinstance(fact, list):
        return ", ".join(map(str, fact)) or "none"
    if isinstance(fact, dict):
        return "; ".join(f"{key} {value}" for key, value in fact.items()) or "none"
    return str(fact)
