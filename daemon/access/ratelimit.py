"""Rate limits (token buckets, in memory, bounded) and the client address they are keyed by."""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from ..config.tables import Config

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Buckets:
    """One token bucket per key: ``burst`` requests at once, refilled at ``rate`` a second.

    At most ``capacity`` keys are tracked; the least recently used one is forgotten first
    (it starts again with a full bucket). A ``rate`` of 0 means no limit.
    """

    def __init__(self, rate: float, burst: int, capacity: int = 50_000):
        self.rate = rate
        self.burst = burst
        self._capacity = capacity
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key: (tokens, at)

    def take(self, key: str) -> float:
        """Take one request from ``key``'s bucket: 0 if allowed, else seconds to wait."""
        if not self.rate:
            return 0.0
        now = time.monotonic()
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self._capacity:
            self._buckets.popitem(last=False)
        return wait


def retry_after(wait: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait)))


def networks(cidrs: Sequence[str]) -> list[Network]:
    return [ipaddress.ip_network(c, strict=False) for c in cidrs]


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the rightmost
    address of ``X-Forwarded-For`` that is not a trusted proxy. A peer on a unix socket (no
    address) is a local proxy and trusted. A hop that is no IP address (with or without a
    port) ends the walk: the client is then the nearest hop believed so far."""
    if peer and not is_trusted(peer, trusted):
        return peer
    nearest = peer or "unix"
    for hop in reversed((forwarded_for or "").split(",")):
        if not hop.strip():
            continue
        address = _ip(hop.strip())
        if address is None:
            break
        nearest = address
        if not is_trusted(address, trusted):
            break
    return nearest


def _ip(hop: str) -> str | None:
    """``hop`` as a normalized IP address (``1.2.3.4:80`` and ``[::1]:443`` lose the port),
    or None when it is none."""
    if hop.startswith("["):
        hop = hop[1:].partition("]")[0]
    elif hop.count(":") == 1:
        hop = hop.partition(":")[0]
    try:
        return str(ipaddress.ip_address(hop))
    except ValueError:
        return None


def client_key(address: str, ipv6_prefix: int = 64) -> str:
    """The per-client limit's key for ``address``: an IPv6 address stands for its network of
    ``ipv6_prefix`` bits (one host holds a whole /64); an IPv4 address, an IPv4-mapped IPv6
    one included, and anything that is no address stand for themselves."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, ipv6_prefix), strict=False))
    return str(ip)


def is_trusted(address: str, trusted: Sequence[Network]) -> bool:
    """Whether ``address`` (an IP address) is one of the ``trusted`` proxies'."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


@dataclass
class Limits:
    """The reporter's rate limits, and the proxies whose X-Forwarded-For is believed."""

    per_client: Buckets
    per_username: Buckets
    trusted: list[Network]
    ipv6_prefix: int = 64

    def client_key(self, address: str) -> str:
        """The per-client bucket ``address`` takes from."""
        return client_key(address, self.ipv6_prefix)

    @classmethod
    def of(cls, config: Config) -> Limits:
        reporter = config.reporter
        return cls(
            Buckets(reporter.client_rate, reporter.client_burst),
            Buckets(reporter.username_rate, reporter.username_burst),
            networks(config.server.trusted_proxies),
            reporter.ipv6_prefix,
        )


def per_instance_warning(config: Config) -> str | None:
    """That the rate limits are each instance's own, when the config suggests several
    instances (``[server] reuse_port``, or a shared ``[storage] url``) and a limit is on."""
    several = [name for name, on in (("[server] reuse_port", config.server.reuse_port),
                                     ("[storage] url", bool(config.storage.url)))
               if on]
    limits = [name for name, rate in (
        ("[reporter] client_rate", config.reporter.client_rate),
        ("[reporter] username_rate", config.reporter.username_rate),
        ("[api] key_rate", config.api.key_rate)) if rate]
    if not several or not limits:
        return None
    return (f"{' and '.join(several)}: several instances likely, and the rate limits "
            f"({', '.join(limits)}) are per instance: N instances allow N times the rate "
            "(docs/cluster.md)")
