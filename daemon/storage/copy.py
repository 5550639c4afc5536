"""Copying a whole store into another (``pnbridge store copy``): moving a host from SQLite to
PostgreSQL, or a backup. Devices, the journal (each event's seq and id kept, so the plugins'
cursors stay valid), the cursors, the parked and retried events and the push history, with
their times; the target's journal then hands out seqs above the source's highest.

Each table is read a chunk at a time in the order of its key and written through the
target's Store, a chunk per transaction; a row replaces the target's row with the same key
(storage/sqlite/copy.py), so copying again gives the same target and an interrupted copy is
finished by running it again. Nothing here knows the engines: both are Stores."""

from __future__ import annotations

from collections.abc import Callable

from .interface import Store
from .sqlite.copy import COPIED

CHUNK = 1000  # rows read, and written in one transaction, at a time

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


def copy_store(source: Store, target: Store, done: Callable[[int], None] = lambda _: None
               ) -> dict[str, int]:
    """Copy every table of ``source`` into ``target``; how many rows of each were copied.
    ``done`` is told of each chunk's rows as it is written."""
    copied = {}
    for table, (_, key) in COPIED.items():
        keyed = len(key) or 1  # a push record is read by its position
        after: tuple[object, ...] = ()
        copied[table] = 0
        while rows := source.table_rows(table, after, CHUNK):
            after = rows[-1][:keyed]
            with target.transaction():
                target.put_rows(table, [row[keyed:] for row in rows])
            copied[table] += len(rows)
            done(len(rows))
    with target.transaction():
        target.raise_journal(source.journal_top())
    return copied
