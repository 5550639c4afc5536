"""The push history: one row per device per push, kept for ``[storage] push_history`` and at
most ``push_history_max`` rows (pruned by push/history.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import fields
from operator import attrgetter

from ...model import PushRecord

COLUMNS = ", ".join(f.name for f in fields(PushRecord))
_PLACES = ", ".join("?" for _ in fields(PushRecord))
# A record's values in COLUMNS' order (dataclasses.astuple deep-copies: 80 times slower, on
# the writer's thread, which holds the GIL meanwhile).
_VALUES = attrgetter(*(f.name for f in fields(PushRecord)))


class PushHistory:
    """The push history's part of the SQLite store."""

    conn: sqlite3.Connection

    def record_pushes(self, records: Sequence[PushRecord]) -> None:
        """Append ``records`` to the push history."""
        self.conn.executemany(f"INSERT INTO pushes ({COLUMNS}) VALUES ({_PLACES})",
                              [_VALUES(r) for r in records])

    def pushes(self, *, username: str | None = None, selector: str | None = None,
               id: str | None = None, since: float | None = None, limit: int = 100
               ) -> list[PushRecord]:
        """Push records matching every filter given, newest first, at most ``limit``."""
        where, values = _filters(username, selector, id, since)
        rows = self.conn.execute(
            f"SELECT {COLUMNS} FROM pushes WHERE {where}"
            " ORDER BY time DESC, rowid DESC LIMIT ?", (*values, limit))
        return [PushRecord(*row) for row in rows]

    def push_pages(self, *, username: str | None = None, selector: str | None = None,
                   id: str | None = None, since: float | None = None, page: int = 1000
                   ) -> Iterator[list[PushRecord]]:
        """The records ``pushes`` would give without a limit, newest first, ``page`` at a
        time (a query each, from where the last ended): the whole history in bounded
        memory."""
        where, values = _filters(username, selector, id, since)
        after: tuple[float | int, ...] = ()  # the last row's time (twice) and key
        while True:
            rows = self.conn.execute(
                f"SELECT rowid, {COLUMNS} FROM pushes WHERE {where}"
                + (" AND time <= ? AND (time, rowid) < (?, ?)" if after else "")
                + " ORDER BY time DESC, rowid DESC LIMIT ?", (*values, *after, page)
            ).fetchall()
            if rows:
                yield [PushRecord(*row[1:]) for row in rows]
            if len(rows) < page:
                return
            after = (rows[-1][1], rows[-1][1], rows[-1][0])

    def push_counts(self, since: float, bucket: float = 60.0
                    ) -> list[tuple[float, str, int]]:
        """Push records since ``since`` counted per ``bucket`` seconds and outcome:
        ``(bucket start, outcome, count)``, oldest bucket first."""
        rows = self.conn.execute(
            "SELECT CAST(time / ? AS INTEGER) * ? AS start, outcome, count(*) FROM pushes"
            " WHERE time >= ? GROUP BY start, outcome ORDER BY start, outcome",
            (bucket, bucket, since))
        return [(float(start), outcome, count) for start, outcome, count in rows]

    def prune_pushes(self, before: float, keep: int) -> int:
        """Remove push records older than ``before``, then the oldest beyond the newest
        ``keep``; how many were removed."""
        removed = self.conn.execute("DELETE FROM pushes WHERE time < ?", (before,)).rowcount
        cut = self.conn.execute(
            "SELECT time FROM pushes ORDER BY time DESC LIMIT 1 OFFSET ?", (keep,)).fetchone()
        if cut is not None:
            removed += self.conn.execute(
                "DELETE FROM pushes WHERE time <= ?", (cut[0],)).rowcount
        return removed


def _filters(username: str | None, selector: str | None, id: str | None,
             since: float | None) -> tuple[str, list[str | float]]:
    """The WHERE clause of the filters given, and its values."""
    where: list[str] = ["1"]
    values: list[str | float] = []
    for column, value in (("username", username), ("selector", selector), ("id", id)):
        if value is not None:
            where.append(f"{column} = ?")
            values.append(value)
    if since is not None:
        where.append("time >= ?")
        values.append(since)
    return " AND ".join(where), values
