"""The store engines the storage tests run on (conftest.py's ``engine`` fixture): SQLite at a
file in the test's directory, PostgreSQL in a database of its own on the run's test server
(tests/postgres.py). What a test needs of either: the ``[storage]`` table that selects it, a
store opened as the daemon and the commands open it, plain SQL on a connection of the test's
own, another session holding a lock."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from configs import merge, toml_text
from pnbridge.config.tables import StorageConfig, parse_config
from pnbridge.storage.engines import engine
from pnbridge.storage.interface import Store
from postgres import PostgresServer


def open_store(storage: StorageConfig) -> Store:
    """A store of the database ``storage`` names, through the engine it selects."""
    return engine(storage).open()


@dataclass
class StoreEngine:
    """One store engine: ``storage`` is the ``[storage]`` table that selects it (``path``
    always: the running daemon's record is beside it; ``url`` for PostgreSQL)."""

    name: str
    storage: dict[str, Any]
    server: PostgresServer | None = None  # PostgreSQL's: stop, start, kill it mid-test

    @property
    def path(self) -> str:
        return self.storage["path"]

    def config(self, **extra: Any) -> StorageConfig:
        return parse_config({"storage": {**self.storage, **extra}}).storage

    def open(self, **extra: Any) -> Store:
        """A store of its own (created and migrated), as the writer and the commands open it;
        ``extra`` keys of ``[storage]`` (busy_timeout)."""
        return open_store(self.config(**extra))

    def tables(self, tables: dict[str, Any]) -> dict[str, Any]:
        """Config ``tables`` (a test's, merged over tests/configs.py's base) on this engine."""
        return merge(tables, {"storage": self.storage})

    def toml(self, **extra: Any) -> str:
        """The ``[storage]`` table as TOML text."""
        return toml_text({"storage": {**self.storage, **extra}})

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        """What ``sql`` (no parameters) returns, on a connection of the test's own."""
        if self.server is None:
            with contextlib.closing(sqlite3.connect(self.path)) as conn, conn:
                return conn.execute(sql).fetchall()
        import psycopg
        with psycopg.connect(self.storage["url"]) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Another session holds the write lock: SQLite's (BEGIN IMMEDIATE), or on PostgreSQL
        ``LOCK TABLE`` of every table ``IN EXCLUSIVE MODE`` (writes wait, reads do not, as
        with SQLite's; ACCESS EXCLUSIVE would hold up reads too)."""
        if self.server is None:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                conn.execute("ROLLBACK")
                conn.close()
            return
        import psycopg
        with psycopg.connect(self.storage["url"]) as session:
            tables = [row[0] for row in session.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
            session.execute(f"LOCK TABLE {', '.join(tables)} IN EXCLUSIVE MODE")
            yield
            session.rollback()

    def stored(self) -> tuple[dict[str, str], list[str]]:
        """The devices (selector -> token_msgs) and the journal's event ids, in order; SQLite's
        file checked whole first (PostgreSQL's pages are its server's business)."""
        if self.server is None:
            assert self.rows("PRAGMA integrity_check")[0][0] == "ok"
        devices = dict(self.rows("SELECT selector, token_msgs FROM devices"))
        return devices, [row[0] for row in self.rows("SELECT id FROM events ORDER BY seq")]
