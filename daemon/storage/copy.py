"""Copying a whole store into another (``pnbridge store copy``): moving a host from SQLite to
PostgreSQL, or a backup. Devices, the journal (each event's seq and id kept, so the plugins'
cursors stay valid), the cursors, the parked and retried events and the push history, with
their times; the target's journal then hands out seqs above the source's highest.

Each table is read a chunk at a time in the order of its key and written through the
target's Store, a chunk per transaction; a row replaces the target's row with the same key
(storage/sqlite/copy.py), so copying again gives the same target and an interrupted copy is
finished by running it again. Each chunk of events raises the target's journal past its seqs
in its own transaction, so a partial target never hands out a seq it holds. A lease row
``copy`` (held by the source's name, never expiring) is written first and removed in the
last transaction: a target whose copy did not finish is refused by ``serve`` and ``doctor``
(``unfinished``). Nothing here knows the engines: both are Stores."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..errors import CopyInterrupted
from .interface import Store
from .sqlite.copy import COPIED

CHUNK = 1000  # rows read, and written in one transaction, at a time
COPYING = "copy"  # the lease that marks a target whose copy has not finished
_FOREVER = 1e11  # the marker's lease time (seconds): it never expires


# What to call a table's rows in a message (one, several).
_NAMES = {
    "devices": ("device", "devices"), "events": ("journal event", "journal events"),
    "cursors": ("plugin cursor", "plugin cursors"),
    "failures": ("parked or retried event", "parked or retried events"),
    "pushes": ("push record", "push records"),
}


def described(counts: dict[str, int]) -> str:
    """``counts`` (table: rows) in words: "3 devices, 1 journal event"; "nothing" when all
    are 0."""
    said = [f"{n:,} {_NAMES[t][n != 1]}" for t, n in counts.items() if n]
    return ", ".join(said) or "nothing"


def copying_from(store: Store) -> str | None:
    """The source of an unfinished copy into ``store`` (the name its marker holds); None
    when no copy into it was interrupted."""
    return next((lease.holder for lease in store.leases() if lease.name == COPYING), None)


def unfinished(store: Store, where: str) -> str | None:
    """What keeps a daemon from ``store`` (named ``where``) when a copy into it did not
    finish, in one line; None when none."""
    if (source := copying_from(store)) is None:
        return None
    return (f"database {where} is an unfinished copy of {source} (pnbridge store copy "
            "was interrupted): run the same pnbridge store copy again to finish it")


def copy_store(source: Store, target: Store, source_name: str,
               done: Callable[[int], None] = lambda _: None,
               stop: Callable[[], bool] = lambda: False) -> dict[str, int]:
    """Copy every table of ``source`` (named ``source_name``) into ``target``; how many rows
    of each were copied. ``done`` is told of each chunk's rows as it is written; when
    ``stop`` says so after a chunk, CopyInterrupted (the target stays marked unfinished)."""
    with target.transaction():
        if (other := copying_from(target)) is not None:
            target.release_lease(COPYING, other)
        target.take_lease(COPYING, source_name, time.time(), _FOREVER)
    copied = {}
    for table, (_, key) in COPIED.items():
        keyed = len(key) or 1  # a push record is read by its position
        after: tuple[object, ...] = ()
        copied[table] = 0
        while rows := source.table_rows(table, after, CHUNK):
            after = rows[-1][:keyed]
            with target.transaction():
                target.put_rows(table, [row[keyed:] for row in rows])
                if table == "events":  # never a seq the target's journal would hand out
                    target.raise_journal(int(rows[-1][0]))
            copied[table] += len(rows)
            done(len(rows))
            if stop():
                raise CopyInterrupted
    with target.transaction():
        target.raise_journal(source.journal_top())
        target.release_lease(COPYING, source_name)
    return copied
