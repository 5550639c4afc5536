"""Listen addresses as the config writes them (``host:port``, ``[v6]:port``, ``unix:PATH``,
``fd://N``) and networks: their checks, and whether a host is a loopback one."""

from __future__ import annotations

import ipaddress
import re

HOST_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>\d{1,5})"
)


def listen_problem(address: str) -> str | None:
    """Why ``address`` is not ``host:port``, ``[v6]:port``, ``unix:PATH`` or ``fd://N``."""
    if address.startswith("unix:"):
        return None if address[5:] else "unix: needs a socket path, e.g. unix:/run/pnbridge.sock"
    if address.startswith("fd://"):
        return None if address[5:].isdigit() else "fd:// needs a file descriptor number, e.g. fd://3"
    found = HOST_PORT.fullmatch(address)
    if found is None:
        if re.fullmatch(r"[0-9A-Fa-f:.]+", address) and address.count(":") > 1:
            return f"{address!r}: write an IPv6 address in brackets, e.g. [::1]:8080"
        return f"{address!r} is not host:port, [ipv6]:port, unix:PATH or fd://N"
    if int(found["port"]) > 65535:
        return f"{address!r}: port must be 0-65535"
    return None


def check_listen(addresses: list[str]) -> str | None:
    """``[server] listen``: one address or more, each one ``listen_problem`` accepts."""
    if not addresses:
        return "needs at least one address"
    problems = [p for p in map(listen_problem, addresses) if p]
    return "; ".join(problems) or None


def check_admin_listen(addresses: list[str]) -> str | None:
    """``[server] admin_listen``: none or more addresses."""
    return "; ".join(p for p in map(listen_problem, addresses) if p) or None


def check_networks(networks: list[str]) -> str | None:
    """Addresses or CIDR networks (``trusted_proxies``)."""
    bad = []
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            bad.append(repr(network))
    return f"not an address or CIDR: {', '.join(bad)}" if bad else None


def check_agi_listen(addresses: list[str]) -> str | None:
    """``[agi] listen``: TCP addresses only (Asterisk connects over TCP)."""
    problems = []
    for address in addresses:
        if address.startswith(("unix:", "fd://")):
            problems.append(f"{address!r}: Asterisk connects to FastAGI over TCP: use host:port")
        elif problem := listen_problem(address):
            problems.append(problem)
    return "; ".join(problems) or None


def is_loopback(address: str) -> bool:
    """Whether the host of ``host:port`` is a loopback address (or ``localhost``)."""
    found = HOST_PORT.fullmatch(address)
    if found is None:
        return False
    host = found["v6"] or found["host"]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False
