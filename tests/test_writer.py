"""The writer: one thread, concurrent operations committed together, each answered only once
its transaction committed; on each store engine (the ``engine`` fixture)."""

from __future__ import annotations

from operator import methodcaller

import pytest
import trio
from pnbridge.model import Report
from pnbridge.storage.interface import Store
from pnbridge.storage.writer import open_writer


def register(store: Store, selector: str) -> str:
    store.register(Report("token", username="u", selector=selector, token_msgs="t"), {}, 1.0)
    return selector


def fail(store: Store) -> None:
    raise RuntimeError("boom")


async def test_concurrent_calls_share_transactions_and_are_committed_when_answered(engine):
    async with open_writer(engine.config()) as writer:
        statements: list[str] = []
        if engine.name == "sqlite":
            writer.store.conn.set_trace_callback(statements.append)
        else:
            first = int(engine.rows("SELECT txid_current()")[0][0])
        answered: list[str] = []

        async def one(selector: str) -> None:
            assert await writer.call(register, selector) == selector
            # Answered: already visible to another connection, so committed.
            found = await trio.to_thread.run_sync(
                engine.rows, f"SELECT 1 FROM devices WHERE selector = '{selector}'")
            assert found == [(1,)]
            answered.append(selector)

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, f"S{i}")
        if engine.name == "sqlite":
            writer.store.conn.set_trace_callback(None)
            transactions = statements.count("BEGIN IMMEDIATE")
        else:  # every transaction that writes takes a transaction id (and this query one)
            transactions = int(engine.rows("SELECT txid_current()")[0][0]) - first - 1
    assert sorted(answered) == sorted(f"S{i}" for i in range(200))
    assert 1 <= transactions <= 20, transactions


async def test_a_failing_call_raises_to_its_caller_only(engine):
    async with open_writer(engine.config()) as writer:
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
        assert [d.selector for d in await writer.call(methodcaller("devices"))] == ["A"]


async def test_a_journaling_commit_sets_journal_written(engine):
    async with open_writer(engine.config()) as writer:
        written = writer.journal_written()
        await writer.call(methodcaller("devices"))
        assert not written.is_set()
        await writer.call(register, "A")
        assert written.is_set()
        assert not writer.journal_written().is_set()


async def test_calls_after_the_writer_stopped_are_refused(engine):
    async with open_writer(engine.config()) as writer:
        pass
    with pytest.raises(trio.ClosedResourceError):
        await writer.call(methodcaller("devices"))
