"""Leases on PostgreSQL (storage/interface.py's ``Lease``): one row per name, its holder and
until when. A take is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``: PostgreSQL locks
the row it updates and checks the condition on its latest committed version, so two
instances never both take one lease. Times are the callers' (storage/leasing.py)."""

from __future__ import annotations

from ..interface import Lease
from .journal import Journal


class Leases(Journal):
    """The leases' part of the PostgreSQL store."""

    def take_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Hold ``name`` until ``now + ttl`` if it is free, expired or ``holder``'s."""
        return self._write(
            "INSERT INTO leases (name, holder, expires_at, renewed_at, taken_at)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET"
            " holder = excluded.holder, expires_at = excluded.expires_at,"
            " renewed_at = excluded.renewed_at, taken_at = CASE WHEN leases.holder ="
            " excluded.holder THEN leases.taken_at ELSE excluded.taken_at END"
            " WHERE leases.holder = excluded.holder OR leases.expires_at < excluded.renewed_at",
            (name, holder, now + ttl, now, now),
        ) == 1

    def renew_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Extend ``holder``'s ``name`` to ``now + ttl``; False when it is not its own."""
        return self._write(
            "UPDATE leases SET expires_at = %s, renewed_at = %s WHERE name = %s AND holder = %s",
            (now + ttl, now, name, holder),
        ) == 1

    def release_lease(self, name: str, holder: str) -> bool:
        """Give up ``holder``'s ``name``; whether it held it."""
        return self._write("DELETE FROM leases WHERE name = %s AND holder = %s",
                           (name, holder)) == 1

    def leases(self) -> list[Lease]:
        """Every lease row, by name."""
        return [Lease(*row) for row in self.conn.execute(
            "SELECT name, holder, expires_at, renewed_at, taken_at FROM leases ORDER BY name")]
