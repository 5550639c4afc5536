"""Copying a whole store (storage/copy.py), SQLite's part: the tables a copy takes, each read
a chunk at a time in the order of its key, and written keyed: a row replaces the target's
row with the same key. A push record has no key of its own: it is written unless the target
has one of the same time, verb, id and selector (the same push to the same device)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from .history import COLUMNS as PUSH_COLUMNS
from .rows import DEVICE_COLUMNS, EVENT_COLUMNS

# Each table a copy takes, in the order it is copied: its columns, and the columns of its
# key (what a row is read in the order of, and what a copied row replaces by). Pushes are
# read in the order they were recorded (SQLite's rowid, PostgreSQL's ``n``).
COPIED: dict[str, tuple[str, tuple[str, ...]]] = {
    "devices": (DEVICE_COLUMNS, ("selector",)),
    "events": (EVENT_COLUMNS, ("seq",)),
    "cursors": ("plugin, seq, updated_at", ("plugin",)),
    "failures": ("plugin, seq, attempts, error, first_try, parked_at, status",
                 ("plugin", "seq")),
    "pushes": (PUSH_COLUMNS, ()),
}
# The columns a push record is the same push by.
SAME_PUSH = ("time", "verb", "id", "selector")


def width(table: str) -> int:
    """How many columns a row of ``table`` has."""
    return len(COPIED[table][0].split(","))


class Copying:
    """The copy's part of the SQLite store."""

    conn: sqlite3.Connection

    def table_counts(self) -> dict[str, int]:
        """How many rows each table a copy takes holds."""
        return {name: self.conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
                for name in COPIED}

    def table_rows(self, table: str, after: Sequence[Any], limit: int
                   ) -> list[tuple[Any, ...]]:
        """Up to ``limit`` rows of ``table`` past the key ``after`` (empty: from the first),
        in key order; each row the key's values, then the columns'."""
        columns, key = COPIED[table]
        order = ", ".join(key or ("rowid",))
        where = f"WHERE ({order}) > ({', '.join('?' for _ in after)})" if after else ""
        rows = self.conn.execute(
            f"SELECT {order}, {columns} FROM {table} {where} ORDER BY {order} LIMIT ?",
            (*after, limit))
        return [tuple(row) for row in rows]

    def put_rows(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Write ``rows`` (of ``table``'s columns) into ``table``, each replacing the row with
        the same key (an event: the same seq or id); a push record only when the table has
        no record of the same push."""
        columns, key = COPIED[table]
        places = ", ".join("?" for _ in range(width(table)))
        if key:
            self.conn.executemany(
                f"INSERT OR REPLACE INTO {table} ({columns}) VALUES ({places})", rows)
            return
        names = [name.strip() for name in columns.split(",")]
        same = " AND ".join(f"{name} IS ?" for name in SAME_PUSH)
        self.conn.executemany(
            f"INSERT INTO pushes ({columns}) SELECT {places}"
            f" WHERE NOT EXISTS (SELECT 1 FROM pushes WHERE {same})",
            [(*row, *(row[names.index(name)] for name in SAME_PUSH)) for row in rows])

    def journal_top(self) -> int:
        """The highest seq the journal has handed out (pruned events count)."""
        row = self.conn.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),"
            " coalesce((SELECT max(seq) FROM events), 0))").fetchone()
        return int(row[0])

    def raise_journal(self, seq: int) -> None:
        """Make the journal's next seq higher than ``seq`` (never lower it)."""
        if not self.conn.execute("UPDATE sqlite_sequence SET seq = max(seq, ?)"
                                 " WHERE name = 'events'", (seq,)).rowcount:
            self.conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?)",
                              (seq,))
