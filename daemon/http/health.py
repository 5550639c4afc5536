"""``/healthz``, ``/readyz`` and ``/metrics``: the endpoints that can face only the operator.

Readiness is a list of named checks; the server adds the database's, and any part of the
daemon that runs a task the daemon needs (a plugin's delivery task, say) adds its own.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Awaitable, Callable

import trio
from quart import Response, g
from quart_trio import QuartTrio

from ..ops.metrics import CONTENT_TYPE, Metrics
from ..storage.sqlite import Store
from ..storage.writer import Writer

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
            await writer.untracked(_probe_write)
        except sqlite3.Error as error:
            return f"cannot write: {storage_problem(error)}"
        failing = writer.failing
        recent = trio.current_time() - failing.at < FAILING_FOR
        if failing.count >= FAILING_IN_A_ROW and failing.error is not None and recent:
            return (f"the last {failing.count} storage operations failed: "
                    f"{storage_problem(failing.error)}")
        return None

    return check


# What an SQLite error code means for an operator, by the start of its name.
_PROBLEMS = (
    ("SQLITE_BUSY", "the database is locked by another process"),
    ("SQLITE_LOCKED", "the database is locked by another process"),
    ("SQLITE_FULL", "the disk is full"),
    ("SQLITE_READONLY", "the database is read-only"),
    ("SQLITE_IOERR", "the database file cannot be written (read-only or failing disk)"),
    ("SQLITE_CANTOPEN", "the database file cannot be opened"),
    ("SQLITE_CORRUPT", "the database file is corrupt"),
)


def storage_problem(error: sqlite3.Error) -> str:
    """A one-line reason for a storage error, e.g. "the disk is full (SQLITE_FULL: ...)"."""
    code = getattr(error, "sqlite_errorname", "") or ""
    said = f"{code}: {error}" if code else str(error)
    for prefix, meaning in _PROBLEMS:
        if code.startswith(prefix):
            return f"{meaning} ({said})"
    return said


def _probe_write(store: Store) -> None:
    """Write where a report writes (a device row, a journal event, their indexes: every page
    from each b-tree's root to where the row goes), roll that back, and commit a harmless
    write (the schema version, rewritten with its own value)."""
    conn = store.conn
    conn.execute("SAVEPOINT probe")
    try:
        conn.execute(
            "INSERT INTO devices (selector, username, extras, created_at, updated_at, "
            "last_seen) VALUES (?, ?, '{}', 0, 0, 0)", (PROBE, PROBE),
        )
        conn.execute(
            "INSERT INTO events (id, kind, reason, selector, username, time, source) "
            "VALUES (?, 'probe', 'probe', ?, ?, 0, '{}')", (PROBE, PROBE, PROBE),
        )
    except sqlite3.Error:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have ended it itself
            conn.execute("ROLLBACK TO probe")
        raise
    conn.execute("ROLLBACK TO probe")
    conn.execute("RELEASE probe")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute(f"PRAGMA user_version={int(version)}")


# The probe's selector, username and event id: nothing a report can send (a NUL in it).
PROBE = "\x00readyz-probe"


def device_gauge(metrics: Metrics, writer: Writer) -> Callable[[], Awaitable[None]]:
    """A refresher that sets the devices-stored gauge from the database."""

    async def refresh() -> None:
        metrics.devices.set(await writer.untracked(_count_devices))

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
