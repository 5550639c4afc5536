"""The store's reader (daemon/storage/reader.py) on each store engine (a real SQLite file, a
real PostgreSQL database): its threads drain one queue (queries that come together share a
thread instead of taking one each), a stuck query does not hold up the next, and a query
given up before a thread took it is not run."""

from __future__ import annotations

import sqlite3
import threading
from operator import methodcaller

import pytest
import trio
from engines import StoreEngine
from pnbridge.errors import StoreError
from pnbridge.storage.engines import Engine
from pnbridge.storage.engines import engine as engine_of
from pnbridge.storage.interface import Store
from pnbridge.storage.reader import STUCK, Reader


@pytest.fixture
def database(engine: StoreEngine) -> Engine:
    """The engine's database, created; its readers' stores come from ``reader``."""
    engine.open().close()
    return engine_of(engine.config())


async def test_queries_that_come_together_share_one_thread(database):
    reader = Reader(database.reader, threads=4)
    threads: list[int] = []

    def count(store: Store) -> int:
        threads.append(threading.get_ident())
        return store.count_devices()

    results: list[int] = []

    async def one() -> None:
        results.append(await reader.call(count))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    assert results == [0] * 20
    assert len(set(threads)) == 1  # a thread per query: up to 4
    reader.close()


async def test_a_stuck_query_does_not_hold_up_the_next(database):
    reader = Reader(database.reader, threads=2)
    release = threading.Event()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.call, lambda store: release.wait(10))
            await trio.sleep(STUCK * 1.5)
            with trio.fail_after(2):
                assert await reader.call(lambda store: store.count_devices()) == 0
            release.set()
    finally:
        release.set()
        reader.close()


async def test_a_query_given_up_before_a_thread_took_it_is_not_run(database):
    reader = Reader(database.reader, threads=1)
    release, ran = threading.Event(), []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.call, lambda store: release.wait(10))
            await trio.sleep(STUCK * 1.5)  # the only thread is stuck: the next query waits
            with trio.move_on_after(0.05):
                await reader.call(lambda store: ran.append("given up"))
            release.set()
        assert await reader.call(lambda store: ran.append("later")) is None
        assert ran == ["later"]
    finally:
        release.set()
        reader.close()


async def test_a_query_the_database_fails_raises_store_error(tmp_path):
    """What SQLite raises on a reader's thread reaches the loop as StoreError (the push API
    and FastAGI catch nothing else), the cause kept."""
    path = tmp_path / "reader.db"
    path.write_bytes(b"not a database, " * 256)
    reader = Reader(engine_of(StoreEngine("sqlite", {"path": str(path)}).config()).reader)
    with pytest.raises(StoreError, match="file is not a database") as raised:
        await reader.call(methodcaller("devices", "u"))
    assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)
    assert raised.value.problem == "SQLITE_NOTADB: file is not a database"
    reader.close()


async def test_a_query_postgresql_fails_raises_store_error(postgresql_engine):
    """PostgreSQL's counterpart: the server stopped under the readers; once it is back, the
    next query works (a reader connects again at once)."""
    import psycopg
    server = postgresql_engine.server
    assert server is not None
    postgresql_engine.open().close()
    database = engine_of(postgresql_engine.config(busy_timeout=1.0))
    reader = Reader(database.reader)
    try:
        assert await reader.call(methodcaller("count_devices")) == 0
        with server.stopped():
            with pytest.raises(StoreError) as raised:
                await reader.call(methodcaller("devices", "u"))
            assert isinstance(raised.value.__cause__, psycopg.Error)
            assert server.password not in str(raised.value)
        with trio.fail_after(3):
            assert await reader.call(methodcaller("count_devices")) == 0
    finally:
        reader.close()
