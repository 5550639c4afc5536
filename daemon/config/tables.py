"""The TOML configuration: its tables, their defaults, and their validation.

Every key is documented, with its default, in config/pnbridge.toml. Unknown keys and wrong
types are errors that name the key; ``load_config`` collects all of them at once.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigError, TemplateError
from ..ingest.fields import FieldMap, alias_conflicts
from ..ingest.routes import ALLOWED_METHODS, compile_template
from ..model import AuthMode
from ..ops.instance import name_problem
from .addresses import (
    check_admin_listen,
    check_listen,
    check_networks,
)
from .agi import AgiConfig, agi_problems
from .console import ConsoleConfig, console_problems
from .pgurl import url_problem as postgresql_url_problem
from .typed import check, convert, duration_problem, parse_duration

DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_DATABASE = "pnbridge.db"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _at_least_zero(value: float) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _at_least_one(value: int) -> str | None:
    return None if value >= 1 else "must be 1 or more"


@dataclass(frozen=True)
class ServerConfig:
    listen: list[str] = field(
        default_factory=lambda: [DEFAULT_LISTEN], metadata=check(check_listen)
    )
    grace_period: float = field(default=10.0, metadata=check(_positive))
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    access_log: bool = True
    # Where /healthz, /readyz and /metrics are served instead of on `listen` (empty: on `listen`).
    admin_listen: list[str] = field(default_factory=list, metadata=check(check_admin_listen))
    # Peers whose X-Forwarded-For is believed (the client is its rightmost untrusted address).
    trusted_proxies: list[str] = field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"], metadata=check(check_networks)
    )
    max_header_bytes: int = field(
        default=16384, metadata=check(lambda n: _between(n, 1024, 1 << 20))
    )
    max_headers: int = field(default=64, metadata=check(lambda n: _between(n, 8, 1000)))
    # Slow clients: a connection idle this long between requests (or before its request's
    # headers are complete) is closed; one silent this long while its request arrives is
    # closed (not while the request is handled); a request body that takes longer than
    # body_timeout to arrive is answered 408.
    keep_alive_timeout: float = field(default=5.0, metadata=check(_positive))
    read_timeout: float = field(default=10.0, metadata=check(_positive))
    body_timeout: float = field(default=10.0, metadata=check(_positive))
    # SO_REUSEPORT on listen and [agi] listen: several instances on one port (docs/cluster.md).
    reuse_port: bool = False
    # This instance's name among several sharing one store (ops/instance.py); empty:
    # <hostname>:<pid>.
    instance: str = field(default="", metadata=check(lambda n: n and name_problem(n)))


def _between(value: int, low: int, high: int) -> str | None:
    return None if low <= value <= high else f"must be between {low} and {high}"


@dataclass(frozen=True)
class StorageConfig:
    path: str = field(default=DEFAULT_DATABASE, metadata=check(lambda p: None if p else "is empty"))
    busy_timeout: float = field(default=5.0, metadata=check(_positive))
    # Beyond this many devices of one username the least recently seen are removed (0: no cap).
    max_devices_per_user: int = field(default=20, metadata=check(_at_least_zero))
    # Remove devices not seen (no report) for this long, e.g. "90d"; None: never.
    expire_after: str | None = field(default=None, metadata=check(duration_problem))
    # The push history: records kept this long, and at most this many rows (0: none recorded).
    push_history: str = field(default="7d", metadata=check(duration_problem))
    push_history_max: int = field(default=1_000_000, metadata=check(_at_least_zero))
    url: str | None = field(default=None, metadata=check(postgresql_url_problem))
    password_file: str | None = None

    @property
    def expire_seconds(self) -> float | None:
        return None if self.expire_after is None else parse_duration(self.expire_after)

    @property
    def push_history_seconds(self) -> float:
        return parse_duration(self.push_history)


def _check_template(template: str) -> str | None:
    try:
        compile_template(template)
    except TemplateError as error:
        return str(error)
    return None


def _check_methods(methods: list[str] | None) -> str | None:
    if methods is None:
        return None
    if not methods:
        return "needs at least one method"
    bad = [m for m in methods if m not in ALLOWED_METHODS]
    if bad:
        return f"unknown method(s) {', '.join(bad)} (allowed: {', '.join(ALLOWED_METHODS)})"
    return None


@dataclass(frozen=True)
class RouteConfig:
    path: str = field(metadata=check(_check_template))
    kind: Literal["token", "removal"]
    methods: list[str] | None = field(default=None, metadata=check(_check_methods))
    auth: AuthMode | None = None  # None: [auth] reporter


def _check_aliases(aliases: dict[str, list[str]]) -> str | None:
    return "; ".join(alias_conflicts(aliases)) or None


def _check_max_body(size: int) -> str | None:
    return None if 1024 <= size <= 16 * 1024 * 1024 else "must be between 1024 and 16777216 bytes"


@dataclass(frozen=True)
class ReporterConfig:
    routes: list[RouteConfig] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict, metadata=check(_check_aliases))
    credential_fields: list[str] = field(default_factory=list)
    default_routes: bool = True
    max_body: int = field(default=64 * 1024, metadata=check(_check_max_body))
    # Token buckets: requests per second refilled, and the burst allowed (rate 0: no limit).
    client_rate: float = field(default=5.0, metadata=check(_at_least_zero))
    client_burst: int = field(default=60, metadata=check(_at_least_one))
    username_rate: float = field(default=0.1, metadata=check(_at_least_zero))
    username_burst: int = field(default=20, metadata=check(_at_least_one))
    # IPv6 clients share a per-client bucket per network of this prefix length (a host
    # usually holds a whole /64).
    ipv6_prefix: int = field(
        default=64, metadata=check(lambda n: None if 1 <= n <= 128 else "must be 1 to 128")
    )
    # Extras (fields that are neither canonical nor credentials): at most this many, each
    # (name and value, as stored in JSON) at most max_extra_bytes, all at most max_extras_bytes.
    max_extras: int = field(default=32, metadata=check(lambda n: _between(n, 0, 1000)))
    max_extra_bytes: int = field(default=512, metadata=check(lambda n: _between(n, 16, 65536)))
    max_extras_bytes: int = field(
        default=4096, metadata=check(lambda n: _between(n, 16, 1 << 20))
    )


def _check_realm(realm: str) -> str | None:
    if not realm or not realm.isprintable() or any(c in realm for c in '":\\'):
        return "must be non-empty, printable, without '\"', ':' or '\\'"
    return None


def _check_secret(secret: str) -> str | None:
    return None if not secret or len(secret) >= 16 else "must be at least 16 characters"


@dataclass(frozen=True)
class AuthConfig:
    reporter: AuthMode = "none"
    realm: str = field(default="pnbridge", metadata=check(_check_realm))
    users_file: str = ""
    nonce_lifetime: float = field(default=300.0, metadata=check(_positive))
    digest_algorithms: list[Literal["MD5", "SHA-256"]] = field(
        default_factory=lambda: ["MD5", "SHA-256"],
        metadata=check(lambda a: None if a and len(set(a)) == len(a) else "one or both, once"),
    )
    secret: str = field(default="", metadata=check(_check_secret))
    secret_header: str = "X-Pnbridge-Secret"
    secret_param: str = "secret"
    # The hook mode: seconds a plugin's authenticate_report may take (then 503), and the
    # worker threads plain hooks may hold at once (more wait, within the same deadline).
    hook_timeout: float = field(default=2.0, metadata=check(_positive))
    hook_threads: int = field(default=8, metadata=check(_at_least_one))
    # The basic mode: scrypt checks at once, and how many more may wait (beyond: 503).
    basic_checks: int = field(default=2, metadata=check(_at_least_one))
    basic_queue: int = field(default=32, metadata=check(_at_least_zero))

    def modes(self, reporter: ReporterConfig) -> set[AuthMode]:
        """The modes the reporter routes use."""
        used = {r.auth or self.reporter for r in reporter.routes}
        return used | {self.reporter} if reporter.default_routes else used

def _check_keys(keys: list[str]) -> str | None:
    short = [i for i, key in enumerate(keys) if len(key) < 16]
    if short:
        return f"key(s) at index {', '.join(map(str, short))} shorter than 16 characters"
    return None


# A key_hashes entry: "sha256:HEX", or "NAME:sha256:HEX" to name the key (the requester
# the push history records: api:NAME).
KEY_NAME = r"[A-Za-z0-9._-]{1,64}"
KEY_HASH_LINE = re.compile(rf"(?:(?P<name>{KEY_NAME}):)?sha256:(?P<hex>[0-9a-f]{{64}})")


def _check_key_hashes(lines: list[str]) -> str | None:
    bad = [f"{line!r}" for line in lines if not KEY_HASH_LINE.fullmatch(line)]
    return (f"not [NAME:]sha256:<64 lower-case hex digits> (a NAME of 1 to 64 of A-Z a-z 0-9 "
            f". _ -): {', '.join(bad)}" if bad else None)


@dataclass(frozen=True)
class DeadlinesConfig:
    """Seconds a push of each verb may take, retries included (a late call push is worthless)."""

    NotifyIncomingCall: float = field(default=4.0, metadata=check(_positive))
    NotifyIncomingCallMissed: float = field(default=4.0, metadata=check(_positive))
    NotifyIncomingCallAnsweredElsewhere: float = field(default=4.0, metadata=check(_positive))
    NotifyTextMessage: float = field(default=30.0, metadata=check(_positive))
    NotifyGenericTextMessage: float = field(default=30.0, metadata=check(_positive))


@dataclass(frozen=True)
class ApiConfig:
    """The PBX push API: off (404) while ``keys`` is empty."""

    keys: list[str] = field(default_factory=list, metadata=check(_check_keys))
    # Keys as `pnbridge api-key new` prints them: "sha256:HEX", or "NAME:sha256:HEX" with
    # --name (the key itself is not kept).
    key_hashes: list[str] = field(default_factory=list, metadata=check(_check_key_hashes))
    # Serve the API only on [server] admin_listen (loopback or a unix socket), not on listen.
    admin_only: bool = False
    # Token bucket per key: requests a second, and the burst (rate 0: no limit).
    key_rate: float = field(default=20.0, metadata=check(_at_least_zero))
    key_burst: int = field(default=200, metadata=check(_at_least_one))
    # Push requests whose fan-out may be under way at once; beyond them 503.
    max_in_flight: int = field(default=1000, metadata=check(_at_least_one))
    deadlines: DeadlinesConfig = field(default_factory=DeadlinesConfig)


def _check_enabled(names: list[str]) -> str | None:
    twice = sorted({n for n in names if names.count(n) > 1})
    return f"listed twice: {', '.join(twice)}" if twice else None


@dataclass(frozen=True)
class DeliveryConfig:
    """How one plugin's events are retried: ``[plugins.NAME.delivery]``."""

    max_attempts: int = field(default=10, metadata=check(_at_least_one))
    max_age: float = field(default=86400.0, metadata=check(_positive))
    timeout: float = field(default=30.0, metadata=check(_positive))
    backoff: float = field(default=1.0, metadata=check(_positive))
    max_backoff: float = field(default=600.0, metadata=check(_positive))


@dataclass(frozen=True)
class PluginsConfig:
    """``[plugins]``; ``tables`` holds the ``[plugins.NAME]`` tables, checked by pluginhost."""

    enabled: list[str] = field(default_factory=list, metadata=check(_check_enabled))
    # Enabled plugins the daemon may run without: one that cannot be loaded or whose
    # startup fails is logged and left out instead of stopping startup.
    optional: list[str] = field(default_factory=list, metadata=check(_check_enabled))
    paths: list[str] = field(default_factory=list)
    retention: float = field(default=7 * 86400.0, metadata=check(_at_least_zero))
    prune_interval: float = field(default=600.0, metadata=check(_positive))
    # Seconds a delivery or maintenance lease lasts unless renewed (every third of it):
    # a dead holder's plugins are taken over within this (docs/cluster.md).
    lease_time: float = field(
        default=15.0, metadata=check(lambda t: None if t >= 3 else "must be 3 or more"))
    # Seconds between looks at the journal for events other processes wrote.
    poll_interval: float = field(default=0.5, metadata=check(_positive))
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    reporter: ReporterConfig = field(default_factory=ReporterConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    agi: AgiConfig = field(default_factory=AgiConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)


def _split_plugin_tables(data: dict) -> dict:
    """``data`` with each ``[plugins.NAME]`` sub-table moved into ``plugins.tables``."""
    plugins = data.get("plugins")
    if not isinstance(plugins, dict):
        return data
    keys = {k: v for k, v in plugins.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in plugins.items() if isinstance(v, dict)}
    return {**data, "plugins": {**keys, "tables": tables}}


def parse_config(data: dict) -> Config:
    """Validate parsed TOML; raise ConfigError listing every problem.

    The ``[plugins.NAME]`` tables are checked against each plugin's settings when the
    plugins are loaded (``pluginhost.load_plugins``).
    """
    errors: list[str] = []
    config = convert(Config, _split_plugin_tables(data), "", errors)
    if config is not None:
        errors += _auth_problems(config)
        errors += _timing_problems(config)
        if config.api.admin_only and not config.server.admin_listen:
            errors.append("api.admin_only: needs [server] admin_listen to serve the API on")
        errors += agi_problems(config.agi)
        keys = bool(config.api.keys or config.api.key_hashes)
        errors += console_problems(config.console, config.server.admin_listen, keys,
                                   config.auth.users_file)
    if errors or config is None:
        raise ConfigError(errors)
    return config


def _timing_problems(config: Config) -> list[str]:
    """Timeouts that cannot work together."""
    busy, grace = config.storage.busy_timeout, config.server.grace_period
    if busy > grace:
        return [f"storage.busy_timeout: {busy:g} s is longer than server.grace_period"
                f" ({grace:g} s): a report waiting for a lock when the daemon stops would be"
                " cut off without an answer"]
    return []


def _auth_problems(config: Config) -> list[str]:
    """What the reporter's auth modes need and the config lacks."""
    auth, modes = config.auth, config.auth.modes(config.reporter)
    problems = []
    if modes & {"digest", "basic"} and not auth.users_file:
        problems.append("auth.users_file: the digest and basic modes need a users file")
    if "secret" in modes:
        if not auth.secret:
            problems.append("auth.secret: the secret mode needs a secret")
        fields = FieldMap(config.reporter.fields, config.reporter.credential_fields)
        if not (auth.secret_header or auth.secret_param):
            problems.append("auth.secret_header: the secret mode needs a header or a parameter")
        if auth.secret_param and not fields.is_credential(auth.secret_param):
            problems.append(
                f"auth.secret_param: {auth.secret_param!r} is not a credential field (add it"
                " to reporter.credential_fields, so that it is never stored)"
            )
    return problems


def load_config(path: str | None) -> Config:
    """The config in the TOML file ``path``, or the embedded defaults when ``path`` is None."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from error
    except UnicodeDecodeError as error:
        raise ConfigError([f"{path}: not UTF-8 (byte {error.start})"]) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from error
    return parse_config(data)

