"""The event journal on PostgreSQL: every change to a device is an event, numbered in order
(``seq``), written in the transaction that makes the change.

The order trap. ``seq`` comes from an identity (a sequence), and sequence values are handed
out when a row is inserted, not when its transaction commits: transaction A takes seq 7,
transaction B takes seq 8 and commits first. A plugin's dispatcher that reads the journal
then sees 8, delivers it and moves its cursor to 8; when A commits, 7 lies behind the
cursor and is never delivered. SQLite has no such gap (one writer at a time); PostgreSQL
has several writers as soon as two instances (or a command) share the database.

So the journal's order is made commit order: every transaction that journals takes the
transaction-level advisory lock ``JOURNAL_LOCK`` before it inserts its first event, and
holds it to its commit (or rollback). Whoever takes a seq holds the lock, so the seqs of
two journaling transactions never interleave, and the lock is released only after the
commit is visible: a reader that sees seq N committed can never later see a committed seq
below N (one still uncommitted below N would hold the lock, so N could not have been
taken). The cost is that journaling transactions commit one after another, across every
connection; the writer's group commit (one transaction for many reports) keeps that
cheap, and what journals nothing (a report that changes nothing, the push history, the
cursors) never waits for it. A gap a rolled-back transaction leaves is never filled, so a
reader may move past it. tests/test_pg_journal_order.py races readers against writers.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from ...model import Device, Event, EventKind
from ..sqlite.rows import EVENT_COLUMNS, dump_device, read_event

# The advisory lock key of the journal's order (any fixed bigint of pnbridge's own).
JOURNAL_LOCK = 0x706E62_0002
# Notified by every transaction that journals (notify.py wakes the delivering instance).
CHANNEL = "pnbridge_journal"


class Journal:
    """The journal's part of the PostgreSQL store (``PostgreSQLStore`` is the whole), and
    what every part writes with (``_write``)."""

    conn: psycopg.Connection
    journaled: int  # events this connection wrote (the writer wakes the dispatcher)
    changed: int  # rows this connection's statements changed (``changes()``)
    journal_locked: bool  # this transaction holds JOURNAL_LOCK

    def _write(self, sql: str, params: Any = None) -> int:
        """Run the changing statement ``sql``; how many rows it changed (counted)."""
        count = max(self.conn.execute(sql, params).rowcount, 0)
        self.changed += count
        return count

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
        if not self.journal_locked:
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (JOURNAL_LOCK,))
            self.conn.execute(f"NOTIFY {CHANNEL}")  # sent at the commit (notify.py)
            self.journal_locked = True
        event_id = str(uuid.uuid4())
        row = self.conn.execute(
            "INSERT INTO events (id, kind, reason, selector, username, before, after, time,"
            " source) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING seq",
            (
                event_id, kind, reason, device.selector, device.username,
                dump_device(before), dump_device(after), now, json.dumps(source),
            ),
        ).fetchone()
        assert row is not None
        self.changed += 1
        self.journaled += 1
        return Event(
            id=event_id, seq=row[0], kind=kind, reason=reason,
            selector=device.selector, username=device.username,
            before=before, after=after, time=now, source=source,
        )

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Journal events with ``seq`` above ``after_seq``, oldest first."""
        rows = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > %s ORDER BY seq LIMIT %s",
            (after_seq, limit),
        )
        return [read_event(row) for row in rows]

    def newest_events(self, limit: int) -> list[Event]:
        """The ``limit`` newest journal events, oldest first."""
        rows = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT %s", (limit,)
        )
        return [read_event(row) for row in rows][::-1]

    def backlog(self, cursor: int) -> tuple[int, float | None]:
        """How many journal events lie beyond ``cursor``, and the time of the oldest."""
        row = self.conn.execute(
            "SELECT count(*), min(time) FROM events WHERE seq > %s", (cursor,)
        ).fetchone()
        assert row is not None
        return row[0], row[1]

    def device_events(self, *, username: str | None = None, selector: str | None = None,
                      limit: int = 50) -> list[Event]:
        """The newest journal events of a user or a device (either given), newest first."""
        column, value = ("selector", selector) if selector is not None else ("username", username)
        rows = self.conn.execute(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE {column} = %s ORDER BY seq DESC"
            " LIMIT %s", (value, limit),
        )
        return [read_event(row) for row in rows]
