"""Storage faults on a running daemon (a real child process, a real SQLite file): the
database locked by another process, made read-only, on a full disk. While the fault lasts
reports and the push API answer 503, /readyz says why and the daemon stays up; once it
clears, everything works again without a restart, and every answered report's event
reaches the plugins."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import Process, pnbridge
from faults import (
    can_make_immutable,
    daemon_toml,
    disk_full,
    file_size_limit,
    locked,
    push,
    read_only,
    recorded_ids,
    report_status,
    small_filesystem,
    stored,
)
from plugintools import wait_until_sync
from pnbridge.storage.sqlite.store import SQLiteStore

Fault = Callable[[Process], contextlib.AbstractContextManager]


def check_fault(spawn, tmp_path: Path, db: Path, fault: Fault, why: str) -> None:
    """Reports before, during and after ``fault(daemon)``; what each must get."""
    daemon = spawn(daemon_toml(tmp_path, db))
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
    devices, events = stored(db)
    assert set(answered) <= set(devices)
    wait_until_sync(lambda: set(recorded_ids(tmp_path)) >= set(events), timeout=15)
    assert "Traceback" not in daemon.log, daemon.log


def test_locked_by_another_process(spawn, tmp_path):
    db = tmp_path / "pnbridge.db"
    daemon = spawn(daemon_toml(tmp_path, db))
    with httpx.Client(base_url=daemon.url(), timeout=10) as client:
        assert report_status(client, "before") == 200
        with locked(db):
            assert report_status(client, "during") == 503
            answer = push(client)  # devices are read on a read-only connection: no wait
            assert answer.status_code == 200, answer.text
            assert answer.json()["devices"][0]["outcome"] == "failed"  # pnmediator: port 9
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert "database: cannot write: the database is locked by another process" \
                in ready.text
        wait_until_sync(lambda: report_status(client, "after") == 200, timeout=10)
        wait_until_sync(lambda: client.get("/readyz").status_code == 200, timeout=10)
        assert push(client).status_code == 200
    devices, events = stored(db)
    assert {"before", "after"} <= set(devices) and "during" not in devices
    wait_until_sync(lambda: set(recorded_ids(tmp_path)) >= set(events), timeout=15)
    assert daemon.popen.poll() is None and "Traceback" not in daemon.log, daemon.log


def test_read_only_database(spawn, tmp_path):
    if not can_make_immutable(tmp_path):
        pytest.skip("chattr +i does not work here")
    db = tmp_path / "pnbridge.db"
    check_fault(spawn, tmp_path, db, lambda _: read_only(db), "database: cannot write:")


def test_disk_full(spawn, tmp_path):
    small = tmp_path / "small"
    with small_filesystem(small) as mounted:
        db = small / "pnbridge.db"
        if mounted:
            check_fault(spawn, tmp_path, db, lambda _: disk_full(small), "the disk is full")
            return

        def limited(daemon: Process) -> contextlib.AbstractContextManager:
            size = Path(f"{db}-wal").stat().st_size
            return file_size_limit(daemon.popen.pid, size)

        check_fault(spawn, tmp_path, db, limited, "database: cannot write:")


def test_a_command_on_a_locked_database_says_so_in_one_line(tmp_path):
    """The CLI's store operations fail as the daemon's do: one line, exit status 1."""
    db = tmp_path / "pnbridge.db"
    SQLiteStore(db).close()
    conf = tmp_path / "pnbridge.toml"
    conf.write_text(f'[storage]\npath = "{db}"\nbusy_timeout = 0.1\n')
    with locked(db):
        removed = pnbridge("devices", "remove", "S1", "--config", str(conf))
        retried = pnbridge("events", "retry", "--config", str(conf))
    why = "pnbridge: the database is locked by another process (SQLITE_BUSY: database is locked)\n"
    for result in (removed, retried):
        assert (result.returncode, result.stdout, result.stderr) == (1, "", why)
