"""Storage faults on a running daemon (a real child process, a real SQLite file or a real
PostgreSQL server): the database locked by another session (both engines), the server stopped
or killed (PostgreSQL), the file made read-only or on a full disk (SQLite). While the fault
lasts reports and the push API answer 503, /readyz says why and the daemon stays up; once it
clears, everything works again without a restart, and every answered report's event reaches
the plugins.

A full disk is out of reach for PostgreSQL here: its data directory belongs to the test
server, on the host's filesystem (a small tmpfs would have to hold the whole cluster, and
the server's own handling of ENOSPC, a PANIC and a restart from the WAL, is what the
killed-server test covers)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import Process, pnbridge
from engines import StoreEngine
from faults import (
    can_make_immutable,
    daemon_toml,
    disk_full,
    file_size_limit,
    push,
    read_only,
    recorded_ids,
    report_status,
    small_filesystem,
)
from plugintools import wait_until_sync
from pnbridge.model import Report

Fault = Callable[[Process], contextlib.AbstractContextManager]


def check_fault(spawn, tmp_path: Path, engine: StoreEngine, fault: Fault, why: str) -> None:
    """Reports before, during and after ``fault(daemon)``; what each must get."""
    daemon = spawn(daemon_toml(tmp_path, Path(engine.path), url=engine.storage.get("url")))
    with httpx.Client(base_url=daemon.url(), timeout=10) as client:
        answered = [s for s in ("before-1", "before-2") if report_status(client, s) == 200]
        assert len(answered) == 2
        wait_until_sync(lambda: len(recorded_ids(tmp_path)) == 2)
        with fault(daemon):
            statuses = [report_status(client, f"during-{i}") for i in range(40)]
            assert 503 in statuses, statuses
            assert set(statuses) <= {200, 503}, statuses  # some may fit in space left
            answered += [f"during-{i}" for i, s in enumerate(statuses) if s == 200]
            assert "storage unavailable" in client.get(
                "/token/", params={"username": "u", "selector": "x", "pushToken": "t"}).text
            assert push(client).status_code in (200, 503)
            ready = client.get("/readyz")
            assert ready.status_code == 503 and why in ready.text, ready.text
            assert client.get("/healthz").status_code == 200
            assert client.get("/metrics").status_code == 200
        wait_until_sync(lambda: report_status(client, "after-1") == 200, timeout=10)
        answered.append("after-1")
        wait_until_sync(lambda: client.get("/readyz").status_code == 200, timeout=10)
        assert push(client).status_code == 200
    assert daemon.popen.poll() is None, daemon.log
    devices, events = engine.stored()
    assert set(answered) <= set(devices)
    wait_until_sync(lambda: set(recorded_ids(tmp_path)) >= set(events), timeout=15)
    assert "Traceback" not in daemon.log, daemon.log


def test_locked_by_another_process(engine, spawn, tmp_path):
    """The write lock held by another session (tests/engines.py's ``locked``): a report
    waits busy_timeout, then answers 503; the push API still reads the devices."""
    daemon = spawn(daemon_toml(tmp_path, Path(engine.path), url=engine.storage.get("url")))
    with httpx.Client(base_url=daemon.url(), timeout=10) as client:
        assert report_status(client, "before") == 200
        with engine.locked():
            assert report_status(client, "during") == 503
            answer = push(client)  # devices are read on a read-only connection: no wait
            assert answer.status_code == 200, answer.text
            assert answer.json()["devices"][0]["outcome"] == "failed"  # pnmediator: port 9
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert "database: cannot write:" in ready.text
            assert "the database is locked by another process" in ready.text
        wait_until_sync(lambda: report_status(client, "after") == 200, timeout=10)
        wait_until_sync(lambda: client.get("/readyz").status_code == 200, timeout=10)
        assert push(client).status_code == 200
    devices, events = engine.stored()
    assert {"before", "after"} <= set(devices) and "during" not in devices
    wait_until_sync(lambda: set(recorded_ids(tmp_path)) >= set(events), timeout=15)
    assert daemon.popen.poll() is None and "Traceback" not in daemon.log, daemon.log


def test_read_only_database(spawn, tmp_path):
    """SQLite's file made immutable (PostgreSQL's files are its server's)."""
    if not can_make_immutable(tmp_path):
        pytest.skip("chattr +i does not work here")
    db = tmp_path / "pnbridge.db"
    check_fault(spawn, tmp_path, StoreEngine("sqlite", {"path": str(db)}),
                lambda _: read_only(db), "database: cannot write:")


def test_postgresql_stopped(postgresql_engine, spawn, tmp_path):
    """PostgreSQL's counterpart of a database that cannot be written: its server stopped
    (a fast shutdown: every session cut), then started again."""
    server = postgresql_engine.server
    assert server is not None
    check_fault(spawn, tmp_path, postgresql_engine, lambda _: server.stopped(),
                "database: cannot write:")


def test_disk_full(spawn, tmp_path):
    """SQLite's file on a full filesystem (PostgreSQL's: out of reach, the module's
    docstring says why)."""
    small = tmp_path / "small"
    with small_filesystem(small) as mounted:
        db = small / "pnbridge.db"
        engine = StoreEngine("sqlite", {"path": str(db)})
        if mounted:
            check_fault(spawn, tmp_path, engine, lambda _: disk_full(small), "the disk is full")
            return

        def limited(daemon: Process) -> contextlib.AbstractContextManager:
            size = Path(f"{db}-wal").stat().st_size
            return file_size_limit(daemon.popen.pid, size)

        check_fault(spawn, tmp_path, engine, limited, "database: cannot write:")


def test_a_command_on_a_locked_database_says_so_in_one_line(engine, tmp_path):
    """The CLI's store operations fail as the daemon's do: one line, exit status 1."""
    store = engine.open()
    with store.transaction():  # a device to remove: PostgreSQL locks rows, not the file
        store.register(Report("token", username="u", selector="S1", token_msgs="t"), {}, 1.0)
    store.close()
    conf = tmp_path / "pnbridge.toml"
    conf.write_text(engine.toml(busy_timeout=0.1))
    with engine.locked():
        removed = pnbridge("devices", "remove", "S1", "--config", str(conf))
        retried = pnbridge("events", "retry", "--config", str(conf))
    for result in (removed, retried):
        assert (result.returncode, result.stdout) == (1, ""), result.stderr
        assert result.stderr.startswith("pnbridge: "), result.stderr
        assert "the database is locked by another process (" in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        if engine.name == "sqlite":
            assert result.stderr.endswith("(SQLITE_BUSY: database is locked)\n")
