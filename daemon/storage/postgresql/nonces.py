"""HTTP Digest's shared state on PostgreSQL (access/digest.py): the key nonces are signed
with, and each used nonce's highest count, raised by one conditional upsert: of two
instances using one count at once, the second waits for the first's row and then finds its
count not higher (READ COMMITTED re-checks the WHERE on the row committed)."""

from __future__ import annotations

from .journal import Journal


class DigestNonces(Journal):
    """The digest nonces' part of the PostgreSQL store."""

    def digest_key(self, candidate: bytes | None = None) -> bytes | None:
        """The key every instance signs its nonces with: ``candidate`` if there was none;
        without one, only read (None: no key yet)."""
        if candidate is not None:
            self._write("INSERT INTO digest_key (id, key) VALUES (1, %s)"
                        " ON CONFLICT (id) DO NOTHING", (candidate,))
        row = self.conn.execute("SELECT key FROM digest_key WHERE id = 1").fetchone()
        return None if row is None else bytes(row[0])

    def use_nonce(self, nonce: str, issued: float, nc: int) -> bool:
        """Record that ``nonce`` (issued at ``issued``) was accepted with count ``nc``: True
        when it is the nonce's first use or ``nc`` is above every count used before, False
        (nothing changed) when a count of ``nc`` or more was used: a replay."""
        return self._write(
            "INSERT INTO digest_nonces (nonce, issued, nc) VALUES (%s, %s, %s)"
            " ON CONFLICT (nonce) DO UPDATE SET nc = excluded.nc"
            " WHERE digest_nonces.nc < excluded.nc", (nonce, issued, nc)) == 1

    def prune_nonces(self, issued_before: float) -> int:
        """Forget the nonces issued before ``issued_before``; how many."""
        return self._write("DELETE FROM digest_nonces WHERE issued < %s", (issued_before,))
