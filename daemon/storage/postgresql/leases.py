"""Leases on PostgreSQL (storage/interface.py's ``Lease``): one row per name, its holder and
until when. A take is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE``: PostgreSQL locks
the row it updates and checks the condition on its latest committed version, so two
instances never both take one lease. Expiry is decided by the SERVER's clock
(``clock_timestamp()``): the callers' ``now`` is not used, so an instance whose clock runs
ahead cannot find a live holder's lease expired and take it (storage/leasing.py)."""

from __future__ import annotations

from ..interface import Lease
from .journal import Journal

# The server's clock, epoch seconds (what expires_at and renewed_at hold).
_NOW = "(SELECT extract(epoch FROM clock_timestamp())::float8)"


class Leases(Journal):
    """The leases' part of the PostgreSQL store."""

    def take_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Hold ``name`` for ``ttl`` seconds if it is free, expired or ``holder``'s, by the
        server's clock (``now`` is not used)."""
        return self._write(
            "INSERT INTO leases (name, holder, expires_at, renewed_at, taken_at)"
            " SELECT %s, %s, t + %s, t, t FROM " + _NOW + " AS clock (t)"
            " ON CONFLICT (name) DO UPDATE SET"
            " holder = excluded.holder, expires_at = excluded.expires_at,"
            " renewed_at = excluded.renewed_at, taken_at = CASE WHEN leases.holder ="
            " excluded.holder THEN leases.taken_at ELSE excluded.taken_at END"
            " WHERE leases.holder = excluded.holder OR leases.expires_at < excluded.renewed_at",
            (name, holder, ttl),
        ) == 1

    def renew_lease(self, name: str, holder: str, now: float, ttl: float) -> bool:
        """Extend ``holder``'s ``name`` to ``ttl`` seconds from the server's now (``now`` is
        not used); False when it is not its own."""
        return self._write(
            "UPDATE leases SET expires_at = clock.t + %s, renewed_at = clock.t FROM " + _NOW
            + " AS clock (t) WHERE name = %s AND holder = %s",
            (ttl, name, holder),
        ) == 1

    def release_lease(self, name: str, holder: str) -> bool:
        """Give up ``holder``'s ``name``; whether it held it."""
        return self._write("DELETE FROM leases WHERE name = %s AND holder = %s",
                           (name, holder)) == 1

    def leases(self) -> list[Lease]:
        """Every lease row, by name."""
        return [Lease(*row) for row in self.conn.execute(
            "SELECT name, holder, expires_at, renewed_at, taken_at FROM leases ORDER BY name")]

    def clock(self) -> float:
        """The server's clock, epoch seconds (what the leases' times are)."""
        row = self.conn.execute("SELECT " + _NOW).fetchone()
        return float(row[0]) if row else 0.0
