"""The push history's writer: every device's PushRecord appended to a bounded buffer on the
loop (no await, nothing else), written to the store in batches by a task of the daemon's,
and pruned to ``[storage] push_history`` and ``push_history_max``.

A storage failure keeps the buffered records for the next write (within the bound) and is
logged; it never reaches a push. On shutdown what is left is written, shielded and bounded.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from operator import methodcaller

import trio

from ..config.tables import StorageConfig
from ..model import PushRecord
from ..ops.log import clip, describe
from ..ops.metrics import Metrics
from ..retry import backoff
from ..storage.leasing import Leases
from ..storage.writer import Writer

log = logging.getLogger("pnbridge.history")

# Records waiting at most (those being written count too); beyond it they are dropped.
BUFFER_MAX = 10_000
# A record is written at most this many seconds after it arrived, at once when BATCH are
# waiting; one write takes at most BATCH_MAX.
FLUSH_DELAY = 0.5
BATCH = 500
BATCH_MAX = 5_000
# After a failed write the next waits this long, doubling up to RETRY_MAX.
RETRY_FIRST = 0.5
RETRY_MAX = 10.0
# Pruning runs this often (a tenth of the retention when that is shorter, at least 1 s).
PRUNE_EVERY = 600.0
# Seconds the records left at shutdown may take to be written.
SHUTDOWN_TIMEOUT = 5.0
# Drops and write failures are logged at most once per this many seconds.
LOG_EVERY = 60.0
# Characters of a record's message kept at most (pnmediator's answer may be 64 KiB).
MESSAGE_MAX = 1000


class PushHistory:
    """The push records on their way to the store (``add``; ``run`` writes and prunes)."""

    def __init__(self, writer: Writer, config: StorageConfig, metrics: Metrics,
                 *, limit: int = BUFFER_MAX, leases: Leases | None = None):
        self.writer = writer
        self.leases = leases  # pruning only while this instance holds "maintenance"
        self.metrics = metrics
        self.retention = config.push_history_seconds
        self.keep = config.push_history_max
        self.limit = limit
        self._buffer: deque[PushRecord] = deque()
        self._writing = 0  # records taken for the write under way
        self._arrived = trio.Event()  # set when the buffer is no longer empty
        self._full = trio.Event()  # set when BATCH records wait
        self._dropped = 0  # not logged yet
        self._dropped_logged: float | None = None
        self._failed_logged: float | None = None

    @property
    def enabled(self) -> bool:
        """Whether records are kept (``push_history_max`` is not 0)."""
        return self.keep > 0

    @property
    def waiting(self) -> int:
        """Records not written yet."""
        return len(self._buffer) + self._writing

    def add(self, record: PushRecord) -> None:
        """Keep ``record`` for the next write (its message cut to MESSAGE_MAX characters);
        drop it (counted, logged) when the buffer is full. Never waits: the fan-out calls
        it."""
        if not self.enabled:
            return
        if self.waiting >= self.limit:
            self.metrics.push_history_dropped.inc()
            self._dropped += 1
            now = time.monotonic()
            if self._dropped_logged is None or now - self._dropped_logged >= LOG_EVERY:
                log.warning("push history: %d record(s) dropped, %d waiting to be written "
                            "(the store is slow or failing)", self._dropped, self.waiting)
                self._dropped_logged, self._dropped = now, 0
            return
        if len(record.message) > MESSAGE_MAX:
            record = replace(record, message=clip(record.message, MESSAGE_MAX))
        self._buffer.append(record)
        self._arrived.set()
        if len(self._buffer) >= BATCH:
            self._full.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Write the records as they come and prune until cancelled; then write what is
        left (shielded, SHUTDOWN_TIMEOUT at most)."""
        try:
            async with trio.open_nursery() as nursery:
                if self.enabled and self.leases is not None:
                    nursery.start_soon(self.leases.while_held, "maintenance", self._prune)
                elif self.enabled:
                    nursery.start_soon(self._prune)
                task_status.started()
                await self._write_loop()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
                await self.flush()
            if self._buffer:
                log.warning("push history: %d record(s) not written at shutdown",
                            len(self._buffer))

    async def flush(self) -> bool:
        """Write every waiting record; False when a write failed (the rest kept)."""
        try:
            while self._buffer:
                if not await self._write():
                    return False
        except trio.ClosedResourceError:
            return False
        return True

    async def _write_loop(self) -> None:
        failures = 0
        while True:
            if not self._buffer:
                await self._arrived.wait()
            self._arrived = trio.Event()
            if len(self._buffer) < BATCH:
                with trio.move_on_after(FLUSH_DELAY):
                    await self._full.wait()
            self._full = trio.Event()
            try:
                written = await self._write()
            except trio.ClosedResourceError:
                return  # the store closed: run's flush says what is left
            if written:
                failures = 0
            else:
                failures += 1
                await trio.sleep(backoff(failures, RETRY_FIRST, RETRY_MAX))

    async def _write(self) -> bool:
        """One batch written; on a failure it goes back to the buffer's front. (Cancelled
        while the writer has it, it is written all the same: the writer runs what it took.)"""
        batch = [self._buffer.popleft() for _ in range(min(len(self._buffer), BATCH_MAX))]
        self._writing = len(batch)
        try:
            await self.writer.untracked(methodcaller("record_pushes", batch))
        except trio.ClosedResourceError:
            self._buffer.extendleft(reversed(batch))
            raise
        except Exception as error:
            self._buffer.extendleft(reversed(batch))
            now = time.monotonic()
            if self._failed_logged is None or now - self._failed_logged >= LOG_EVERY:
                log.error("push history: %d record(s) not written yet, kept for the next "
                          "try: %s", len(self._buffer), describe(error))
                self._failed_logged = now
            self.metrics.task_errors.labels("push history").inc()
            return False
        finally:
            self._writing = 0
        self.metrics.push_history_written.inc(len(batch))
        return True

    async def _prune(self) -> None:
        every = max(1.0, min(PRUNE_EVERY, self.retention / 10))
        while True:
            try:
                removed = await self.writer.untracked(
                    methodcaller("prune_pushes", time.time() - self.retention, self.keep))
            except trio.ClosedResourceError:
                return
            except Exception as error:
                log.error("push history: pruning failed (again in %g s): %s",
                          every, describe(error))
                self.metrics.task_errors.labels("pruning").inc()
            else:
                if removed:
                    log.info("push history: pruned %d record(s)", removed)
            await trio.sleep(every)


@asynccontextmanager
async def open_history(
    writer: Writer, config: StorageConfig, metrics: Metrics, leases: Leases | None = None
) -> AsyncIterator[PushHistory]:
    """A PushHistory whose task runs until the block ends; then what is left is written
    (before ``writer`` closes, when the block is inside its ``open_writer``). It prunes
    while this instance holds the ``maintenance`` lease of ``leases`` (without: always)."""
    history = PushHistory(writer, config, metrics, leases=leases)
    async with trio.open_nursery() as nursery:
        await nursery.start(history.run)
        try:
            yield history
        finally:
            nursery.cancel_scope.cancel()
