"""The store's schema versions and transactions, on each engine (the ``engine`` fixture)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from functools import partial
from operator import methodcaller

import pytest
from engines import StoreEngine
from pnbridge.errors import StoreError
from pnbridge.model import Report
from pnbridge.storage.sqlite.schema import MIGRATIONS
from pnbridge.storage.sqlite.store import SQLiteStore


def schema_version(engine: StoreEngine) -> int:
    if engine.name == "sqlite":
        return engine.rows("PRAGMA user_version")[0][0]
    return engine.rows("SELECT max(version) FROM schema_version")[0][0]


def test_new_database_is_at_the_latest_schema_and_reopens_with_its_data(engine):
    store = engine.open()
    latest = schema_version(engine)
    assert latest == len(MIGRATIONS)  # the same version numbers on both engines
    with store.transaction():
        store.register(Report("token", username="u", selector="S", token_msgs="t"), {}, 1.0)
    store.close()
    again = engine.open()
    assert [d.selector for d in again.devices()] == ["S"]
    assert schema_version(engine) == latest
    again.close()


def test_a_new_sqlite_database_is_in_wal_mode(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused_untouched(engine):
    engine.open().close()
    newer = len(MIGRATIONS) + 1
    engine.rows(f"PRAGMA user_version={newer}" if engine.name == "sqlite"
                else f"UPDATE schema_version SET version = {newer}")
    with pytest.raises(StoreError, match="upgrade pnbridge"):
        engine.open()
    assert schema_version(engine) == newer


def test_unopenable_database_is_a_store_error(engine, tmp_path):
    where = ({"path": str(tmp_path / "missing-dir" / "db")} if engine.name == "sqlite"
             else {"url": engine.storage["url"].rsplit("/", 1)[0] + "/no_such_database"})
    with pytest.raises(StoreError, match="cannot open database"):
        engine.open(**where)


def test_batch_op_failure_fails_only_itself(engine):
    store = engine.open()

    def good(s, selector):
        return s.register(Report("token", username="u", selector=selector, token_msgs="t"), {}, 1.0)

    def bad(s):
        s.register(Report("token", username="u", selector="BAD", token_msgs="t"), {}, 1.0)
        raise RuntimeError("boom")

    done = store.run_batch([partial(good, selector="A"), bad, partial(good, selector="B")])
    assert [error is None for _, error in done] == [True, False, True]
    assert [d.selector for d in store.devices()] == ["A", "B"]  # BAD rolled back with its op
    assert [e.selector for e in store.events()] == ["A", "B"]


def test_a_removed_device_and_its_event_share_the_transaction(engine):
    store = engine.open()
    with store.transaction():
        store.register(Report("token", username="u", selector="S", token_msgs="t"), {}, 1.0)
    with pytest.raises(RuntimeError), store.transaction():
        store.remove(selector="S", reason="operator", source={}, now=2.0)
        raise RuntimeError("crash before commit")
    assert [d.selector for d in store.devices()] == ["S"]
    assert [e.kind for e in store.events()] == ["registered"]


def test_a_repeat_report_changes_only_last_seen_and_extras(engine):
    store = engine.open()
    full = Report("token", username="u", selector="S", token_calls="c", appid_calls="ac",
                  token_msgs="m", appid_msgs="am")
    with store.transaction():
        store.register(full, {}, 1.0)
    repeat = Report("token", username="u", selector="S", token_msgs="m", extras={"app": "x"})
    with store.transaction():
        change = store.register(repeat, {}, 2.0)
    assert (change.outcome, change.event) == ("unchanged", None)
    assert change.device == store.device("S")
    assert (change.device.token_calls, change.device.extras) == ("c", {"app": "x"})
    assert (change.device.updated_at, change.device.last_seen) == (1.0, 2.0)
    for other in (replace(repeat, username="v"), replace(repeat, token_msgs="m2"),
                  replace(repeat, appid_calls="ac2")):
        with store.transaction():
            assert store.register(other, {}, 3.0).outcome == "changed"
    assert [e.reason for e in store.events()] == ["new", "changed", "changed", "changed"]


def test_sqlites_errors_reach_every_caller_as_store_errors_chained_to_them(tmp_path):
    """(PostgreSQL's: the next test.) The writer's batches, a transaction (the CLI's) and a single operation (the readers',
    the CLI's) raise StoreError for SQLite's errors, worded for an operator, the cause kept."""
    path = tmp_path / "db"
    store = SQLiteStore(path, busy_timeout=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        done = store.run_batch([methodcaller("count_devices")] * 2)
        with pytest.raises(StoreError) as raised, store.transaction():
            pass
    finally:
        other.execute("ROLLBACK")
        other.close()
    errors = [error for _, error in done] + [raised.value]
    for error in errors:
        assert isinstance(error, StoreError)
        assert isinstance(error.__cause__, sqlite3.OperationalError)
        assert str(error) == "database is locked"
        assert error.problem == error.lines()[0] == (
            "the database is locked by another process (SQLITE_BUSY: database is locked)")
    store.close()
    with pytest.raises(StoreError, match="closed database") as raised:
        store.devices()
    assert isinstance(raised.value.__cause__, sqlite3.ProgrammingError)


def test_postgresqls_errors_reach_every_caller_as_store_errors(postgresql_engine):
    """PostgreSQL's counterpart: another session's lock outlasting busy_timeout, and the
    server stopped, fail the writer's batches, a transaction and a single operation as
    StoreError; the store works again once the server is back, without reopening it."""
    import psycopg
    engine = postgresql_engine
    assert engine.server is not None
    store = engine.open(busy_timeout=0.2)
    report = Report("token", username="u", selector="L", token_msgs="t")
    with engine.locked():
        done = store.run_batch([methodcaller("register", report, {}, 1.0)] * 2)
        with pytest.raises(StoreError) as raised, store.transaction():
            store.register(report, {}, 1.0)
    for error in [error for _, error in done] + [raised.value]:
        assert isinstance(error, StoreError)
        assert isinstance(error.__cause__, psycopg.Error)
        assert "locked by another process" in error.problem
    with engine.server.stopped():
        done = store.run_batch([methodcaller("count_devices")] * 2)
        with pytest.raises(StoreError) as raised, store.transaction():
            pass
        with pytest.raises(StoreError) as single:
            store.devices()
        for error in [error for _, error in done] + [raised.value, single.value]:
            assert isinstance(error, StoreError)
            assert isinstance(error.__cause__, psycopg.OperationalError)
            assert engine.server.password not in str(error)
    assert store.run_batch([methodcaller("count_devices")]) == [(0, None)]
    store.close()
