"""The event journal: every change to a device is an event, numbered in order (``seq``),
written in the transaction that makes the change."""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

from ...model import Device, Event, EventKind
from .rows import EVENT_COLUMNS, dump_device, read_event


class Journal:
    """The journal's part of the SQLite store (``SQLiteStore`` is the whole)."""

    conn: sqlite3.Connection
    journaled: int  # events this connection wrote (the writer wakes the dispatcher)

    def _journal(
        self,
        kind: EventKind,
        reason: str,
        before: Device | None,
        after: Device | None,
        source: dict[str, Any],
        now: float,
    ) -> Event:
        device = after or before
        assert device is not None
        self.journaled += 1
        event_id = str(uuid.uuid4())
        cursor = self.conn.execute(
            "INSERT INTO events (id, kind, reason, selector, username, before, after, time, source)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (
                event_id, kind, reason, device.selector, device.username,
                dump_device(before), dump_device(after), now, json.dumps(source),
            ),
        )
        assert cursor.lastrowid is not None
        return Event(
            id=event_id, seq=cursor.lastrowid, kind=kind, reason=reason,
            selector=device.selector, username=device.username,
            before=before, after=after, time=now, source=source,
        )

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Journal events with ``seq`` above ``after_seq``, oldest first."""
        rows = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [read_event(row) for row in rows]

    def newest_events(self, limit: int) -> list[Event]:
        """The ``limit`` newest journal events, oldest first."""
        rows = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT ?", (limit,)
        )
        return [read_event(row) for row in rows][::-1]

    def backlog(self, cursor: int) -> tuple[int, float | None]:
        """How many journal events lie beyond ``cursor``, and the time of the oldest."""
        return self.conn.execute(
            "SELECT count(*), min(time) FROM events WHERE seq > ?", (cursor,)
        ).fetchone()

    def device_events(self, *, username: str | None = None, selector: str | None = None,
                      limit: int = 50) -> list[Event]:
        """The newest journal events of a user or a device (either given), newest first."""
        column, value = ("selector", selector) if selector is not None else ("username", username)
        rows = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {column} = ? ORDER BY seq DESC LIMIT ?",
            (value, limit),
        )
        return [read_event(row) for row in rows]
