"""The daemon's read-only way to the store: queries that must not wait behind the writer
(the push API's device lookup) run on connections of their own, in worker threads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import trio

from .interface import Store
from .sqlite.store import SQLiteStore

T = TypeVar("T")


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
            store = SQLiteStore(self._path, self._busy_timeout, read_only=True)
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
