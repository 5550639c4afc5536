"""HTTP Digest (RFC 7616, ``qop=auth``, MD5 and SHA-256): challenges, nonces, responses.

A nonce is the wall-clock time it was issued and random bytes, signed with a key kept in the
store (every instance on the store signs with the same one, so a nonce one issued works on
all): nothing is kept for a nonce until it is used. Once a response with it has been
accepted, its highest nonce count is kept in the store until the nonce has expired, and
raised only by a conditional write (``use_nonce``), atomic across instances: a (nonce, nc)
seen before, on any instance, is refused, so a captured request cannot be replayed. Each
instance remembers the counts it has seen, to refuse a replay it knows of without asking the
store; a first use and each higher count cost one write, in the writer's batches.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import struct
import time
from collections import OrderedDict
from enum import Enum
from operator import methodcaller

from ..storage.interface import Store
from ..storage.writer import Writer
from .users import DIGESTS

_STAMP = struct.Struct(">d")
_MAC_BYTES = 16
_NONCE_BYTES = _STAMP.size + 8 + _MAC_BYTES


class NonceState(Enum):
    FRESH = "fresh"
    STALE = "stale"  # expired: the client retries with a new one, no prompt
    BAD = "bad"  # forged, or a nonce count used before


class Nonces:
    """Issues nonces and checks their counts against the store's, remembering the counts
    of at most ``capacity`` nonces here."""

    def __init__(self, writer: Writer, key: bytes, lifetime: float, capacity: int = 100_000):
        self.writer = writer
        self.lifetime = lifetime
        self._key = key
        self._capacity = capacity
        self._seen: OrderedDict[str, int] = OrderedDict()  # nonce: a count used (or higher)
        self._pruned = time.time()  # when expired nonces were last removed from the store

    @classmethod
    async def open(cls, writer: Writer, lifetime: float) -> Nonces:
        """Nonces signed with the store's key (this one's, when the store has none yet):
        read on a reader; written once, by the first instance to start."""
        key = await writer.reader.call(methodcaller("digest_key"))
        if key is None:
            key = await writer.call(methodcaller("digest_key", secrets.token_bytes(32)))
        assert key is not None
        return cls(writer, key, lifetime)

    def issue(self) -> str:
        body = _STAMP.pack(time.time()) + secrets.token_bytes(8)
        return base64.urlsafe_b64encode(body + self._mac(body)).decode()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_BYTES]

    def _issued(self, nonce: str) -> float | None:
        try:
            raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
        except ValueError:
            return None
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(raw) != _NONCE_BYTES or not hmac.compare_digest(mac, self._mac(body)):
            return None
        return _STAMP.unpack(body[: _STAMP.size])[0]

    def state(self, nonce: str, nc: int) -> NonceState:
        """Whether ``nonce`` with count ``nc`` may be used, as far as this instance knows
        (``use`` asks the store)."""
        issued = self._issued(nonce)
        if issued is None:
            return NonceState.BAD
        if time.time() - issued > self.lifetime:
            return NonceState.STALE
        return NonceState.BAD if nc <= self._seen.get(nonce, 0) else NonceState.FRESH

    async def use(self, nonce: str, nc: int) -> bool:
        """Record in the store that ``nonce`` (``state`` said FRESH) was accepted with count
        ``nc``: False when that count was used before, on any instance. Once a lifetime,
        the same write forgets the nonces that expired a lifetime ago (a margin for the
        instances' clocks). Raises StoreError."""
        issued = self._issued(nonce)
        assert issued is not None
        now = time.time()
        prune = None
        if now - self._pruned > self.lifetime:
            self._pruned, prune = now, now - 2 * self.lifetime
        accepted = await self.writer.call(_use, nonce, issued, nc, prune)
        self._seen[nonce] = max(nc, self._seen.pop(nonce, 0))
        while len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        return accepted


def _use(store: Store, nonce: str, issued: float, nc: int, prune: float | None) -> bool:
    """On the writer's thread: prune (when ``prune`` is a time), then use the nonce."""
    if prune is not None:
        store.prune_nonces(prune)
    return store.use_nonce(nonce, issued, nc)


def challenge(realm: str, algorithm: str, nonce: str, stale: bool = False) -> str:
    """One ``WWW-Authenticate`` value."""
    return (
        f'Digest realm="{realm}", qop="auth", algorithm={algorithm}, nonce="{nonce}"'
        + (", stale=true" if stale else "")
    )


# RFC 9110 11.2: auth-param = token BWS "=" BWS ( token / quoted-string ), comma-separated.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(
    rf'[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:({_TOKEN})|"((?:[^"\\\x00-\x08\x0a-\x1f\x7f]'
    rf'|\\[^\x00-\x08\x0a-\x1f\x7f])*)")[ \t]*(,|$)'
)
_ESCAPE = re.compile(r"\\(.)")


def parse_authorization(header: str) -> dict[str, str] | None:
    """The fields of an ``Authorization: Digest ...`` header, or None when it is not one that
    parses strictly: every parameter ``name=token`` or ``name="quoted"`` (RFC 9110 11.2), none
    twice, the whole header valid UTF-8 (HTTP header values arrive decoded as latin-1)."""
    try:
        header = header.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest" or not rest.strip():
        return None
    fields: dict[str, str] = {}
    at, end = 0, len(rest)
    while at < end:
        found = _PARAM.match(rest, at)
        if found is None or (found.group(4) == "," and found.end() == end):
            return None
        name, token, quoted = found.group(1).lower(), found.group(2), found.group(3)
        if name in fields:
            return None
        fields[name] = token if token is not None else _ESCAPE.sub(r"\1", quoted)
        at = found.end()
    return fields


def response(algorithm: str, ha1: str, method: str, fields: dict[str, str]) -> str:
    """The ``response`` a client holding ``ha1`` sends, for ``qop=auth`` (RFC 7616 3.4.1)."""
    h = DIGESTS[algorithm]
    ha2 = h(f"{method}:{fields['uri']}".encode()).hexdigest()
    data = f"{ha1}:{fields['nonce']}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}"
    return h(data.encode()).hexdigest()
