"""HTTP Digest (RFC 7616, ``qop=auth``, MD5 and SHA-256): challenges, nonces, responses.

A nonce is the time it was issued and random bytes, signed with a key of this process: no
state is kept for a nonce until it is used. Once a response with it has been accepted, its
highest nonce count is remembered until the nonce expires, so a (nonce, nc) seen before is
refused: a captured request cannot be replayed.
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

from .users import DIGESTS

_STAMP = struct.Struct(">d")
_MAC_BYTES = 16
_NONCE_BYTES = _STAMP.size + 8 + _MAC_BYTES


class NonceState(Enum):
    FRESH = "fresh"
    STALE = "stale"  # expired (or forgotten): the client retries with a new one, no prompt
    BAD = "bad"  # forged, or a nonce count used before


class Nonces:
    """Issues nonces and remembers the nonce counts used, for at most ``capacity`` nonces."""

    def __init__(self, lifetime: float, capacity: int = 100_000):
        self.lifetime = lifetime
        self._key = secrets.token_bytes(32)
        self._capacity = capacity
        self._used: OrderedDict[str, tuple[float, int]] = OrderedDict()  # nonce: (issued, nc)
        self._forgotten_up_to = 0.0  # nonces issued up to then and not in _used are stale

    def issue(self) -> str:
        body = _STAMP.pack(time.monotonic()) + secrets.token_bytes(8)
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
        """Whether ``nonce`` with count ``nc`` may be used now."""
        issued = self._issued(nonce)
        if issued is None:
            return NonceState.BAD
        if time.monotonic() - issued > self.lifetime:
            return NonceState.STALE
        used = self._used.get(nonce)
        if used is None:
            return NonceState.STALE if issued <= self._forgotten_up_to else NonceState.FRESH
        return NonceState.FRESH if nc > used[1] else NonceState.BAD

    def use(self, nonce: str, nc: int) -> None:
        """Remember that ``nonce`` was accepted with count ``nc`` (after ``state`` said FRESH)."""
        issued = self._issued(nonce)
        assert issued is not None
        self._used[nonce] = (issued, nc)
        self._used.move_to_end(nonce)
        expired = time.monotonic() - self.lifetime
        while self._used:
            oldest, (when, _) = next(iter(self._used.items()))
            if when >= expired and len(self._used) <= self._capacity:
                break
            del self._used[oldest]
            self._forgotten_up_to = max(self._forgotten_up_to, when)


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
