"""Waking the delivering instance at once: every transaction that journals sends ``NOTIFY
pnbridge_journal`` (journal.py; PostgreSQL delivers it at the commit, once per
transaction, and drops it on a rollback), and each daemon's ``JournalListener`` waits for it
on a connection of its own (``LISTEN``), from a thread of the writer's (storage/writer.py).
Another instance's event then reaches the holder of the plugin's lease without waiting for
``[plugins] poll_interval``, which stays the fallback while the listener reconnects."""

from __future__ import annotations

import time

import psycopg

from .connect import Credentials
from .journal import CHANNEL


class JournalListener:
    """A LISTEN connection, opened at the first ``wait`` and again after it broke."""

    def __init__(self, credentials: Credentials):
        self.credentials = credentials
        self._conn: psycopg.Connection | None = None

    def wait(self, timeout: float) -> bool:
        """Block until a journaling commit is notified (True) or ``timeout`` seconds pass.
        True as well right after (re)connecting: events may have come meanwhile. Never
        raises: a broken connection waits ``timeout`` and is opened again next time."""
        try:
            if self._conn is None:
                self._conn = psycopg.connect(self.credentials.url, **self.credentials.params,
                                             autocommit=True)
                self._conn.execute(f"LISTEN {CHANNEL}")
                return True
            return any(True for _ in self._conn.notifies(timeout=timeout, stop_after=1))
        except psycopg.Error:
            self.close()
            time.sleep(timeout)
            return False

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()
