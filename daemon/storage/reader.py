"""The daemon's read-only way to the store: queries that must not wait behind the writer
(the push API's device lookup) run on connections of their own, in worker threads."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from .interface import Store

T = TypeVar("T")

# A thread this long in one query is taken for stuck (another process holds the WAL locks:
# SQLite retries for seconds): a query that comes meanwhile starts a thread of its own.
STUCK = 0.1


@dataclass(eq=False)
class _Query:
    """``fn(store, *args)`` waiting for a thread; ``abandoned`` once its caller gave up."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    result: Any = None
    error: BaseException | None = None
    abandoned: bool = False
    done: trio.Event = field(default_factory=trio.Event)


@dataclass(eq=False)
class _Thread:
    """A worker thread draining the queue: since when it runs its current query (None
    between queries), and whether it has found the queue empty and is ending."""

    since: float | None = None
    ending: bool = False


class Reader:
    """Read-only connections in at most ``threads`` worker threads, each draining the queue
    of queries as the writer's thread drains its own: under load, one thread's wake-up
    answers many queries (a thread per query cost a wake-up and GIL hand-offs each, a third
    of a push's CPU).

    A query here waits neither for the writer's queue nor for its lock (a WAL reader sees the
    last commit while a write is under way), nor behind a stuck query: a query that finds
    every running thread in one query for more than ``STUCK`` seconds starts another thread.
    Its caller may give up on it at any time; a query given up before a thread took it is
    not run.
    """

    def __init__(self, connect: Callable[[], Store], threads: int = 4):
        self._connect = connect  # a read-only store (the engine's ``reader``)
        self._idle: list[Store] = []
        self._pending: deque[_Query] = deque()  # appended on the loop, taken on the threads
        self._running: list[_Thread] = []
        self._threads = threads
        self._token = trio.lowlevel.current_trio_token()
        self._closed = False

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(store, *args)`` on a read-only connection; cancellable at any time."""
        if self._closed:
            raise trio.ClosedResourceError("the store is closed")
        query = _Query(fn, args)
        self._pending.append(query)
        self._start_if_needed()
        try:
            await query.done.wait()
        except trio.Cancelled:
            query.abandoned = True
            raise
        if query.error is not None:
            raise query.error
        return query.result

    def _start_if_needed(self) -> None:
        """On the loop: start a thread when queries wait and no running thread will take
        them soon (none is running, or each is ending or stuck)."""
        if not self._pending or len(self._running) >= self._threads:
            return
        now = time.monotonic()
        for thread in self._running:
            if not thread.ending and (thread.since is None or now - thread.since < STUCK):
                return
        thread = _Thread()
        self._running.append(thread)
        trio.lowlevel.start_thread_soon(
            lambda: self._drain(thread), lambda _: self._back(thread),
            name="pnbridge reader",
        )

    def _drain(self, thread: _Thread) -> None:
        """On a worker thread: run queries until none waits."""
        try:
            store = self._idle.pop()
        except IndexError:
            store = None
        try:
            while True:
                try:
                    query = self._pending.popleft()
                except IndexError:
                    thread.ending = True
                    return
                if query.abandoned:
                    continue
                thread.since = time.monotonic()
                try:
                    if store is None:
                        store = self._connect()
                    query.result = query.fn(store, *query.args)
                except Exception as error:
                    query.error = error
                thread.since = None
                self._answer(query)
        finally:
            if store is not None:
                if self._closed:
                    store.close()
                else:
                    self._idle.append(store)

    def _answer(self, query: _Query) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the daemon stopped meanwhile
            self._token.run_sync_soon(query.done.set)

    def _back(self, thread: _Thread) -> None:
        """On the worker thread, as it ends: the loop forgets it, and starts another if a
        query came after it found the queue empty."""

        def ended() -> None:
            self._running.remove(thread)
            self._start_if_needed()

        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(ended)

    def close(self) -> None:
        """Close the idle connections; one still in use is closed when its query ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()

