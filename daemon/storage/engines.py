"""The store engine, chosen in one place: ``[storage] url`` (``postgresql://...``) selects
PostgreSQL (storage/postgresql/, the optional extra ``pnbridge[postgresql]``); without it,
SQLite at ``[storage] path`` (storage/sqlite/). The writer's store, the readers' stores, the
commands' store and doctor's inspection all come from the ``Engine`` this returns; nothing
else opens a database."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Protocol

from ..config.tables import StorageConfig
from ..errors import StoreError
from ..ops.log import redact
from .interface import Listener, Store
from .sqlite.schema import MIGRATIONS, inspect
from .sqlite.store import SQLiteStore

DRIVER_MISSING = ("[storage] url needs the PostgreSQL driver: "
                  "pip install 'pnbridge[postgresql]'")


class Engine(Protocol):
    """One database of ``[storage]``, whatever the engine."""

    where: str  # what to call it in a message: the path, or the URL without its password
    latest: int  # the schema version this pnbridge writes

    def exists(self) -> bool:
        """Whether there is a database to open without creating one (SQLite: the file)."""
        ...

    def open(self, *, reading: bool = False) -> Store:
        """A store of its own (the writer's, a command's): created or migrated; with
        ``reading``, checked to be this version's and never written."""
        ...

    def reader(self) -> Store:
        """A read-only store for one of the daemon's reader threads."""
        ...

    def listener(self) -> Listener | None:
        """What tells the daemon at once that another process journaled (PostgreSQL's
        LISTEN/NOTIFY); None where the engine has none (SQLite: the dispatcher polls)."""
        ...

    def inspect(self, *, serving: bool = False) -> str | None:
        """What is wrong with the database for this version, in one line; None when it is
        sound (``serving``: an older schema is fine, serve migrates it). Reads only."""
        ...


class SQLiteEngine:
    """The SQLite file at ``[storage] path``."""

    def __init__(self, storage: StorageConfig):
        self.where = storage.path
        self.latest = len(MIGRATIONS)
        self._timeout = storage.busy_timeout

    def exists(self) -> bool:
        return os.path.exists(self.where)

    def open(self, *, reading: bool = False) -> Store:
        return SQLiteStore(self.where, self._timeout, reading=reading)

    def reader(self) -> Store:
        return SQLiteStore(self.where, self._timeout, read_only=True)

    def listener(self) -> None:
        return None  # another process's events are seen at the next poll

    def inspect(self, *, serving: bool = False) -> str | None:
        return inspect(self.where, serving=serving)


def engine(storage: StorageConfig, named: tuple[str, str] | None = None) -> Engine:
    """The engine of ``storage``; StoreError when PostgreSQL's driver is not installed, or
    its password file cannot be read. ``named``: what messages call its URL and password
    file when they are not ``[storage]``'s keys (a command's options)."""
    if storage.url is None:
        return SQLiteEngine(storage)
    try:
        from .postgresql.store import PostgreSQLEngine
    except ImportError as error:
        raise StoreError(DRIVER_MISSING) from error
    return PostgreSQLEngine(storage, database_name(storage), named)


def database_name(storage: StorageConfig) -> str:
    """The database of ``storage`` as a log line or a message names it: its path, or its
    URL without the password."""
    if storage.url is None:
        return storage.path
    return re.sub(r"(password=)[^&\s]*", r"\1***", redact(storage.url))


def local_name(storage: StorageConfig) -> str:
    """A file name that stands for the database on this host (the running daemon's record
    is beside it, config/running.py): SQLite's path; for PostgreSQL, a name of the URL
    (without its password) beside ``path``."""
    if storage.url is None:
        return storage.path
    name = hashlib.sha256(database_name(storage).encode()).hexdigest()[:12]
    return os.path.join(os.path.dirname(storage.path), f"pnbridge-pg-{name}")
