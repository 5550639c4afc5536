"""Who may report: the reporter's authentication modes, chosen per route.

``digest`` and ``basic`` check a user of the users file and say who it is; ``hook`` asks the
plugins' ``authenticate_report`` (an allowed report is then its username's own); ``secret``
checks one shared secret; ``none`` lets anyone report. Where a user is identified, the web
layer lets the report change only that user's devices.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import trio
from werkzeug.datastructures import Headers

from ..config import paths
from ..config.addresses import is_loopback
from ..config.pgurl import has_password
from ..config.tables import AuthConfig, Config
from ..delivery.containment import uncontained
from ..delivery.pluginhost import PluginHost
from ..errors import ConfigError, StoreError, Unavailable, UsersFileError
from ..ingest.fields import fold
from ..model import AuthMode, Report
from . import digest, users

HOOK = "authenticate_report"

log = logging.getLogger("pnbridge.auth")


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
    except UsersFileError as error:
        raise ConfigError([f"auth.users_file: {error}"]) from error


def plugin_problems(config: Config, plugins: PluginHost) -> list[str]:
    """Whether the ``hook`` mode, if used, has a plugin to ask."""
    if "hook" in config.auth.modes(config.reporter) and not plugins.implementers(HOOK):
        return ["auth: the hook mode needs an enabled plugin that implements authenticate_report"]
    return []


@dataclass
class Slots:
    """The checks that hold a worker thread, counted across reloads (a reload's Guard takes
    over its predecessor's, so threads still held by an abandoned hook count)."""

    # scrypt checks at once (CPU and memory bound), and how many may run or wait.
    slow: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(1))
    slow_bound: int = 1
    slow_pending: int = 0
    # Worker threads the hook's plain implementations may hold, blocked or not.
    hook_threads: trio.CapacityLimiter = field(default_factory=lambda: trio.CapacityLimiter(1))

    def resize(self, config: AuthConfig) -> None:
        self.slow.total_tokens = config.basic_checks
        self.slow_bound = config.basic_checks + config.basic_queue
        self.hook_threads.total_tokens = config.hook_threads


class Guard:
    """Checks reports by their route's mode against one config's auth settings."""

    def __init__(
        self,
        config: AuthConfig,
        known: dict[str, users.User],
        plugins: PluginHost,
        nonces: digest.Nonces,
        slots: Slots | None = None,
    ):
        self.config = config
        self.users = known
        self.plugins = plugins
        self.nonces = nonces
        if slots is None:
            slots = Slots()
            slots.resize(config)
        self.slots = slots

    def claimed(self, mode: AuthMode, headers: Headers, report: Report) -> str | None:
        """Who the request says it is, for the per-username limit: the user its
        Authorization header names (``digest``, ``basic``), else the report's username; a
        name longer than 64 characters as its SHA-256, so a limiter key stays small."""
        header = headers.get("Authorization", "")
        name = None
        if mode == "basic":
            name = _basic_credentials(header)[0]
        elif mode == "digest":
            name = (digest.parse_authorization(header) or {}).get("username")
        name = name if name is not None else report.username
        if name is not None and len(name) > 64:
            return "sha256:" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()
        return name

    async def check(
        self, mode: AuthMode, method: str, target: str, headers: Headers,
        report: Report,
    ) -> Verdict:
        """Check ``report``, which came as ``method target`` with ``headers``. Where the
        credentials identify a user, a report naming another username is refused exactly as
        wrong credentials are. Raises Unavailable when the check cannot be made now."""
        if mode == "none":
            return Verdict(True)
        if mode == "secret":
            return Verdict(self._secret_matches(headers, report))
        if mode == "hook":
            return await self._hook(report)
        if mode == "basic":
            return await self._basic(headers.get("Authorization", ""), report.username)
        return await self._digest(method, target, headers.get("Authorization", ""),
                                  report.username)

    def _secret_matches(self, headers: Headers, report: Report) -> bool:
        config = self.config
        given = headers.get(config.secret_header) if config.secret_header else None
        if given is None and config.secret_param:
            wanted = fold(config.secret_param)
            given = next((v for k, v in report.credentials.items() if fold(k) == wanted), None)
        return hmac.compare_digest((given or "").encode(), config.secret.encode())

    async def _hook(self, report: Report) -> Verdict:
        """Ask the plugins, within ``hook_timeout`` seconds; a plain implementation runs in
        a worker thread of the hook's own limiter and is abandoned at the deadline (it
        keeps its thread until it returns, so blocked ones cannot take more than
        ``hook_threads``). A failure or the deadline is Unavailable."""
        plugins = self.plugins
        kwargs = {"username": report.username, "credentials": dict(report.credentials),
                  "report": report}
        answer: Any = None
        name = "-"
        with trio.move_on_after(self.config.hook_timeout) as scope:
            for name in plugins.implementers(HOOK):
                try:
                    if plugins.is_async(name, HOOK):
                        answer = await plugins.call(name, HOOK, **kwargs)
                    else:
                        answer = await trio.to_thread.run_sync(
                            partial(plugins.call_sync, name, HOOK, **kwargs),
                            limiter=self.slots.hook_threads, abandon_on_cancel=True,
                        )
                except BaseException as error:  # anything the plugin raised: a 503
                    if (up := uncontained(error)) is not None:
                        raise up from None
                    # The message may quote the credentials: its type only, the rest at debug.
                    log.error("plugin %s: %s failed: %s", name, HOOK, type(error).__name__)
                    log.debug("plugin %s: %s failed", name, HOOK, exc_info=True)
                    raise Unavailable(f"plugin {name}: {HOOK} failed") from None
                if answer is not None:
                    break
        if scope.cancelled_caught:
            log.error("plugin %s: %s gave no answer within %gs (auth.hook_timeout)",
                      name, HOOK, self.config.hook_timeout)
            raise Unavailable(f"plugin {name}: {HOOK} took too long")
        return Verdict(True, report.username) if answer is True else Verdict(False)

    async def _basic(self, header: str, username: str | None) -> Verdict:
        denied = Verdict(False, challenges=(f'Basic realm="{self.config.realm}", charset="UTF-8"',))
        name, password = _basic_credentials(header)
        user = self.users.get(name) if name is not None and password is not None else None
        slots = self.slots
        if slots.slow_pending >= slots.slow_bound:
            raise Unavailable("too many password checks at once")
        slots.slow_pending += 1
        try:
            ok = await trio.to_thread.run_sync(
                users.scrypt_verify, user.scrypt if user else users.DUMMY_HASH,
                password or "", limiter=slots.slow,
            )
        finally:
            slots.slow_pending -= 1
        return Verdict(True, name) if ok and user and username in (None, name) else denied

    def _challenges(self, stale: bool = False) -> tuple[str, ...]:
        nonce = self.nonces.issue()
        return tuple(
            digest.challenge(self.config.realm, algorithm, nonce, stale)
            for algorithm in self.config.digest_algorithms
        )

    async def _digest(self, method: str, target: str, header: str, username: str | None
                      ) -> Verdict:
        fields = digest.parse_authorization(header)
        needed = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")
        if fields is None or any(name not in fields for name in needed):
            return Verdict(False, challenges=self._challenges())
        algorithm = next(
            (a for a in self.config.digest_algorithms
             if a.lower() == fields.get("algorithm", "MD5").lower()), None,
        )
        nc = int(fields["nc"], 16) if _NC.fullmatch(fields["nc"]) else 0
        if (
            algorithm is None or fields["qop"] != "auth" or fields["realm"] != self.config.realm
            or nc < 1 or not _same_target(fields["uri"], target)
            or fields.get("userhash", "false").lower() != "false"
        ):
            return Verdict(False, challenges=self._challenges())
        state = self.nonces.state(fields["nonce"], nc)
        if state is not digest.NonceState.FRESH:
            return Verdict(False, challenges=self._challenges(state is digest.NonceState.STALE))
        user = self.users.get(fields["username"])
        known = user is not None and user.realm == self.config.realm
        ha1 = user.ha1[algorithm] if known and user else "0" * 64
        expected = digest.response(algorithm, ha1, method, fields).encode()
        given = fields["response"].lower().encode()
        if not (hmac.compare_digest(expected, given) and known
                and username in (None, fields["username"])):
            return Verdict(False, challenges=self._challenges())
        try:
            fresh = await self.nonces.use(fields["nonce"], nc)
        except StoreError as error:
            raise Unavailable(f"the digest nonce cannot be recorded: {error.problem}") from None
        if not fresh:  # the count was used on another instance (or by a request at once)
            return Verdict(False, challenges=self._challenges())
        return Verdict(True, fields["username"])


_NC = re.compile(r"[0-9a-fA-F]{8}")


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    """The username and password of an ``Authorization: Basic`` header; (None, None) when
    it is not one, (name, None) when the decoded text has no colon."""
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # not ASCII, not base64 (binascii.Error), not UTF-8
        return None, None
    name, colon, password = decoded.partition(":")
    return name, password if colon else None


def _same_target(uri: str, target: str) -> bool:
    """Whether the digest ``uri`` names the request target (origin or absolute form)."""
    if uri == target:
        return True
    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. an unclosed "[" in the host
        return False
    return bool(parts.scheme) and parts.path + (f"?{parts.query}" if parts.query else "") == target


def security_warnings(config: Config, config_path: str | None,
                      service: paths.Account | None = None) -> list[str]:
    """What an operator should hear about at startup and from check-config (whose
    ``--user`` names the ``service`` account; else this process or the pnbridge user)."""
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
    if config.storage.url and has_password(config.storage.url):
        warnings.append(
            "[storage] url holds a password: put it in [storage] password_file (mode 0600) "
            "or libpq's PGPASSFILE instead, and remove it from the URL")
    console = config.console
    if console.enabled and console.on_listen and (
            open_to := [a for a in config.server.listen
                        if not is_loopback(a) and not a.startswith(("unix:", "fd://"))]):
        warnings.append(
            f"[console] on_listen serves the operator console on {', '.join(open_to)}, where "
            "the apps report: keep it on [server] admin_listen unless listen is private "
            "(docs/console.md)")
    files = [("config file", config_path)]
    if modes & {"digest", "basic"}:
        files.append(("users file", config.auth.users_file))
    if config.console.enabled:
        files.append(("console's operators file", config.console.users_file))
    for what, path in files:
        if path and (problem := _exposure(path, service)):
            warnings.append(f"the {what} {path} {problem} (it holds credentials)")
    return warnings


def _exposure(path: str, service: paths.Account | None) -> str | None:
    """Who else than the owner and the service can read or change ``path``, with the fix, or
    None. Group-readable is right when the group is the service's (the install guide's
    root:pnbridge 0640); world-readable or group-writable never is."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IRWXO:
        return f"is readable by others (mode {mode:04o}): chmod o-rwx it"
    if mode & (stat.S_IWGRP | stat.S_IXGRP):
        return f"is writable by its group (mode {mode:04o}): chmod g-wx it"
    if mode & stat.S_IRGRP and info.st_gid not in _service_gids(service):
        return (f"is readable by group {paths.group_name(info.st_gid)}, not the service's: "
                f"chgrp {service.group if service else paths.SERVICE_USER} it, or chmod g-r it")
    return None


def _service_gids(service: paths.Account | None) -> set[int]:
    """The groups a group-readable file may have: the ``service`` account's; else this
    process's own when it is not root (the daemon runs as the service user) and the
    pnbridge user's group when there is one."""
    if service is not None:
        return set(service.gids)
    gids = set() if os.geteuid() == 0 else {os.getegid()}
    if (gid := paths.service_group()) is not None:
        gids.add(gid)
    return gids
