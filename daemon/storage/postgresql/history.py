"""The push history on PostgreSQL: one row per device per push, kept for ``[storage]
push_history`` and at most ``push_history_max`` rows (pruned by push/history.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import fields
from operator import attrgetter

from ...model import PushRecord
from .journal import Journal

COLUMNS = ", ".join(f.name for f in fields(PushRecord))
_PLACES = ", ".join("%s" for _ in fields(PushRecord))
_VALUES = attrgetter(*(f.name for f in fields(PushRecord)))  # not astuple: it deep-copies


class PushHistory(Journal):
    """The push history's part of the PostgreSQL store."""

    def record_pushes(self, records: Sequence[PushRecord]) -> None:
        """Append ``records`` to the push history."""
        with self.conn.cursor() as cursor:
            cursor.executemany(f"INSERT INTO pushes ({COLUMNS}) VALUES ({_PLACES})",
                               [_VALUES(r) for r in records])
            self.changed += len(records)

    def pushes(self, *, username: str | None = None, selector: str | None = None,
               id: str | None = None, since: float | None = None, limit: int = 100
               ) -> list[PushRecord]:
        """Push records matching every filter given, newest first, at most ``limit``."""
        where, values = _filters(username, selector, id, since)
        rows = self.conn.execute(
            f"SELECT {COLUMNS} FROM pushes WHERE {where}"
            " ORDER BY time DESC, n DESC LIMIT %s", (*values, limit))
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
                f"SELECT n, {COLUMNS} FROM pushes WHERE {where}"
                + (" AND time <= %s AND (time, n) < (%s, %s)" if after else "")
                + " ORDER BY time DESC, n DESC LIMIT %s", (*values, *after, page)
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
            "SELECT trunc(time / %s) * %s AS start, outcome, count(*) FROM pushes"
            " WHERE time >= %s GROUP BY start, outcome ORDER BY start, outcome",
            (bucket, bucket, since))
        return [(float(start), outcome, count) for start, outcome, count in rows]

    def prune_pushes(self, before: float, keep: int) -> int:
        """Remove push records older than ``before``, then the oldest beyond the newest
        ``keep``; how many were removed."""
        removed = self._write("DELETE FROM pushes WHERE time < %s", (before,))
        cut = self.conn.execute(
            "SELECT time FROM pushes ORDER BY time DESC LIMIT 1 OFFSET %s", (keep,)).fetchone()
        if cut is not None:
            removed += self._write("DELETE FROM pushes WHERE time <= %s", (cut[0],))
        return removed


def _filters(username: str | None, selector: str | None, id: str | None,
             since: float | None) -> tuple[str, list[str | float]]:
    """The WHERE clause of the filters given, and its values."""
    where: list[str] = ["true"]
    values: list[str | float] = []
    for column, value in (("username", username), ("selector", selector), ("id", id)):
        if value is not None:
            where.append(f"{column} = %s")
            values.append(value)
    if since is not None:
        where.append("time >= %s")
        values.append(since)
    return " AND ".join(where), values
