"""Who may use the operator console: the operators file (``[console] users_file``, the
format of ``users.py``, never the phones' ``[auth] users_file``) or a push API key; the
signed session cookie, sessions logged out, and the login limits (per peer, per username)."""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

import trio
from itsdangerous import BadSignature, URLSafeTimedSerializer

from ..config.console import ConsoleConfig
from ..config.tables import AuthConfig, Config
from ..errors import ConfigError, Unavailable, UsersFileError
from . import users
from .apikeys import ApiKeys
from .auth import Slots
from .ratelimit import Buckets

# Logged-out sessions remembered at most (each until its cookie expires anyway).
MAX_REVOKED = 10_000


def load_operators(config: Config) -> dict[str, users.User]:
    """The operators file, when the console is on and names one (blocking: not on the loop).

    Raises ConfigError naming the key when it cannot be read."""
    console = config.console
    if not console.enabled or not console.users_file:
        return {}
    try:
        return users.read(console.users_file)
    except UsersFileError as error:
        raise ConfigError([f"console.users_file: {error}"]) from error


class Operators:
    """The console's access state, kept across reloads (``update``): the operators, the
    cookie signer, the sessions logged out, the login buckets and the scrypt slots."""

    def __init__(self, config: ConsoleConfig, auth: AuthConfig, known: dict[str, users.User]):
        self.config = config
        self.users = known
        # Empty secret: a random one, so every session ends when the daemon restarts.
        self._signer = URLSafeTimedSerializer(config.secret or secrets.token_urlsafe(32),
                                              salt="pnbridge-console-session")
        # Login attempts per socket peer (never X-Forwarded-For: anyone on loopback could
        # send one) and per username tried (all keys tried: one bucket).
        self.logins = Buckets(config.login_rate, config.login_burst, capacity=10_000)
        self.login_names = Buckets(config.login_rate, config.login_burst, capacity=10_000)
        self.slots = Slots()
        self.slots.resize(auth)
        self._revoked: dict[str, float] = {}  # session id: when its cookie expires

    def update(self, config: ConsoleConfig, auth: AuthConfig, known: dict[str, users.User]
               ) -> None:
        """A reload: the operators file, the lifetime and the limits anew (the secret only
        at a restart)."""
        self.config, self.users = config, known
        for buckets in (self.logins, self.login_names):
            buckets.rate, buckets.burst = config.login_rate, config.login_burst
        self.slots.resize(auth)

    async def check_password(self, name: str, password: str) -> bool:
        """Whether ``name`` is an operator with ``password``; an unknown name takes as long.
        The scrypt check runs in a worker thread, as many at once as ``[auth]
        basic_checks``; raises Unavailable when ``basic_queue`` more already wait."""
        user = self.users.get(name)
        ok = await self._scrypt(user.scrypt if user else users.DUMMY_HASH, password)
        return ok and user is not None

    async def check_key(self, keys: ApiKeys, key: str) -> str | None:
        """The operator name of a push API key (``key:<its name or 12-hex id>``), or None
        (``keys.fingerprint(key)`` goes into the session: ``open`` checks it is still a key).
        As slow as a password (a dummy scrypt check, in the same slots): the time tells a
        key from a password no more than a right key from a wrong one."""
        await self._scrypt(users.DUMMY_HASH, key)
        found = keys.match(key) if key else None
        return None if found is None else f"key:{found}"

    async def _scrypt(self, hashed: str, secret: str) -> bool:
        """``users.scrypt_verify`` in a worker thread, bounded by the slots."""
        slots = self.slots
        if slots.slow_pending >= slots.slow_bound:
            raise Unavailable("too many password checks at once")
        slots.slow_pending += 1
        try:
            return await trio.to_thread.run_sync(users.scrypt_verify, hashed, secret,
                                                 limiter=slots.slow)
        finally:
            slots.slow_pending -= 1

    def new_session(self, operator: str | None, key: str | None = None) -> dict[str, Any]:
        """A session: its id, the operator (None before login), its CSRF token, its end;
        for a key login, the key's fingerprint (``ApiKeys.fingerprint``)."""
        session = {"sid": secrets.token_urlsafe(16), "op": operator,
                   "csrf": secrets.token_urlsafe(24),
                   "exp": time.time() + self.config.lifetime_seconds}
        if key is not None:
            session["key"] = key
        return session

    def seal(self, session: dict[str, Any]) -> str:
        """The cookie value of ``session``: signed, not encrypted (it holds no secret)."""
        return self._signer.dumps(session)

    def open(self, cookie: str | None, keys: ApiKeys) -> dict[str, Any] | None:
        """The session a cookie holds, or None when it is forged, expired or logged out, or
        its operator is no longer one: a name gone from the operators file (as last read),
        a key gone from ``keys`` (the current ones)."""
        if not cookie:
            return None
        try:
            session = self._signer.loads(cookie, max_age=math.ceil(self.config.lifetime_seconds))
        except BadSignature:
            return None
        if not isinstance(session, dict) or not isinstance(session.get("exp"), float | int):
            return None
        if session["exp"] <= time.time() or session.get("sid") in self._revoked:
            return None
        op, key = session.get("op"), session.get("key")
        if op is not None and not (keys.holds(key) if isinstance(key, str)
                                   else op in self.users):
            return None
        return session

    def revoke(self, session: dict[str, Any]) -> None:
        """Log ``session`` out: its cookie is refused from now on (until a restart)."""
        now = time.time()
        for sid in [s for s, ends in self._revoked.items() if ends <= now]:
            del self._revoked[sid]
        if len(self._revoked) >= MAX_REVOKED:
            self._revoked.pop(next(iter(self._revoked)))
        self._revoked[str(session.get("sid"))] = float(session.get("exp", now))
