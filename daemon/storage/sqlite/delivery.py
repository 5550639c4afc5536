"""Delivery state, per plugin: its cursor (the highest journal seq it has passed) and the
events it gave up on (parked) or an operator asked to send again (retry)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...model import Event, FailureStatus
from ..interface import Failure
from .journal import Journal
from .rows import EVENT_COLUMNS, read_event


class DeliveryState(Journal):
    """The delivery state's part of the SQLite store."""

    def cursors(self) -> dict[str, int]:
        """Every plugin's cursor: the highest seq it has passed."""
        return dict(self.conn.execute("SELECT plugin, seq FROM cursors"))

    def save_cursor(self, plugin: str, seq: int, now: float) -> None:
        """Move ``plugin``'s cursor forward to ``seq`` (never back)."""
        self.conn.execute(
            "INSERT INTO cursors (plugin, seq, updated_at) VALUES (?,?,?) ON CONFLICT (plugin)"
            " DO UPDATE SET seq = max(seq, excluded.seq), updated_at = excluded.updated_at",
            (plugin, seq, now),
        )

    def pending(self, plugin: str, after_seq: int, limit: int) -> tuple[list[Failure], list[Event]]:
        """What ``plugin`` has to do: failures to send again, then events after its cursor."""
        return self.failures(plugin, "retry"), self.events(after_seq, limit)

    def park(
        self, plugin: str, event: Event, attempts: int, error: str, first_try: float, now: float
    ) -> None:
        """Park ``event`` as failed for ``plugin`` and move its cursor past it."""
        self.conn.execute(
            "REPLACE INTO failures (plugin, seq, attempts, error, first_try, parked_at, status)"
            " VALUES (?,?,?,?,?,?,'parked')",
            (plugin, event.seq, attempts, error, first_try, now),
        )
        self.save_cursor(plugin, event.seq, now)

    def unpark(self, plugin: str, seq: int) -> None:
        """Forget a failure: the event was delivered after all."""
        self.conn.execute("DELETE FROM failures WHERE plugin = ? AND seq = ?", (plugin, seq))

    def failures(self, plugin: str | None = None, status: str | None = None,
                 limit: int | None = None) -> list[Failure]:
        """Parked (and retry-requested) events, oldest first; the first ``limit``."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("plugin", plugin), ("status", status)):
            if value is not None:
                where.append(f"f.{column} = ?")
                params.append(value)
        sql = (
            "SELECT f.plugin, f.attempts, f.error, f.first_try, f.parked_at, f.status, "
            + ", ".join(f"e.{c.strip()}" for c in EVENT_COLUMNS.split(","))
            + " FROM failures f JOIN events e ON e.seq = f.seq"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY f.seq, f.plugin"
            + (" LIMIT ?" if limit is not None else "")
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
            sql += " AND plugin = ?"
            params.append(plugin)
        if events:
            marks = ",".join("?" * len(events))
            sql += f" AND seq IN (SELECT seq FROM events WHERE id IN ({marks}) OR seq IN ({marks}))"
            params += [*events, *(int(e) if e.isdigit() else -1 for e in events)]
        return self.conn.execute(sql, params).rowcount

    def prune(self, plugins: Sequence[str], before: float) -> int:
        """Delete events older than ``before`` that every one of ``plugins`` has passed and
        none has parked; return how many."""
        cursors = self.cursors()
        passed = min((cursors.get(p, 0) for p in plugins), default=None)
        sql = "DELETE FROM events WHERE time < ? AND seq NOT IN (SELECT seq FROM failures)"
        params: list[Any] = [before]
        if passed is not None:
            sql += " AND seq <= ?"
            params.append(passed)
        return self.conn.execute(sql, params).rowcount
