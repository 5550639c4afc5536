"""The writer: one thread, concurrent operations committed together, each answered only once
its transaction committed."""

from __future__ import annotations

import sqlite3

import pytest
import trio
from pnbridge.config.tables import StorageConfig
from pnbridge.model import Report
from pnbridge.storage.sqlite.store import SQLiteStore
from pnbridge.storage.writer import open_writer


def register(store: SQLiteStore, selector: str) -> str:
    store.register(Report("token", username="u", selector=selector, token_msgs="t"), {}, 1.0)
    return selector


def fail(store: SQLiteStore) -> None:
    raise RuntimeError("boom")


async def test_concurrent_calls_share_transactions_and_are_committed_when_answered(tmp_path):
    path = tmp_path / "db"
    async with open_writer(StorageConfig(path=str(path))) as writer:
        statements: list[str] = []
        writer.store.conn.set_trace_callback(statements.append)
        answered: list[str] = []

        async def one(selector: str) -> None:
            assert await writer.call(register, selector) == selector
            # Answered: already visible to another connection, so on disk.
            with sqlite3.connect(path) as other:
                row = other.execute("SELECT 1 FROM devices WHERE selector = ?", (selector,))
                assert row.fetchone() is not None
            answered.append(selector)

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, f"S{i}")
        writer.store.conn.set_trace_callback(None)
    assert sorted(answered) == sorted(f"S{i}" for i in range(200))
    transactions = statements.count("BEGIN IMMEDIATE")
    assert 1 <= transactions <= 20, transactions


async def test_a_failing_call_raises_to_its_caller_only(tmp_path):
    async with open_writer(StorageConfig(path=str(tmp_path / "db"))) as writer:
        results: dict[str, object] = {}

        async def good() -> None:
            results["good"] = await writer.call(register, "A")

        async def bad() -> None:
            with pytest.raises(RuntimeError, match="boom"):
                await writer.call(fail)
            results["bad"] = "raised"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(good)
            nursery.start_soon(bad)
            nursery.start_soon(good)
        assert results == {"good": "A", "bad": "raised"}
        assert [d.selector for d in await writer.call(SQLiteStore.devices)] == ["A"]


async def test_a_journaling_commit_sets_journal_written(tmp_path):
    async with open_writer(StorageConfig(path=str(tmp_path / "db"))) as writer:
        written = writer.journal_written()
        await writer.call(SQLiteStore.devices)
        assert not written.is_set()
        await writer.call(register, "A")
        assert written.is_set()
        assert not writer.journal_written().is_set()


async def test_calls_after_the_writer_stopped_are_refused(tmp_path):
    async with open_writer(StorageConfig(path=str(tmp_path / "db"))) as writer:
        pass
    with pytest.raises(trio.ClosedResourceError):
        await writer.call(SQLiteStore.devices)
