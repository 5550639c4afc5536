"""The daemon's way to the store: one worker thread, concurrent operations batched.

Operations that arrive while a transaction is being written wait and then go together
into the next one (group commit), so many reports cost one fsync and none is answered
before its transaction committed. Queries that must not wait behind writes (the push API's
device lookup) go to ``Reader``'s read-only connections instead. The trio loop never
touches SQLite.
"""

from __future__ import annotations

import logging
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import trio

from .sqlite import PendingOp, Store

log = logging.getLogger("pnbridge.store")

T = TypeVar("T")


@dataclass
class _Op(PendingOp):
    done: trio.Event = field(default_factory=trio.Event)
    tracked: bool = True  # its outcome counts in Writer.failing
    wrote: bool = False  # it changed rows (set on the thread by _counting)


@dataclass
class Failing:
    """Storage errors in a row: ``count`` operations, the last one's ``error`` and when. An
    operation that changed rows ends the run; one that only read leaves it as it is."""

    count: int = 0
    error: sqlite3.Error | None = None
    at: float = 0.0


class Writer:
    """Runs ``fn(store, *args)`` calls on the store's thread, many to a transaction."""

    def __init__(self, store: Store, reader: Reader):
        self.store = store
        self.reader = reader
        self._pending: deque[_Op] = deque()  # appended on the loop, taken on the thread
        self._work = trio.Event()
        self._thread = trio.CapacityLimiter(1)
        self._token = trio.lowlevel.current_trio_token()
        self._closed = False
        self._journaled = store.journaled
        self._journal_event = trio.Event()
        self.failing = Failing()  # the operations' storage errors, the latest in a row

    def journal_written(self) -> trio.Event:
        """An event set by the next commit that journals an event (take it before reading)."""
        return self._journal_event

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(store, *args)`` in a transaction; return its result once committed.

        Raises trio.ClosedResourceError once the writer has stopped.
        """
        op = _Op(fn, args)
        op.fn = partial(_counting, op, fn)
        return await self._call(op)

    async def untracked(self, fn: Callable[..., T], *args: Any) -> T:
        """``call``, for a probe or a gauge whose outcome must not count in ``failing``
        (it does not do what a report does)."""
        return await self._call(_Op(fn, args, tracked=False))

    async def _call(self, op: _Op) -> Any:
        if self._closed:
            raise trio.ClosedResourceError("the store is closed")
        self._pending.append(op)
        self._work.set()
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.result

    async def _serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        try:
            while True:
                await self._work.wait()
                self._work = trio.Event()
                await trio.to_thread.run_sync(self._drain, limiter=self._thread)
        finally:
            self._closed = True
            for op in self._pending:
                op.error = trio.ClosedResourceError("the store is closed")
                op.done.set()

    def _drain(self) -> None:
        """On the thread: commit batches until no op is waiting. Each batch is answered on
        the loop as soon as it committed, while the next one is being written."""
        while self._pending:
            batch = [self._pending.popleft() for _ in range(len(self._pending))]
            try:
                self.store.run_batch(batch)
            except Exception as error:  # run_batch fails ops itself; this is a bug's net
                log.exception("store batch failed")
                for op in batch:
                    op.result, op.error = None, error
            self._token.run_sync_soon(self._answer, batch, self.store.journaled)

    def _answer(self, batch: list[_Op], journaled: int) -> None:
        """On the loop: wake the callers of a committed batch (and the dispatcher)."""
        for op in batch:
            if op.tracked and isinstance(op.error, sqlite3.Error):
                self.failing = Failing(self.failing.count + 1, op.error, trio.current_time())
            elif op.tracked and op.error is None and op.wrote:
                self.failing = Failing()  # a read that works says little: it keeps the count
            op.done.set()
        if journaled != self._journaled:
            self._journaled = journaled
            self._journal_event.set()
            self._journal_event = trio.Event()


def _counting(op: _Op, fn: Callable[..., T], store: Store, *args: Any) -> T:
    """Run ``fn(store, *args)``, noting in ``op`` whether it changed rows."""
    before = store.conn.total_changes
    result = fn(store, *args)
    op.wrote = store.conn.total_changes != before
    return result


class Reader:
    """Read-only connections, each used by one worker thread at a time, at most ``threads``.

    A query here waits neither for the writer's queue nor for its lock (a WAL reader sees the
    last commit while a write is under way), and its caller may give up on it: the thread
    finishes on its own and puts its connection back then.
    """

    def __init__(self, path: str, busy_timeout: float, threads: int = 4):
        self._path, self._busy_timeout = path, busy_timeout
        self._idle: list[Store] = []
        self._threads = trio.CapacityLimiter(threads)
        self._closed = False

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(store, *args)`` on a read-only connection; cancellable at any time."""
        if self._closed:
            raise trio.ClosedResourceError("the store is closed")
        return await trio.to_thread.run_sync(
            self._run, fn, args, limiter=self._threads, abandon_on_cancel=True
        )

    def _run(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        try:
            store = self._idle.pop()
        except IndexError:
            store = Store(self._path, self._busy_timeout, read_only=True)
        try:
            return fn(store, *args)
        finally:
            if self._closed:
                store.close()
            else:
                self._idle.append(store)

    def close(self) -> None:
        """Close the idle connections; one still in use is closed when its query ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


@asynccontextmanager
async def open_writer(path: str, busy_timeout: float) -> AsyncIterator[Writer]:
    """Open the store at ``path`` (off the loop) and serve it until the block ends; the
    writer's ``reader`` serves queries on connections of their own meanwhile."""
    store = await trio.to_thread.run_sync(Store, path, busy_timeout)
    reader = Reader(path, busy_timeout)
    try:
        writer = Writer(store, reader)
        async with trio.open_nursery() as nursery:
            await nursery.start(writer._serve)
            try:
                yield writer
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(reader.close)
        await trio.to_thread.run_sync(store.close)
