"""Leases (storage/interface.py's ``Lease``): one row per name, its holder and until when.
The writer's transactions are ``BEGIN IMMEDIATE``, so a take reads and writes the row with
no other writer in between: two instances never both take one lease. Times are the
callers': SQLite is one host, so every instance reads the same clock."""

from __future__ import annotations

import sqlite3
import time

from ..interface import Lease


class Leases:
    """The leases' part of the SQLite store."""

    conn: sqlite3.Connection

    def take_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Hold ``name`` until ``now + ttl`` if it is free, expired or ``holder``'s."""
        self.conn.execute(
            "INSERT INTO leases (name, holder, expires_at, renewed_at, taken_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "holder = excluded.holder, expires_at = excluded.expires_at, "
            "renewed_at = excluded.renewed_at, taken_at = CASE WHEN holder = excluded.holder "
            "THEN taken_at ELSE excluded.taken_at END "
            "WHERE holder = excluded.holder OR expires_at < excluded.renewed_at",
            (name, holder, now + ttl, now, now),
        )
        row = self.conn.execute("SELECT holder FROM leases WHERE name = ?", (name,)).fetchone()
        return row is not None and row[0] == holder

    def renew_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Extend ``holder``'s ``name`` to ``now + ttl``; False when it is not its own."""
        return self.conn.execute(
            "UPDATE leases SET expires_at = ?, renewed_at = ? WHERE name = ? AND holder = ?",
            (now + ttl, now, name, holder),
        ).rowcount == 1

    def release_lease(self, name: str, holder: str) -> bool:
        """Give up ``holder``'s ``name``; whether it held it."""
        return self.conn.execute(
            "DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder)
        ).rowcount == 1

    def leases(self) -> list[Lease]:
        """Every lease row, by name."""
        return [Lease(*row) for row in self.conn.execute(
            "SELECT name, holder, expires_at, renewed_at, taken_at FROM leases ORDER BY name")]

    def clock(self) -> float:
        """This host's clock (the instances sharing the file read it too)."""
        return time.time()
