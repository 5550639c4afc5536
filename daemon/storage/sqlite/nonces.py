"""HTTP Digest's shared state (access/digest.py): the key nonces are signed with, and each
used nonce's highest count, so that every instance on the database honours a nonce another
issued and refuses a count another accepted."""

from __future__ import annotations

import sqlite3


class DigestNonces:
    """The digest nonces' part of the SQLite store."""

    conn: sqlite3.Connection

    def digest_key(self, candidate: bytes | None = None) -> bytes | None:
        """The key every instance signs its nonces with: ``candidate`` if there was none;
        without one, only read (None: no key yet)."""
        if candidate is not None:
            self.conn.execute("INSERT OR IGNORE INTO digest_key (id, key) VALUES (1, ?)",
                              (candidate,))
        row = self.conn.execute("SELECT key FROM digest_key WHERE id = 1").fetchone()
        return None if row is None else bytes(row[0])

    def use_nonce(self, nonce: str, issued: float, nc: int) -> bool:
        """Record that ``nonce`` (issued at ``issued``) was accepted with count ``nc``: True
        when it is the nonce's first use or ``nc`` is above every count used before, False
        (nothing changed) when a count of ``nc`` or more was used: a replay."""
        cursor = self.conn.execute(
            "INSERT INTO digest_nonces (nonce, issued, nc) VALUES (?, ?, ?) "
            "ON CONFLICT (nonce) DO UPDATE SET nc = excluded.nc WHERE nc < excluded.nc",
            (nonce, issued, nc))
        return cursor.rowcount == 1

    def prune_nonces(self, issued_before: float) -> int:
        """Forget the nonces issued before ``issued_before``; how many."""
        return self.conn.execute("DELETE FROM digest_nonces WHERE issued < ?",
                                 (issued_before,)).rowcount
