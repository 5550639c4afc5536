"""``[storage] url`` checked as libpq reads it (psycopg's parser when the extra is installed,
else a strict urllib parse): a database, a host, ports in range, known options with valid
values. The password is never part of a message."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit

# libpq's connection keywords (PostgreSQL 17's "Parameter Key Words").
KEYWORDS = frozenset((
    "host", "hostaddr", "port", "dbname", "user", "password", "passfile", "require_auth",
    "channel_binding", "connect_timeout", "client_encoding", "options", "application_name",
    "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "replication", "gssencmode", "sslmode",
    "sslnegotiation", "sslcompression", "sslcert", "sslkey", "sslpassword", "sslcertmode",
    "sslrootcert", "sslcrl", "sslcrldir", "sslsni", "requirepeer",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "krbsrvname", "gsslib",
    "gssdelegation", "service", "target_session_attrs", "load_balance_hosts",
))
_TLS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
# The options whose values libpq checks only when connecting: the values it accepts.
CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "sslcertmode": ("disable", "allow", "require"),
    "sslnegotiation": ("postgres", "direct"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby",
                             "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
    "ssl_min_protocol_version": _TLS,
    "ssl_max_protocol_version": _TLS,
    "sslcompression": ("0", "1"),
    "sslsni": ("0", "1"),
    "keepalives": ("0", "1"),
    "gssdelegation": ("0", "1"),
    "replication": ("true", "false", "on", "off", "yes", "no", "1", "0", "database"),
}
_NUMBERS = ("connect_timeout", "keepalives_idle", "keepalives_interval", "keepalives_count",
            "tcp_user_timeout")


def url_problem(url: str) -> str | None:
    """What is wrong with ``[storage] url`` in one phrase (without its password), or None."""
    if not re.match(r"postgres(ql)?://", url):
        return "must start with postgresql:// (or postgres://), got a " + (
            f"{url.split(':', 1)[0]!r} URL" if re.match(r"[A-Za-z][\w+.-]*:", url)
            else "value that is not a URL")
    try:
        given = _parse(url)
    except ValueError as error:
        return f"is not a valid PostgreSQL URL: {_without_password(str(error), url)}"
    return _values_problem(given)


def has_password(url: str) -> bool:
    """Whether the URL carries a password (in its user part or as ``?password=``)."""
    try:
        return bool(_parse(url).get("password"))
    except ValueError:
        return False


def _parse(url: str) -> dict[str, str]:
    """The URL's connection parameters; ValueError saying what is malformed."""
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return _parse_plain(url)
    try:
        return {key: str(value) for key, value in conninfo_to_dict(url).items()}
    except ProgrammingError as error:
        raise ValueError(" ".join(str(error).split())) from None


def _parse_plain(url: str) -> dict[str, str]:
    """libpq's URI rules without libpq: strict, unknown options refused."""
    if re.search(r"%(?![0-9A-Fa-f]{2})", url):
        raise ValueError("invalid percent-encoding (a % not followed by two hex digits)")
    parts = urlsplit(url)
    if parts.fragment:
        raise ValueError("a URL fragment (#...) is not allowed")
    given: dict[str, str] = {}
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        given.update(user=unquote(user, errors="strict"),
                     password=unquote(password, errors="strict"))
    hosts, ports = [], []
    for item in netloc.split(","):
        host, port = re.fullmatch(r"(\[[^\]]*\]|[^:]*)(?::(.*))?", item).groups()  # type: ignore[union-attr]
        hosts.append(unquote(host.strip("[]")))
        ports.append(port or "")
    if any(hosts):
        given["host"] = ",".join(hosts)
    if any(ports):
        given["port"] = ",".join(ports)
    if path := unquote(parts.path.lstrip("/")):
        given["dbname"] = path
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True,
                          errors="strict") if parts.query else []
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"malformed query: {error}") from None
    for key, value in query:
        if key not in KEYWORDS:
            raise ValueError(f"invalid URI query parameter: {key!r}")
        given[key] = value
    return {key: value for key, value in given.items() if value}


def _values_problem(given: dict[str, str]) -> str | None:
    """The first parameter libpq would refuse (or pnbridge cannot use) when connecting."""
    service = "service" in given  # pg_service.conf supplies the rest
    if not given.get("dbname") and not service:
        return "names no database (postgresql://host:5432/DATABASE)"
    if not given.get("host") and not given.get("hostaddr") and not service:
        return ("names no host (postgresql://HOST:5432/db, or a socket directory: "
                "postgresql:///db?host=/run/postgresql)")
    for port in given.get("port", "").split(","):
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            return f"port {port!r} is not a port number (1-65535)"
    for key, allowed in CHOICES.items():
        if key in given and given[key] not in allowed:
            return f"invalid {key} value {given[key]!r} (one of: {', '.join(allowed)})"
    for key in _NUMBERS:
        if key in given and not re.fullmatch(r"-?\d+", given[key].strip()):
            return f"invalid {key} value {given[key]!r} (a whole number)"
    return None


def _without_password(text: str, url: str) -> str:
    """``text`` with the URL's user part (which may hold the password) cut out."""
    netloc = urlsplit(url).netloc
    for secret in re.findall(r"[?&]password=([^&#]*)", url):
        text = text.replace(secret, "***") if secret else text
    if "@" in netloc:
        userinfo = netloc.rsplit("@", 1)[0]
        for secret in (userinfo, userinfo.partition(":")[2]):
            if secret:
                text = text.replace(secret, "***")
    return text
