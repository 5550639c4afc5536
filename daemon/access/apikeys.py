"""The push API's bearer keys: kept as SHA-256 hashes (``sha256:HEX``, or
``NAME:sha256:HEX`` for a named key), compared in constant time. A key is random and long,
so a fast hash is enough: nothing to brute-force."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from ..config.tables import KEY_HASH_LINE, ApiConfig


def hash_key(key: str, name: str | None = None) -> str:
    """The ``key_hashes`` entry of ``key``, named ``name`` when given."""
    line = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return f"{name}:{line}" if name else line


def new_key() -> str:
    """A new random key (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class ApiKeys:
    """The keys the API accepts: ``[api] keys`` (hashed here) and ``[api] key_hashes``."""

    def __init__(self, config: ApiConfig | None = None):
        lines = [*map(hash_key, config.keys), *config.key_hashes] if config else []
        self._digests: list[tuple[bytes, str | None]] = []
        for line in lines:
            parsed = KEY_HASH_LINE.fullmatch(line)
            assert parsed is not None  # the config checked it
            self._digests.append((bytes.fromhex(parsed["hex"]), parsed["name"]))

    def __bool__(self) -> bool:
        return bool(self._digests)

    def match(self, given: str) -> str | None:
        """The key ``given``'s name, else its id (its hash, shortened), or None: what the
        limits, the logs and the push history's requester (``api:<it>``) call the key.

        Every stored hash is compared, each in constant time."""
        digest = hashlib.sha256(given.encode()).digest()
        found = None
        for stored, name in self._digests:
            if hmac.compare_digest(digest, stored):
                found = name or stored.hex()[:12]
        return found

    def fingerprint(self, given: str) -> str:
        """What a console session keeps of the key ``given`` to find it among the keys
        after a reload (``holds``): 16 hex digits of its hash's hash, never the key."""
        return hashlib.sha256(hashlib.sha256(given.encode()).digest()).hexdigest()[:16]

    def holds(self, fingerprint: str) -> bool:
        """Whether a key of ``fingerprint`` (see ``fingerprint``) is still accepted."""
        return any(hmac.compare_digest(hashlib.sha256(stored).hexdigest()[:16], fingerprint)
                   for stored, _ in self._digests)
