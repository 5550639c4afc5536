"""Delivery state on PostgreSQL, per plugin: its cursor (the highest journal seq it has
passed) and the events it gave up on (parked) or an operator asked to send again (retry)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...model import Event, FailureStatus
from ..interface import Failure
from ..sqlite.rows import EVENT_COLUMNS, read_event
from .journal import Journal


class DeliveryState(Journal):
    """The delivery state's part of the PostgreSQL store."""

    def cursors(self) -> dict[str, int]:
        """Every plugin's cursor: the highest seq it has passed."""
        return {plugin: seq for plugin, seq in self.conn.execute(
            "SELECT plugin, seq FROM cursors")}

    def save_cursor(self, plugin: str, seq: int, now: float) -> None:
        """Move ``plugin``'s cursor forward to ``seq`` (never back)."""
        self._write(
            "INSERT INTO cursors (plugin, seq, updated_at) VALUES (%s,%s,%s)"
            " ON CONFLICT (plugin) DO UPDATE SET seq = greatest(cursors.seq, excluded.seq),"
            " updated_at = excluded.updated_at", (plugin, seq, now),
        )

    def pending(self, plugin: str, after_seq: int, limit: int) -> tuple[list[Failure], list[Event]]:
        """What ``plugin`` has to do: failures to send again, then events after its cursor."""
        return self.failures(plugin, "retry"), self.events(after_seq, limit)

    def park(
        self, plugin: str, event: Event, attempts: int, error: str, first_try: float, now: float
    ) -> None:
        """Park ``event`` as failed for ``plugin`` and move its cursor past it."""
        self._write(
            "INSERT INTO failures (plugin, seq, attempts, error, first_try, parked_at, status)"
            " VALUES (%s,%s,%s,%s,%s,%s,'parked') ON CONFLICT (plugin, seq) DO UPDATE SET"
            " attempts = excluded.attempts, error = excluded.error,"
            " first_try = excluded.first_try, parked_at = excluded.parked_at,"
            " status = excluded.status",
            (plugin, event.seq, attempts, error, first_try, now),
        )
        self.save_cursor(plugin, event.seq, now)

    def unpark(self, plugin: str, seq: int) -> None:
        """Forget a failure: the event was delivered after all."""
        self._write("DELETE FROM failures WHERE plugin = %s AND seq = %s", (plugin, seq))

    def failures(self, plugin: str | None = None, status: str | None = None,
                 limit: int | None = None) -> list[Failure]:
        """Parked (and retry-requested) events, oldest first; the first ``limit``."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("plugin", plugin), ("status", status)):
            if value is not None:
                where.append(f"f.{column} = %s")
                params.append(value)
        sql = (
            "SELECT f.plugin, f.attempts, f.error, f.first_try, f.parked_at, f.status, "
            + ", ".join(f"e.{c.strip()}" for c in EVENT_COLUMNS.split(","))
            + " FROM failures f JOIN events e ON e.seq = f.seq"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY f.seq, f.plugin"
            + (" LIMIT %s" if limit is not None else "")
        )
        if limit is not None:
            params.append(limit)
        return [Failure(row[0], read_event(row[6:]), *row[1:6])
                for row in self.conn.execute(sql, params)]

    def failure_counts(self) -> dict[tuple[str, FailureStatus], int]:
        """How many failures each plugin has, by status."""
        return {(plugin, status): n for plugin, status, n in self.conn.execute(
            "SELECT plugin, status, count(*) FROM failures GROUP BY plugin, status")}

    def retry(self, plugin: str | None = None, events: Sequence[str] = ()) -> int:
        """Ask for parked events (by seq or id; all when none given) to be sent again."""
        sql = "UPDATE failures SET status = 'retry' WHERE status = 'parked'"
        params: list[Any] = []
        if plugin is not None:
            sql += " AND plugin = %s"
            params.append(plugin)
        if events:
            sql += " AND seq IN (SELECT seq FROM events WHERE id = ANY(%s) OR seq = ANY(%s))"
            params += [list(events), [_seq(e) for e in events]]
        return self._write(sql, params)

    def prune(self, plugins: Sequence[str], before: float) -> int:
        """Delete events older than ``before`` that every one of ``plugins`` has passed and
        none has parked; return how many."""
        cursors = self.cursors()
        passed = min((cursors.get(p, 0) for p in plugins), default=None)
        sql = "DELETE FROM events WHERE time < %s AND seq NOT IN (SELECT seq FROM failures)"
        params: list[Any] = [before]
        if passed is not None:
            sql += " AND seq <= %s"
            params.append(passed)
        return self._write(sql, params)


def _seq(text: str) -> int:
    """``text`` as a journal seq (a bigint); -1 when it is none."""
    return int(text) if text.isdigit() and len(text) < 19 else -1
