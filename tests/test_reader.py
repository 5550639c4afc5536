"""The store's reader (daemon/storage/reader.py) on a real SQLite file: its threads drain one
queue (queries that come together share a thread instead of taking one each), a stuck query
does not hold up the next, and a query given up before a thread took it is not run."""

from __future__ import annotations

import sqlite3
import threading
from operator import methodcaller
from pathlib import Path

import pytest
import trio
from pnbridge.config.tables import StorageConfig
from pnbridge.errors import StoreError
from pnbridge.storage.engines import SQLiteEngine
from pnbridge.storage.reader import STUCK, Reader
from pnbridge.storage.sqlite.store import SQLiteStore


def database(tmp_path: Path) -> str:
    path = tmp_path / "reader.db"
    SQLiteStore(path).close()
    return str(path)


async def test_queries_that_come_together_share_one_thread(tmp_path):
    reader = Reader(SQLiteEngine(StorageConfig(path=database(tmp_path))).reader, threads=4)
    threads: list[int] = []

    def count(store: SQLiteStore) -> int:
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


async def test_a_stuck_query_does_not_hold_up_the_next(tmp_path):
    reader = Reader(SQLiteEngine(StorageConfig(path=database(tmp_path))).reader, threads=2)
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


async def test_a_query_given_up_before_a_thread_took_it_is_not_run(tmp_path):
    reader = Reader(SQLiteEngine(StorageConfig(path=database(tmp_path))).reader, threads=1)
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
    reader = Reader(SQLiteEngine(StorageConfig(path=str(path))).reader)
    with pytest.raises(StoreError, match="file is not a database") as raised:
        await reader.call(methodcaller("devices", "u"))
    assert isinstance(raised.value.__cause__, sqlite3.DatabaseError)
    assert raised.value.problem == "SQLITE_NOTADB: file is not a database"
    reader.close()
