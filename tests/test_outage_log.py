"""A store that is down fails every report: the log says so once, then at most once per 10 s
with the count, and once when it works again; the metric counts every failure."""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from faults import daemon_toml, locked
from pnbridge.ops.lograte import RepeatedFailure
from postgres import PostgresServer


async def test_a_repeated_failure_is_logged_once_per_interval(virtual_clock,
                                                              caplog: pytest.LogCaptureFixture):
    log = logging.getLogger("pnbridge.test-lograte")
    failures = RepeatedFailure(log, "storage")
    caplog.set_level(logging.INFO, logger=log.name)
    for n in range(1_200):  # 1,200 failures over 24 s
        failures.failed(f"route=/token/: refused {n}")
        virtual_clock.jump(0.02)
    failures.worked()
    failures.worked()  # working on: no line
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "storage failed route=/token/: refused 0"
    assert re.fullmatch(r"storage failed 5\d\d times in the last 10 s \(the last: "
                        r"route=/token/: refused \d+\)", lines[1]), lines
    assert lines[-1] == "storage works again after 1,200 failures over 24.0 s"
    assert len(lines) == 4
    counted = [int(m.group(1)) for line in lines[1:3]
               if (m := re.match(r"storage failed (\d+) times", line))]
    assert 1 + sum(counted) <= 1_200  # the rest were not yet due for a line
    failures.failed("again")  # a new outage: logged at once
    assert caplog.records[-1].getMessage() == "storage failed again"


def _flood(base: str, seconds: float) -> list[int]:
    """Reports from 8 clients for ``seconds``: their statuses."""
    def one(worker: int) -> list[int]:
        statuses, n = [], 0
        with httpx.Client(base_url=base, timeout=10) as client:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                n += 1
                statuses.append(client.post("/token/", data={
                    "username": f"u{worker}", "selector": f"s{worker}-{n}",
                    "pushToken": f"t{n}", "pushappid": "app"}).status_code)
        return statuses

    with ThreadPoolExecutor(8) as pool:
        return [s for statuses in pool.map(one, range(8)) for s in statuses]


def _check_log(log: str, failed: int) -> None:
    lines = [line for line in log.splitlines() if "storage" in line and "pnbridge.reporter" in line]
    assert len(lines) == 2, lines
    assert re.search(r"ERROR pnbridge.reporter: storage failed route=/token/ database=", lines[0])
    assert re.search(rf"storage works again after {failed:,} failures over [\d.]+ s$", lines[1])


def test_a_postgresql_outage_under_load_logs_two_lines(postgres_server: PostgresServer,
                                                       pg_database_url: str, spawn,
                                                       tmp_path: Path):
    daemon = spawn(daemon_toml(tmp_path, tmp_path / "unused.db", url=pg_database_url,
                               busy_timeout=1))
    base = daemon.url()
    assert set(_flood(base, 0.5)) == {200}
    with postgres_server.stopped():
        statuses = _flood(base, 3)
    assert statuses.count(503) > 50 and set(statuses) <= {200, 503}, statuses
    deadline = time.monotonic() + 20
    while 200 not in statuses[-8:]:  # until reports work again (no restart of pnbridge)
        assert time.monotonic() < deadline
        statuses += _flood(base, 0.2)
    failed = statuses.count(503)
    metrics = httpx.get(f"{base}/metrics").text
    daemon.stop()
    assert re.search(rf'pnbridge_reports_total{{kind="token",outcome="failed"}} {failed}\.0',
                     metrics)
    _check_log(daemon.log, failed)


def test_a_locked_sqlite_store_under_load_logs_two_lines(spawn, tmp_path: Path):
    db = tmp_path / "pnbridge.db"
    daemon = spawn(daemon_toml(tmp_path, db, busy_timeout=0.05))
    assert set(_flood(daemon.url(), 0.3)) == {200}
    with locked(db):
        statuses = _flood(daemon.url(), 2)
    failed = statuses.count(503)
    assert failed > 20 and set(statuses) == {503}
    assert set(_flood(daemon.url(), 0.3)) == {200}
    daemon.stop()
    _check_log(daemon.log, failed)
