"""Copying a whole store (storage/copy.py), PostgreSQL's part: the same tables, keys and
rules as SQLite's (storage/sqlite/copy.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..sqlite.copy import COPIED, SAME_PUSH, width
from .journal import JOURNAL_LOCK, Journal

_SEQUENCE = "pg_get_serial_sequence('events', 'seq')"


class Copying(Journal):
    """The copy's part of the PostgreSQL store."""

    def table_counts(self) -> dict[str, int]:
        """How many rows each table a copy takes holds."""
        counts = {}
        for name in COPIED:
            row = self.conn.execute(f"SELECT count(*) FROM {name}").fetchone()
            counts[name] = int(row[0]) if row else 0
        return counts

    def table_rows(self, table: str, after: Sequence[Any], limit: int
                   ) -> list[tuple[Any, ...]]:
        """Up to ``limit`` rows of ``table`` past the key ``after`` (empty: from the first),
        in key order; each row the key's values, then the columns'."""
        columns, key = COPIED[table]
        order = ", ".join(key or ("n",))
        where = f"WHERE ({order}) > ({', '.join('%s' for _ in after)})" if after else ""
        rows = self.conn.execute(
            f"SELECT {order}, {columns} FROM {table} {where} ORDER BY {order} LIMIT %s",
            (*after, limit))
        return [tuple(row) for row in rows]

    def put_rows(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Write ``rows`` (of ``table``'s columns) into ``table``, each replacing the row with
        the same key (an event: the same seq or id); a push record only when the table has
        no record of the same push."""
        columns, key = COPIED[table]
        names = [name.strip() for name in columns.split(",")]
        places = ", ".join("%s" for _ in range(width(table)))
        with self.conn.cursor() as cursor:
            if table == "events":
                if not self.journal_locked:  # in the journal's order (journal.py)
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (JOURNAL_LOCK,))
                    self.journal_locked = True
                cursor.execute("DELETE FROM events WHERE seq = ANY(%s) OR id = ANY(%s)",
                               ([row[0] for row in rows], [row[1] for row in rows]))
            if key:
                update = ", ".join(f"{n} = EXCLUDED.{n}" for n in names if n not in key)
                conflict = f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {update}"
                cursor.executemany(
                    f"INSERT INTO {table} ({columns}) VALUES ({places}) {conflict}", rows)
            else:
                same = " AND ".join(f"{name} IS NOT DISTINCT FROM %s" for name in SAME_PUSH)
                cursor.executemany(
                    f"INSERT INTO pushes ({columns}) SELECT {places}"
                    f" WHERE NOT EXISTS (SELECT 1 FROM pushes WHERE {same})",
                    [(*row, *(row[names.index(name)] for name in SAME_PUSH)) for row in rows])
        self.changed += len(rows)

    def journal_top(self) -> int:
        """The highest seq the journal has handed out (pruned events count)."""
        row = self.conn.execute(
            f"SELECT greatest(coalesce(pg_sequence_last_value({_SEQUENCE}::regclass), 0),"
            " coalesce((SELECT max(seq) FROM events), 0))").fetchone()
        return int(row[0]) if row else 0

    def raise_journal(self, seq: int) -> None:
        """Make the journal's next seq higher than ``seq`` (never lower it)."""
        top = max(seq, self.journal_top())
        if top > 0:
            self.conn.execute(f"SELECT setval({_SEQUENCE}, %s)", (top,))
