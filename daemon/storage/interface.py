"""The Store: what the rest of pnbridge asks of a database, whatever the engine (SQLite today,
storage/sqlite/). Every operation is synchronous and runs on one connection; those that change
something run inside a transaction (``transaction``, or a ``run_batch`` of the writer), and
each change to a device is journaled as an event in that same transaction. An operation
raises the engine's errors as StoreError (errors.py), chained to them: nothing outside
storage/ knows the engine."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from ..model import (
    ChangeOutcome,
    Device,
    Event,
    FailureStatus,
    Pair,
    PushRecord,
    Report,
    isotime,
)


@dataclass(frozen=True)
class Change:
    """What one store operation did to one device, and the event it journaled (if any)."""

    outcome: ChangeOutcome
    device: Device
    event: Event | None



@dataclass(frozen=True)
class Failure:
    """An event one plugin could not take: parked, or waiting to be sent again (retry)."""

    plugin: str
    event: Event
    attempts: int
    error: str
    first_try: float
    parked_at: float
    status: FailureStatus

    def to_dict(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin, "status": self.status, "attempts": self.attempts,
            "error": self.error, "first_try": isotime(self.first_try),
            "parked_at": isotime(self.parked_at), "event": self.event.to_dict(),
        }


@dataclass(frozen=True)
class Lease:
    """Who holds a lease (``delivery:PLUGIN``, ``maintenance``) and until when. Times are
    epoch seconds of the store's clock (``Store.clock``: PostgreSQL's server's, SQLite's
    host's), so an instance's own clock skew cannot end a live holder's lease."""

    name: str
    holder: str
    expires_at: float
    renewed_at: float
    taken_at: float


class Listener(Protocol):
    """Waits, on a thread, for another process's journaling commit (engines.py)."""

    def wait(self, timeout: float) -> bool:
        """True once one is notified, False after ``timeout`` seconds; never raises."""
        ...

    def close(self) -> None: ...


# What one call of a batch gave: its result, or the error it raised.
Done = tuple[Any, BaseException | None]


class Store(Protocol):
    """One connection to the pnbridge database."""

    where: str  # what to call the database in a message (a path, a URL without password)
    journaled: int  # events this connection wrote (the writer wakes the dispatcher with it)

    def close(self) -> None: ...

    def transaction(self) -> AbstractContextManager[Store]:
        """Run operations in one transaction (for callers outside the writer)."""
        ...

    def run_batch(self, calls: Sequence[Callable[[Store], Any]],
                  wait: float | None = None) -> list[Done]:
        """Run ``calls`` in one transaction, each call's failure its own; a lock waited
        for at most ``wait`` seconds (None: busy_timeout)."""
        ...

    def changes(self) -> int:
        """How many rows this connection has changed so far."""
        ...

    def probe_write(self) -> None:
        """Write where a report writes, roll it back, and commit a harmless write."""
        ...

    # -- devices (the changing ones inside a transaction) ----------------------------------

    def register(self, report: Report, source: dict[str, Any], now: float, *,
                 owner: str | None = None) -> Change: ...

    def restore(self, report: Report, source: dict[str, Any], now: float,
                times: dict[str, float]) -> Change: ...

    def register_capped(self, report: Report, source: dict[str, Any], now: float, *,
                        max_devices: int, owner: str | None = None) -> list[Change]: ...

    def remove(self, *, selector: str | None = None, username: str | None = None,
               tokens: Sequence[str] = (), reason: str, source: dict[str, Any],
               now: float) -> list[Change]: ...

    def reject_token(self, selector: str, pair: Pair, token: str, source: dict[str, Any],
                     now: float) -> Change | None: ...

    def expire(self, seen_before: float, source: dict[str, Any], now: float,
               limit: int = 500, skip: Sequence[str] = ()
               ) -> tuple[list[Change], dict[str, str]]: ...

    def device(self, selector: str) -> Device | None: ...

    def devices(self, username: str | None = None, limit: int = -1) -> list[Device]: ...

    def count_devices(self, username: str | None = None) -> int: ...

    def count_users(self) -> int:
        """How many usernames have a device."""
        ...

    def usernames(self, prefix: str = "", limit: int = 50) -> list[tuple[str, int]]:
        """The usernames starting with ``prefix``, in order, with their device counts; the
        first ``limit``."""
        ...

    # -- the journal ------------------------------------------------------------------------

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]: ...

    def newest_events(self, limit: int) -> list[Event]: ...

    def backlog(self, cursor: int) -> tuple[int, float | None]: ...

    def device_events(self, *, username: str | None = None, selector: str | None = None,
                      limit: int = 50) -> list[Event]:
        """The newest journal events of a user or a device (either given), newest first."""
        ...

    # -- delivery state, per plugin ---------------------------------------------------------

    def cursors(self) -> dict[str, int]: ...

    def save_cursor(self, plugin: str, seq: int, now: float) -> None: ...

    def pending(self, plugin: str, after_seq: int, limit: int
                ) -> tuple[list[Failure], list[Event]]: ...

    def park(self, plugin: str, event: Event, attempts: int, error: str, first_try: float,
             now: float) -> None: ...

    def unpark(self, plugin: str, seq: int) -> None: ...

    def failures(self, plugin: str | None = None, status: str | None = None,
                 limit: int | None = None) -> list[Failure]:
        """Parked (and retry-requested) events, oldest first; the first ``limit`` (None:
        all)."""
        ...

    def failure_counts(self) -> dict[tuple[str, FailureStatus], int]:
        """How many failures each plugin has, by status: ``{(plugin, status): n}`` (counted
        by the database: none is read)."""
        ...

    def retry(self, plugin: str | None = None, events: Sequence[str] = ()) -> int: ...

    def prune(self, plugins: Sequence[str], before: float) -> int: ...

    # -- the push history -------------------------------------------------------------------

    def record_pushes(self, records: Sequence[PushRecord]) -> None:
        """Append ``records`` to the push history."""
        ...

    def pushes(self, *, username: str | None = None, selector: str | None = None,
               id: str | None = None, since: float | None = None, limit: int = 100
               ) -> list[PushRecord]:
        """Push records matching every filter given, newest first, at most ``limit``."""
        ...

    def push_pages(self, *, username: str | None = None, selector: str | None = None,
                   id: str | None = None, since: float | None = None, page: int = 1000
                   ) -> Iterator[list[PushRecord]]:
        """The records ``pushes`` would give without a limit, newest first, ``page`` at a
        time (a query each, from where the last ended): the whole history in bounded
        memory."""
        ...

    def push_counts(self, since: float, bucket: float = 60.0
                    ) -> list[tuple[float, str, int]]:
        """Push records since ``since`` counted per ``bucket`` seconds and outcome:
        ``(bucket start, outcome, count)``, oldest bucket first."""
        ...

    def prune_pushes(self, before: float, keep: int) -> int:
        """Remove push records older than ``before``, then the oldest beyond the newest
        ``keep``; how many were removed."""
        ...

    # -- leases: which instance delivers each plugin, which one runs maintenance -----------

    def take_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Hold lease ``name`` until ``now + ttl`` if it is free, expired at ``now`` or
        ``holder``'s already (PostgreSQL: its server's now, not ``now``); whether ``holder``
        holds it now (one transaction)."""
        ...

    def renew_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Extend ``holder``'s lease ``name`` to ``now + ttl``; False when it is not
        ``holder``'s any more (another took it, or it was released)."""
        ...

    def release_lease(self, name: str, holder: str) -> bool:
        """Give up ``holder``'s lease ``name`` (a peer may take it at once); whether it
        held it."""
        ...

    def leases(self) -> list[Lease]:
        """Every lease held or left behind, by name."""
        ...

    def clock(self) -> float:
        """The clock the leases' times are in, epoch seconds: PostgreSQL's server's (it
        decides expiry there, whatever the callers' ``now``), this host's for SQLite."""
        ...

    # -- HTTP Digest nonces, shared by the instances ------------------------------------------

    def digest_key(self, candidate: bytes | None = None) -> bytes | None:
        """The key every instance signs its nonces with: ``candidate`` if there was none;
        without one, only read (None: no key yet)."""
        ...

    def use_nonce(self, nonce: str, issued: float, nc: int) -> bool:
        """Record, atomically across instances, that ``nonce`` was accepted with count
        ``nc``: True on its first use or a count above every one used before; False (nothing
        changed) for a count used before: a replay."""
        ...

    def prune_nonces(self, issued_before: float) -> int:
        """Forget the nonces issued before ``issued_before``; how many."""
        ...

    # -- copying a whole store (storage/copy.py; the tables: storage/sqlite/copy.py) --------

    def table_counts(self) -> dict[str, int]:
        """How many rows each table a copy takes holds."""
        ...

    def table_rows(self, table: str, after: Sequence[Any], limit: int
                   ) -> list[tuple[Any, ...]]:
        """Up to ``limit`` rows of ``table`` past the key ``after`` (empty: from the first),
        in key order; each row the key's values, then the columns'."""
        ...

    def put_rows(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Write ``rows`` into ``table``, each replacing the row with the same key."""
        ...

    def journal_top(self) -> int:
        """The highest seq the journal has handed out (pruned events count)."""
        ...

    def raise_journal(self, seq: int) -> None:
        """Make the journal's next seq higher than ``seq`` (never lower it)."""
        ...
