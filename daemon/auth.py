"""Who may report: the reporter's authentication modes, chosen per route.

``digest`` and ``basic`` check a user of the users file and say who it is; ``hook`` asks the
plugins' ``authenticate_report`` (an allowed report is then its username's own); ``secret``
checks one shared secret; ``none`` lets anyone report. Where a user is identified, the web
layer lets the report change only that user's devices.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import trio

from . import digest, users
from .config import AuthConfig, AuthMode, Config
from .events import Report
from .fields import fold
from .pluginhost import PluginHost
from .settings import ConfigError

HOOK = "authenticate_report"


@dataclass(frozen=True)
class Verdict:
    """The answer for one report: allowed or not, the user the credentials identify (if
    any), and the challenges a 401 carries."""

    allowed: bool
    user: str | None = None
    challenges: tuple[str, ...] = field(default=())


def load_users(config: Config) -> dict[str, users.User]:
    """The users file, when a mode in use needs it (blocking: not on the trio loop).

    Raises ConfigError when it cannot be read.
    """
    if not config.auth.modes(config.reporter) & {"digest", "basic"}:
        return {}
    try:
        return users.read(config.auth.users_file)
    except users.UsersFileError as error:
        raise ConfigError([f"auth.users_file: {error}"]) from error


def plugin_problems(config: Config, plugins: PluginHost) -> list[str]:
    """Whether the ``hook`` mode, if used, has a plugin to ask."""
    if "hook" in config.auth.modes(config.reporter) and not plugins.implementers(HOOK):
        return ["auth: the hook mode needs an enabled plugin that implements authenticate_report"]
    return []


class Guard:
    """Checks reports by their route's mode against one config's auth settings."""

    def __init__(
        self,
        config: AuthConfig,
        known: dict[str, users.User],
        plugins: PluginHost | None,
        nonces: digest.Nonces,
    ):
        self.config = config
        self.users = known
        self.plugins = plugins
        self.nonces = nonces
        self._slow = trio.CapacityLimiter(2)  # scrypt checks at once (CPU and memory bound)

    async def check(
        self, mode: AuthMode, method: str, target: str, headers: Mapping[str, str],
        report: Report,
    ) -> Verdict:
        """Check ``report``, which came as ``method target`` with ``headers``."""
        if mode == "none":
            return Verdict(True)
        if mode == "secret":
            return Verdict(self._secret_matches(headers, report))
        if mode == "hook":
            return await self._hook(report)
        if mode == "basic":
            return await self._basic(headers.get("Authorization", ""))
        return self._digest(method, target, headers.get("Authorization", ""))

    def _secret_matches(self, headers: Mapping[str, str], report: Report) -> bool:
        config = self.config
        given = headers.get(config.secret_header) if config.secret_header else None
        if given is None and config.secret_param:
            wanted = fold(config.secret_param)
            given = next((v for k, v in report.credentials.items() if fold(k) == wanted), None)
        return hmac.compare_digest((given or "").encode(), config.secret.encode())

    async def _hook(self, report: Report) -> Verdict:
        if self.plugins is None:
            return Verdict(False)
        answer = await self.plugins.call_first(
            HOOK, threads=True, username=report.username, credentials=dict(report.credentials),
            report=report,
        )
        return Verdict(True, report.username) if answer is True else Verdict(False)

    async def _basic(self, header: str) -> Verdict:
        denied = Verdict(False, challenges=(f'Basic realm="{self.config.realm}", charset="UTF-8"',))
        scheme, _, encoded = header.strip().partition(" ")
        if scheme.lower() != "basic":
            return denied
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return denied
        name, colon, password = decoded.partition(":")
        user = self.users.get(name)
        stored = user.scrypt if user and colon else users.DUMMY_HASH
        ok = await trio.to_thread.run_sync(
            users.scrypt_verify, stored, password, limiter=self._slow
        )
        return Verdict(True, name) if ok and user and colon else denied

    def _challenges(self, stale: bool = False) -> tuple[str, ...]:
        nonce = self.nonces.issue()
        return tuple(
            digest.challenge(self.config.realm, algorithm, nonce, stale)
            for algorithm in self.config.digest_algorithms
        )

    def _digest(self, method: str, target: str, header: str) -> Verdict:
        fields = digest.parse_authorization(header)
        needed = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if fields is None or any(name not in fields for name in needed):
            return Verdict(False, challenges=self._challenges())
        algorithm = next(
            (a for a in self.config.digest_algorithms
             if a.lower() == fields.get("algorithm", "MD5").lower()), None,
        )
        try:
            nc = int(fields["nc"], 16)
        except ValueError:
            nc = -1
        if (
            algorithm is None or fields["qop"] != "auth" or fields["realm"] != self.config.realm
            or nc < 1 or len(fields["nc"]) != 8 or not _same_target(fields["uri"], target)
            or fields.get("userhash", "false").lower() != "false"
        ):
            return Verdict(False, challenges=self._challenges())
        state = self.nonces.state(fields["nonce"], nc)
        if state is not digest.NonceState.FRESH:
            return Verdict(False, challenges=self._challenges(state is digest.NonceState.STALE))
        user = self.users.get(fields["username"])
        known = user is not None and user.realm == self.config.realm
        ha1 = user.ha1[algorithm] if known and user else "0" * 64
        expected = digest.response(algorithm, ha1, method, fields)
        if not (hmac.compare_digest(expected, fields["response"].lower()) and known):
            return Verdict(False, challenges=self._challenges())
        self.nonces.use(fields["nonce"], nc)
        return Verdict(True, fields["username"])


def _same_target(uri: str, target: str) -> bool:
    """Whether the digest ``uri`` names the request target (origin or absolute form)."""
    if uri == target:
        return True
    parts = urlsplit(uri)
    return bool(parts.scheme) and parts.path + (f"?{parts.query}" if parts.query else "") == target


def security_warnings(config: Config, config_path: str | None) -> list[str]:
    """What an operator should hear about at startup and from check-config."""
    warnings = []
    modes = config.auth.modes(config.reporter)
    if "none" in modes:
        warnings.append(
            "reporter routes with auth mode \"none\": anyone who reaches them can "
            "register a phone under any username and receive that user's pushes, or log "
            "users out (set [auth] reporter; see docs/security.md)"
        )
    if config.api.keys:
        warnings.append(
            "[api] keys holds plain keys: store their hashes in [api] key_hashes instead "
            "(pnbridge api-key new prints a key and its hash)"
        )
    files = [("config file", config_path)]
    if modes & {"digest", "basic"}:
        files.append(("users file", config.auth.users_file))
    for what, path in files:
        if path and _readable_by_others(path):
            warnings.append(
                f"the {what} {path} is readable by group or others: chmod 600 it "
                "(it holds credentials)"
            )
    return warnings


def _readable_by_others(path: str) -> bool:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IRWXG | stat.S_IRWXO))
