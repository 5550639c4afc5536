"""A corrupt database under a running daemon (a spawned ``pnbridge serve``): what reports
see, /readyz says too."""

from __future__ import annotations

import os
import re
import sqlite3
import time
from pathlib import Path

import httpx
from faults import daemon_toml, recorded_ids, report_status
from plugintools import wait_until_sync


def corrupt(db: Path) -> None:
    """Overwrite every page but the first (the header and the schema) with garbage, after
    folding the WAL into the file; then commit a change to page 1 from another connection,
    so the daemon's connections drop their page caches and read the garbage."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        size = db.stat().st_size
        with open(db, "r+b") as file:
            file.seek(page)
            file.write(os.urandom(size - page))
            file.flush()
            os.fsync(file.fileno())
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA user_version={version}")
    finally:
        conn.close()


def test_reports_and_readyz_both_say_503_on_a_corrupt_database(spawn, tmp_path):
    db = tmp_path / "pnbridge.db"
    daemon = spawn(daemon_toml(tmp_path, db))
    with httpx.Client(base_url=daemon.url(), timeout=10) as client:
        for n in range(200):
            assert report_status(client, f"sel-{n}", username=f"user{n}") == 200
        assert client.get("/readyz").status_code == 200
        corrupt(db)
        statuses = [report_status(client, f"sel-{n}", token="NEW-" + "t" * 40, username=f"user{n}")
                    for n in range(5)]
        assert statuses == [503] * 5, statuses
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert "database" in ready.text and "corrupt" in ready.text, ready.text
        assert client.get("/healthz").status_code == 200
        # It stays so: nothing the daemon does makes it look ready again.
        wait_until_sync(lambda: report_status(client, "x", username="someone") == 503, timeout=5)
        assert client.get("/readyz").status_code == 503
    assert daemon.popen.poll() is None and "Traceback" not in daemon.log, daemon.log


def last_leaf(db: Path, index: str) -> int:
    """The page number of ``index``'s last leaf page (the highest keys)."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return conn.execute(
            "SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' AND path != '/' "
            "ORDER BY path DESC LIMIT 1", (index,)).fetchone()[0]
    finally:
        conn.close()


def test_readyz_follows_reports_where_the_probe_cannot_see(spawn, tmp_path):
    """Only the username index's last leaf is garbage: reports of the highest usernames
    fail, the readiness probe (which writes at the lowest) does not. /readyz goes by the
    failed reports, and back once a report is stored again."""
    db = tmp_path / "pnbridge.db"
    daemon = spawn(daemon_toml(tmp_path, db))
    with httpx.Client(base_url=daemon.url(), timeout=10) as client:
        for n in range(300):
            assert report_status(client, f"sel-{n}", username=f"u{n:04d}" + "x" * 60) == 200
        # The plugin has every event (its cursor saved: a write that works would end a run).
        wait_until_sync(lambda: len(recorded_ids(tmp_path)) == 300)
        wait_until_sync(lambda: client.get("/metrics").text.count(
            'pnbridge_journal_pending_events{plugin="recorder"} 0.0') == 1)
        time.sleep(1.0)  # twice the dispatcher's SAVE_INTERVAL: the last cursor save is done
        leaf = last_leaf(db, "idx_devices_username")
        assert leaf > 2
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            page = conn.execute("PRAGMA page_size").fetchone()[0]
            with open(db, "r+b") as file:
                file.seek((leaf - 1) * page)
                file.write(os.urandom(page))
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute(f"PRAGMA user_version={version}")  # the daemon re-reads its pages
        finally:
            conn.close()
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text  # the probe alone sees nothing
        statuses = [report_status(client, f"new-{n}", username=f"z{n}") for n in range(3)]
        assert statuses == [503] * 3, statuses
        assert client.get("/metrics").status_code == 200  # its gauge read clears nothing
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        # 3 reports, and maybe a metrics refresh that read the index too
        assert re.search(r"database: the last [3-9] storage operations failed: the database "
                         r"file is corrupt \(SQLITE_CORRUPT", ready.text), ready.text
        assert report_status(client, "new", username="a") == 200  # a report that works again
        assert client.get("/readyz").status_code == 200
    assert daemon.popen.poll() is None and "Traceback" not in daemon.log, daemon.log
