"""``[agi]``: the FastAGI service's table and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from .addresses import check_agi_listen, is_loopback
from .typed import check


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _between(value: int, low: int, high: int) -> str | None:
    return None if low <= value <= high else f"must be between {low} and {high}"


@dataclass(frozen=True)
class AgiConfig:
    """The FastAGI service for Asterisk (docs/pbx-integration.md): off while ``listen`` is
    empty."""

    listen: list[str] = field(default_factory=list, metadata=check(check_agi_listen))
    # FastAGI has no authentication: an address that is not loopback needs this.
    allow_remote: bool = False
    # Sessions at once; more connections are closed at once (PNBRIDGE_STATUS stays empty).
    max_sessions: int = field(default=100, metadata=check(lambda n: _between(n, 1, 10000)))
    # Seconds Asterisk may take to send a line (its environment, each answer).
    read_timeout: float = field(default=5.0, metadata=check(_positive))
    # Seconds /wake waits for a contact without a timeout argument, and at most with one.
    default_wait: float = field(default=20.0, metadata=check(_positive))
    max_wait: float = field(default=60.0, metadata=check(_positive))
    # Seconds between two questions to Asterisk for the endpoint's contacts.
    poll_interval: float = field(default=0.25, metadata=check(_positive))
    # Seconds a whole session may take; it must be longer than max_wait.
    session_timeout: float = field(default=90.0, metadata=check(_positive))


def agi_problems(agi: AgiConfig) -> list[str]:
    """FastAGI addresses anyone could reach, and timeouts that cannot work together."""
    problems = []
    remote = [a for a in agi.listen if not is_loopback(a)]
    if remote and not agi.allow_remote:
        problems.append(
            f"agi.listen: {', '.join(remote)} is not a loopback address; FastAGI has no"
            " authentication (whoever connects can wake any user's phones): set"
            " agi.allow_remote = true to listen there, and let only the PBX reach it")
    if agi.default_wait > agi.max_wait:
        problems.append(f"agi.default_wait: {agi.default_wait:g} s is longer than"
                        f" agi.max_wait ({agi.max_wait:g} s)")
    if agi.session_timeout <= agi.max_wait:
        problems.append(f"agi.session_timeout: {agi.session_timeout:g} s must be longer than"
                        f" agi.max_wait ({agi.max_wait:g} s)")
    return problems
