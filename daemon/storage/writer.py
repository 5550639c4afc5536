"""The daemon's way to the store: one worker thread, concurrent operations batched.

Operations that arrive while a transaction is being written wait and then go together
into the next one (group commit), so many reports cost one fsync and none is answered
before its transaction committed. Queries that must not wait behind writes (the push API's
device lookup) go to the ``Reader``'s read-only connections instead (reader.py). The trio
loop never touches the database.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from ..config.tables import StorageConfig
from ..errors import StoreError
from .copy import unfinished
from .engines import engine
from .interface import Listener, Store
from .reader import Reader

log = logging.getLogger("pnbridge.store")

T = TypeVar("T")
# Seconds a wait for another process's journal notice lasts (the longest a shutdown waits
# for the listener's thread).
LISTEN_WAIT = 0.5


@dataclass
class PendingOp:
    """A store operation waiting for the writer: ``fn(store, *args)``."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    tracked: bool = True  # its outcome counts in Writer.failing
    result: Any = None
    error: BaseException | None = None
    wrote: bool = False  # it changed rows (set on the thread by run)
    done: trio.Event = field(default_factory=trio.Event)

    def run(self, store: Store) -> Any:
        """On the thread: ``fn(store, *args)``, noting whether it changed rows."""
        before = store.changes()
        result = self.fn(store, *self.args)
        self.wrote = store.changes() != before
        return result


@dataclass
class Failing:
    """Storage errors in a row: ``count`` operations, the last one's ``error`` and when. An
    operation that changed rows ends the run; one that only read leaves it as it is."""

    count: int = 0
    error: StoreError | None = None
    at: float = 0.0


class Writer:
    """Runs ``fn(store, *args)`` calls on the store's thread, many to a transaction."""

    def __init__(self, store: Store, reader: Reader):
        self.store = store
        self.reader = reader
        self._pending: deque[PendingOp] = deque()  # appended on the loop, taken on the thread
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

    def wake_readers(self) -> None:
        """Set the event ``journal_written`` gave out, as a journaling commit does: what
        the journal's readers should see changed without a new event (a retry)."""
        self._journal_event.set()
        self._journal_event = trio.Event()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(store, *args)`` in a transaction; return its result once committed.

        Raises trio.ClosedResourceError once the writer has stopped.
        """
        return await self._call(PendingOp(fn, args))

    async def untracked(self, fn: Callable[..., T], *args: Any) -> T:
        """``call``, for a probe or a gauge whose outcome must not count in ``failing``
        (it does not do what a report does)."""
        return await self._call(PendingOp(fn, args, tracked=False))

    async def _call(self, op: PendingOp) -> Any:
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

    async def _listen(self, listener: Listener) -> None:
        """Wake the journal's readers whenever ``listener`` hears another process journal;
        on exit, close it once its thread is done (within LISTEN_WAIT)."""
        thread = trio.CapacityLimiter(1)
        try:
            while True:
                if await trio.to_thread.run_sync(listener.wait, LISTEN_WAIT, limiter=thread,
                                                 abandon_on_cancel=True):
                    self.wake_readers()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(listener.close, limiter=thread)

    def _drain(self) -> None:
        """On the thread: commit batches until no op is waiting. Each batch is answered on
        the loop as soon as it committed, while the next one is being written."""
        while self._pending:
            batch = [self._pending.popleft() for _ in range(len(self._pending))]
            try:
                done = self.store.run_batch([op.run for op in batch])
            except Exception as failure:  # run_batch fails calls itself; this is a bug's net
                log.exception("store batch failed")
                done = [(None, failure)] * len(batch)
            for op, (result, error) in zip(batch, done, strict=True):
                op.result, op.error = result, error
            self._token.run_sync_soon(self._answer, batch, self.store.journaled)

    def _answer(self, batch: list[PendingOp], journaled: int) -> None:
        """On the loop: wake the callers of a committed batch (and the dispatcher)."""
        for op in batch:
            if op.tracked and isinstance(op.error, StoreError):
                self.failing = Failing(self.failing.count + 1, op.error, trio.current_time())
            elif op.tracked and op.error is None and op.wrote:
                self.failing = Failing()  # a read that works says little: it keeps the count
            op.done.set()
        if journaled != self._journaled:
            self._journaled = journaled
            self.wake_readers()


@asynccontextmanager
async def open_writer(storage: StorageConfig) -> AsyncIterator[Writer]:
    """Open the store of ``storage`` (its engine: storage/engines.py; off the loop) and
    serve it until the block ends; the writer's ``reader`` serves queries on connections of
    their own meanwhile."""
    database = engine(storage)
    store = await trio.to_thread.run_sync(database.open)
    if problem := await trio.to_thread.run_sync(unfinished, store, database.where):
        await trio.to_thread.run_sync(store.close)
        raise StoreError(problem)
    reader = Reader(database.reader)
    try:
        writer = Writer(store, reader)
        async with trio.open_nursery() as nursery:
            await nursery.start(writer._serve)
            if (listener := database.listener()) is not None:
                nursery.start_soon(writer._listen, listener)
            try:
                yield writer
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(reader.close)
        await trio.to_thread.run_sync(store.close)
