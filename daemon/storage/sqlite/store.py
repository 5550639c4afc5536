"""The SQLite engine of the Store (storage/interface.py): ``SQLiteStore`` is one
connection, its devices (devices.py), journal (journal.py), delivery state (delivery.py),
push history (history.py), leases (leases.py) and digest nonces (nonces.py) the parts it is
made of.

Everything here is synchronous. The daemon reaches it only through ``storage.writer.Writer``
(a worker thread, never the trio loop) and ``storage.reader.Reader``; the CLI calls it
directly. Every change to a device and its journal event are written in one transaction.
Every operation of the Store raises StoreError for SQLite's errors, chained to them
(``engine_errors``): nothing outside ``storage/`` knows sqlite3.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlite_utils

from ...errors import StoreError
from ..interface import Done, Store
from .copy import Copying
from .delivery import DeliveryState
from .devices import Devices
from .history import PushHistory
from .leases import Leases
from .nonces import DigestNonces
from .schema import (
    MIGRATIONS,
    connect_read_only,
    create_private,
    one_at_a_time,
    schema_problem,
    wal,
)

# The probe's selector, username and event id: nothing a report can send (a NUL in it).
PROBE = "\x00readyz-probe"

P = ParamSpec("P")
T = TypeVar("T")


class SQLiteStore(Devices, DeliveryState, PushHistory, Leases, Copying, DigestNonces):
    """The Store on SQLite: one connection to the pnbridge database.

    By default it creates the database when there is none and migrates it to this version's
    schema. With ``reading``, it opens the file read-only (SQLite ``mode=ro``), checks it is
    a pnbridge database of this version and never creates, migrates or writes anything: for
    commands that only read. With ``read_only``, one that only queries a database another
    SQLiteStore has opened (and migrated) before (the daemon's readers).
    """

    def __init__(
        self, path: str | Path, busy_timeout: float = 5.0, *, read_only: bool = False,
        reading: bool = False,
    ):
        self.path = Path(path)
        self.where = str(path)
        self.busy_timeout = busy_timeout
        self.journaled = 0  # events this connection wrote (the writer wakes the dispatcher)
        try:
            if reading:
                conn = connect_read_only(self.path, busy_timeout)
            else:
                create_private(self.path)
                conn = sqlite3.connect(
                    self.path, timeout=busy_timeout, isolation_level=None,
                    check_same_thread=False,
                )
        except (sqlite3.Error, OSError) as error:
            if reading and not os.access(self.path, os.R_OK):
                raise StoreError(f"cannot read database {self.path}: permission denied (run as "
                                 "the daemon's user, or one in its group)") from error
            raise StoreError(f"cannot open database {self.path}: "
                             f"{getattr(error, 'strerror', None) or error}") from error
        self.conn = conn
        try:
            self.db = sqlite_utils.Database(conn, execute_plugins=False)
            if read_only:
                conn.execute("PRAGMA query_only=ON")
            elif reading:
                if problem := schema_problem(conn, self.path, writing=False):
                    raise StoreError(problem)
            else:
                with one_at_a_time(self.path):
                    if problem := schema_problem(conn, self.path, writing=True):
                        raise StoreError(problem)
                    self.db.enable_wal()
                    conn.execute("PRAGMA synchronous=FULL")
                    self._migrate()
        except BaseException as error:
            conn.close()
            if not isinstance(error, sqlite3.Error):
                raise
            hint = ""
            if reading and isinstance(error, sqlite3.OperationalError) and wal(self.path):
                hint = (" (a process has it open, or left its -wal file: reading it needs the "
                        "-shm file beside it, which this user cannot open or create; run as "
                        "the daemon's user)")
            raise StoreError(f"cannot open database {self.path}: {error}{hint}") from error

    def close(self) -> None:
        self.db.conn.close()

    @property
    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self) -> None:
        version = self.schema_version
        for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._transaction(self.db.conn):
                step(self.db)
                self.db.execute(f"PRAGMA user_version={number}")

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[SQLiteStore]:
        """Run store operations in one transaction (for callers outside the writer)."""
        try:
            with self._transaction(self.conn):
                yield self
        except sqlite3.Error as error:  # BEGIN, COMMIT, ROLLBACK, or SQL of the caller's
            raise store_error(error) from error

    def run_batch(self, calls: Sequence[Callable[[SQLiteStore], Any]],
                  wait: float | None = None) -> list[Done]:
        """Run ``calls`` in one transaction; one that raises fails only itself. A lock is
        waited for ``wait`` seconds (None: busy_timeout).

        The calls run as they come; when one raises, the transaction starts again with each
        call in a savepoint of its own (a savepoint costs two round trips to SQLite, and
        calls rarely fail). When the transaction itself fails (the database is locked,
        read-only or full), every call fails with that error and nothing of the batch is
        kept; the connection stays usable.
        """
        conn = self.conn
        if wait is not None:
            conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            done = self._run_all(calls)
            if done is None:
                if conn.in_transaction:  # SQLite ends it itself on some errors
                    conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                done = []
                for call in calls:
                    conn.execute("SAVEPOINT op")
                    try:
                        done.append((call(self), None))
                    except Exception as error:
                        conn.execute("ROLLBACK TO op")
                        done.append((None, error))
                    conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            with suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            return [(None, store_error(error))] * len(calls)
        finally:
            if wait is not None:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return done

    def _run_all(self, calls: Sequence[Callable[[SQLiteStore], Any]]) -> list[Done] | None:
        """Run ``calls`` in the open transaction; None (with the transaction to be rolled
        back) as soon as one raises."""
        try:
            return [(call(self), None) for call in calls]
        except Exception:
            return None

    def changes(self) -> int:
        """How many rows this connection has changed so far."""
        return self.conn.total_changes

    def probe_write(self) -> None:
        """Write where a report writes (a device row, a journal event, their indexes: every
        page from each b-tree's root to where the row goes), roll that back, and commit a
        harmless write (the schema version, rewritten with its own value)."""
        conn = self.conn
        conn.execute("SAVEPOINT probe")
        try:
            conn.execute(
                "INSERT INTO devices (selector, username, extras, created_at, updated_at, "
                "last_seen) VALUES (?, ?, '{}', 0, 0, 0)", (PROBE, PROBE),
            )
            conn.execute(
                "INSERT INTO events (id, kind, reason, selector, username, time, source) "
                "VALUES (?, 'probe', 'probe', ?, ?, 0, '{}')", (PROBE, PROBE, PROBE),
            )
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have ended it itself
                conn.execute("ROLLBACK TO probe")
            raise
        conn.execute("ROLLBACK TO probe")
        conn.execute("RELEASE probe")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA user_version={int(version)}")


# What an SQLite error code means for an operator, by the start of its name.
_PROBLEMS = (
    ("SQLITE_BUSY", "the database is locked by another process"),
    ("SQLITE_LOCKED", "the database is locked by another process"),
    ("SQLITE_FULL", "the disk is full"),
    ("SQLITE_READONLY", "the database is read-only"),
    ("SQLITE_IOERR", "the database file cannot be written (read-only or failing disk)"),
    ("SQLITE_CANTOPEN", "the database file cannot be opened"),
    ("SQLITE_CORRUPT", "the database file is corrupt"),
)


def storage_problem(error: sqlite3.Error) -> str:
    """A one-line reason for a storage error, e.g. "the disk is full (SQLITE_FULL: ...)"."""
    code = getattr(error, "sqlite_errorname", "") or ""
    said = f"{code}: {error}" if code else str(error)
    for prefix, meaning in _PROBLEMS:
        if code.startswith(prefix):
            return f"{meaning} ({said})"
    return said


def store_error(error: sqlite3.Error) -> StoreError:
    """SQLite's ``error`` as the StoreError the rest of pnbridge sees: its message, worded
    for an operator (``problem``), chained to it."""
    failure = StoreError(str(error), storage_problem(error))
    failure.__cause__ = error
    return failure


def engine_errors(operation: Callable[P, T]) -> Callable[P, T]:
    """``operation``, raising SQLite's errors as StoreError."""

    @functools.wraps(operation)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return operation(*args, **kwargs)
        except sqlite3.Error as error:
            raise store_error(error) from error

    return wrapper


# The Store's operations raise StoreError, whichever of them a caller (the writer's thread,
# a reader's, a command) calls: each is wrapped here, those this class has from its parts
# too (devices.py, journal.py, delivery.py, history.py, nonces.py); ``transaction`` does it itself.
for _name in [n for n in vars(Store) if not n.startswith("_") and n != "transaction"]:
    setattr(SQLiteStore, _name, engine_errors(getattr(SQLiteStore, _name)))
