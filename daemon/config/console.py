"""``[console]``: the operator console's table and what it needs of the rest of the config."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .typed import check, duration_problem, parse_duration


def _check_secret(secret: str) -> str | None:
    return None if not secret or len(secret) >= 32 else "must be at least 32 characters"


def _check_positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


@dataclass(frozen=True)
class ConsoleConfig:
    """The operator console (docs/console.md): off unless ``enabled``."""

    enabled: bool = False
    # Served on [server] admin_listen; on listen too only with on_listen.
    on_listen: bool = False
    # The operators: a users file of its own (pnbridge users add --console), never the phones'.
    users_file: str = ""
    session_lifetime: str = field(
        default="8h", metadata=check(lambda t: duration_problem(t) if t else "is empty"))
    # Signs the session cookies; empty: a random one per start (sessions end at a restart).
    secret: str = field(default="", metadata=check(_check_secret))
    # Login attempts per socket peer and per username tried: token buckets (attempts a
    # second, burst).
    login_rate: float = field(default=0.1, metadata=check(_check_positive))
    login_burst: int = field(default=5, metadata=check(lambda n: None if n >= 1 else
                                                       "must be 1 or more"))

    @property
    def lifetime_seconds(self) -> float:
        return parse_duration(self.session_lifetime)


def console_problems(console: ConsoleConfig, admin_listen: list[str], api_keys: bool,
                     phones_file: str) -> list[str]:
    """What an enabled console lacks: somewhere to be served, someone to log in (never with
    a phone's account)."""
    if not console.enabled:
        return []
    problems = []
    if not admin_listen and not console.on_listen:
        problems.append("console.enabled: the console is served on [server] admin_listen, "
                        "which is empty: set admin_listen (or console.on_listen = true to "
                        "serve it on listen)")
    if not console.users_file and not api_keys:
        problems.append("console.users_file: nobody could log in: set an operators file "
                        "(pnbridge users add --console NAME) or [api] keys")
    if console.users_file and phones_file and _same(console.users_file, phones_file):
        problems.append("console.users_file: is [auth] users_file, the phones' accounts, "
                        "which must never log in to the console: give operators a file of "
                        "their own")
    return problems


def _same(one: str, other: str) -> bool:
    return os.path.normpath(os.path.abspath(one)) == os.path.normpath(os.path.abspath(other))
