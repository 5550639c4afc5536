"""How pnbridge reaches PostgreSQL: the connection parameters of ``[storage] url`` and
``password_file`` (libpq's PGPASSWORD and PGPASSFILE work as ever), and psycopg's errors
worded for an operator, with the password cut from every line."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ...config.tables import StorageConfig
from ...errors import StoreError
from ...ops.log import redact

# What an SQLSTATE means for an operator (the most specific first; a class by its first
# two characters).
_STATES = (
    ("28", "authentication failed (check the user of {url} and its password: "
           "{password_file}, PGPASSFILE or PGPASSWORD)"),
    ("3D000", "the database does not exist (createdb it: docs/install.md)"),
    ("53100", "the disk is full"),
    ("53300", "the PostgreSQL server has too many connections"),
    ("25006", "the database is read-only (a standby, or default_transaction_read_only)"),
    ("40001", "a serialization failure (try again)"),
    ("40P01", "a deadlock (try again)"),
    ("55P03", "the database is locked by another process"),
    ("57P0", "the PostgreSQL server is shutting down or restarting"),
    ("42501", "permission denied (the role needs the rights docs/install.md lists)"),
    ("08", "the connection to the PostgreSQL server was lost"),
)
# What messages call the URL and the password file: the config's keys, unless a command
# took them from its options (``store copy --to``).
CONFIG_KEYS = ("[storage] url", "[storage] password_file")
# Connecting fails without an SQLSTATE: libpq's message says why.
_SAID = (
    (re.compile(r"authentication failed|no password supplied|pg_hba\.conf", re.I), "28"),
    (re.compile(r"database \S+ does not exist", re.I), "3D000"),
    (re.compile(r"too many (clients|connections)", re.I), "53300"),
    (re.compile(r"shutting down|starting up|in recovery mode", re.I), "57P0"),
)
# libpq refuses a connection option (of the URL, or a PG* environment variable) before
# connecting: the operator's setting is wrong, not the server.
_OPTION = re.compile(r"invalid connection option|invalid \S+ value|invalid port number"
                     r"|invalid integer value|bad value for|invalid URI|percent-encoded", re.I)
_UNREACHABLE = "cannot reach the PostgreSQL server (down, or refusing connections)"
_LOST = re.compile(r"server closed the connection|connection is lost|terminating connection"
                   r"|the connection is closed|consuming input failed", re.I)


@dataclass(frozen=True)
class Credentials:
    """The URL and the keyword parameters of ``psycopg.connect``, what to call the database
    in a message (``where``: the URL without its password) and the password to cut from
    any text."""

    url: str
    params: dict[str, Any]
    where: str
    secret: str | None
    named: tuple[str, str] = CONFIG_KEYS  # what to call the URL and the password file

    @classmethod
    def of(cls, storage: StorageConfig, where: str, named: tuple[str, str] = CONFIG_KEYS
           ) -> Credentials:
        """From ``[storage]``, named ``where`` in messages (its URL and password file called
        ``named``); raises StoreError when the URL or the password file cannot be read
        (saying so without either's secret)."""
        url = storage.url or ""
        try:
            given = conninfo_to_dict(url)
        except psycopg.ProgrammingError:
            raise StoreError(f"{named[0]} {where} is not a PostgreSQL URL") from None
        secret = str(given.get("password") or "")
        # A lock waited for longer than busy_timeout fails the operation (a report: 503);
        # the URL's own options and connect_timeout are kept.
        options = f"{given.get('options') or ''} -c lock_timeout={int(storage.busy_timeout * 1000)}"
        params: dict[str, Any] = {
            "application_name": given.get("application_name") or "pnbridge",
            "options": options.strip(),
            "connect_timeout": given.get("connect_timeout")
            or max(2, math.ceil(storage.busy_timeout)),
        }
        if storage.password_file:
            try:
                with open(storage.password_file, encoding="utf-8") as file:
                    secret = file.readline().rstrip("\r\n")
            except (OSError, UnicodeDecodeError) as error:
                reason = getattr(error, "strerror", None) or "not UTF-8 text"
                raise StoreError(f"{named[1]} {storage.password_file}: "
                                 f"cannot read it: {reason}") from None
            params["password"] = secret
        return cls(url, params, where, secret or None, named)

    def scrub(self, text: str) -> str:
        """``text``'s first line (psycopg adds the statement's), without the password or a
        URL's credentials."""
        text = redact(" ".join(next(iter(text.strip().splitlines()), "").split()))
        return text.replace(self.secret, "***") if self.secret else text

    def failure(self, error: Exception, doing: str | None = None) -> StoreError:
        """psycopg's ``error`` as the StoreError the rest of pnbridge sees (chained to it),
        ``doing`` (e.g. "cannot open database") before the database's name."""
        said = self.scrub(str(error)) or type(error).__name__
        state = getattr(error, "sqlstate", None) or next(
            (code for pattern, code in _SAID if pattern.search(said)), "")
        meaning = next((m.format(url=self.named[0], password_file=self.named[1])
                        for prefix, m in _STATES if state.startswith(prefix)), None)
        if not state and _OPTION.search(said):
            said = said.removeprefix("connection is bad: ")
            problem = f"{self.named[0]}: {said} (check the url's options and PG* variables)"
        else:
            if meaning is None and not state and isinstance(error, psycopg.OperationalError):
                meaning = ("the connection to the PostgreSQL server was lost"
                           if _LOST.search(said) else _UNREACHABLE)
            problem = f"{meaning} ({said})" if meaning else said
        message = f"{doing} {self.where}: {said}" if doing else said
        failure = StoreError(message, problem)
        failure.__cause__ = error
        return failure
