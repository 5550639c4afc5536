"""The push API's bearer keys: kept as SHA-256 hashes (``sha256:HEX``), compared in constant
time. A key is random and long, so a fast hash is enough: nothing to brute-force."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from ..config.tables import ApiConfig


def hash_key(key: str) -> str:
    """The ``key_hashes`` entry of ``key``."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A new random key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class ApiKeys:
    """The keys the API accepts: ``[api] keys`` (hashed here) and ``[api] key_hashes``."""

    def __init__(self, config: ApiConfig | None = None):
        lines = [*map(hash_key, config.keys), *config.key_hashes] if config else []
        self._digests = [bytes.fromhex(line.removeprefix("sha256:")) for line in lines]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def match(self, given: str) -> str | None:
        """The id of the key ``given`` (its hash, shortened, for limits and logs), or None.

        Every stored hash is compared, each in constant time."""
        digest = hashlib.sha256(given.encode()).digest()
        found = None
        for stored in self._digests:
            if hmac.compare_digest(digest, stored):
                found = stored.hex()[:12]
        return found
