"""The PostgreSQL engine of the Store (storage/interface.py), through psycopg 3's synchronous
API from worker threads, as SQLite's: ``PostgreSQLStore`` is one connection (the writer's,
a command's, a reader thread's: ``PostgreSQLEngine``); its devices (devices.py), journal
(journal.py), delivery state (delivery.py), push history (history.py), leases (leases.py),
copying (copy.py) and digest nonces (nonces.py) the parts it is made of.

Every operation raises StoreError for psycopg's errors, chained to them, its ``problem``
worded for an operator with the password cut (connect.py). A connection the server dropped
(a restart) is opened again by the next operation: what fails meanwhile fails as StoreError
(reports answer 503), and the store recovers by itself when the server is back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import pq

from ...config.tables import StorageConfig
from ...errors import StoreError
from ..interface import Done, Store
from .connect import CONFIG_KEYS, Credentials
from .copy import Copying
from .delivery import DeliveryState
from .devices import Devices
from .history import PushHistory
from .leases import Leases
from .nonces import DigestNonces
from .notify import JournalListener
from .schema import MIGRATIONS, migrate, schema_problem

# The probe's selector, username and event id: nothing a report can send (a control
# character; PostgreSQL's text holds no NUL).
PROBE = "\x01readyz-probe"

P = ParamSpec("P")
T = TypeVar("T")


class PostgreSQLStore(Devices, DeliveryState, PushHistory, Leases, Copying, DigestNonces):
    """The Store on PostgreSQL: one connection, opened again when the server dropped it. By
    default the schema is created or migrated (under a lock: several instances start at
    once); with ``reading``, the connection is read-only and the schema must be this
    version's (``checked``: unless another store has checked it, as for the readers)."""

    def __init__(self, credentials: Credentials, *, reading: bool = False,
                 checked: bool = False):
        self.credentials = credentials
        self.where = credentials.where
        self.journaled = 0
        self.changed = 0
        self.journal_locked = False
        self.reading = reading
        self._depth = 0  # operations under way (a nested one uses its caller's connection)
        try:
            self.conn = self._connect()
        except psycopg.Error as error:
            raise credentials.failure(error, "cannot open database") from error
        try:
            if not checked:
                self._check_schema()
        except psycopg.Error as error:
            self.close()
            raise credentials.failure(error, "cannot open database") from error
        except BaseException:
            self.close()
            raise

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.credentials.url, **self.credentials.params,
                               autocommit=True)
        if self.reading:
            conn.execute("SET default_transaction_read_only = on")
        return conn

    def _check_schema(self) -> None:
        if self.reading:
            if problem := schema_problem(self.conn, self.where, writing=False):
                raise StoreError(problem)
            return
        try:
            migrate(self.conn, self.where)
        except ValueError as problem:
            raise StoreError(str(problem)) from None

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _outermost(self, reconnect: bool = True) -> Iterator[None]:
        """Around every operation: the outermost one (not one another calls) opens the
        connection again when the server dropped it (``reconnect``)."""
        if not self._depth and reconnect and self.conn.closed:
            self.conn = self._connect()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1

    def _begin(self) -> None:
        self.conn.execute("BEGIN")
        self.journal_locked = False

    def _begin_again(self) -> None:
        """BEGIN; on a connection the server dropped while it was idle (a restart), once
        more on a new one: nothing was sent yet, nothing can be done twice."""
        try:
            self._begin()
        except psycopg.OperationalError:
            if not self.conn.closed:
                raise
            self.conn = self._connect()
            self._begin()

    def _end(self, statement: str) -> None:
        self.journal_locked = False
        self.conn.execute(statement)

    def _in_transaction(self) -> bool:
        return self.conn.info.transaction_status != pq.TransactionStatus.IDLE

    @contextmanager
    def transaction(self) -> Iterator[PostgreSQLStore]:
        """Run store operations in one transaction (for callers outside the writer)."""
        try:
            with self._outermost():
                self._begin_again()
                try:
                    yield self
                except BaseException:
                    if not self.conn.closed:
                        self._end("ROLLBACK")
                    raise
                self._end("COMMIT")
        except psycopg.Error as error:
            raise self.credentials.failure(error) from error

    def run_batch(self, calls: Sequence[Callable[[PostgreSQLStore], Any]]) -> list[Done]:
        """Run ``calls`` in one transaction; one that raises fails only itself.

        The calls run as they come; when one raises, the transaction starts again with each
        call in a savepoint of its own. When the transaction itself fails (the server is
        down, the disk full), every call fails with that error and nothing of the batch is
        kept; the next batch connects again if it must."""
        try:
            self._begin_again()
            conn = self.conn
            done = self._run_all(calls)
            if done is None:
                self._end("ROLLBACK")
                self._begin()
                done = []
                for call in calls:
                    conn.execute("SAVEPOINT op")
                    locked = self.journal_locked
                    try:
                        done.append((call(self), None))
                    except Exception as error:
                        conn.execute("ROLLBACK TO op")
                        self.journal_locked = locked  # a lock taken after it went with it
                        done.append((None, error))
                    conn.execute("RELEASE op")
            self._end("COMMIT")
        except psycopg.Error as error:
            with suppress(psycopg.Error):
                if not self.conn.closed and self._in_transaction():
                    self._end("ROLLBACK")
            return [(None, self.credentials.failure(error))] * len(calls)
        return done

    def _run_all(self, calls: Sequence[Callable[[PostgreSQLStore], Any]]) -> list[Done] | None:
        """Run ``calls`` in the open transaction; None (the transaction to be rolled back)
        as soon as one raises. The database's own trouble (a lock waited for busy_timeout,
        the server gone) fails the batch at once: each call again would wait again."""
        try:
            return [(call(self), None) for call in calls]
        except StoreError as error:
            if isinstance(error.__cause__, psycopg.OperationalError):
                raise error.__cause__ from None
            return None
        except Exception:
            return None

    def changes(self) -> int:
        """How many rows this connection has changed so far."""
        return self.changed

    def probe_write(self) -> None:
        """Write where a report writes (a device row, a journal event, their indexes), roll
        that back, and commit a harmless write (the schema version, set to itself)."""
        conn = self.conn
        conn.execute("SAVEPOINT probe")
        try:
            conn.execute(
                "INSERT INTO devices (selector, username, extras, created_at, updated_at,"
                " last_seen) VALUES (%s, %s, '{}', 0, 0, 0)", (PROBE, PROBE))
            conn.execute(
                "INSERT INTO events (id, kind, reason, selector, username, time, source)"
                " VALUES (%s, 'probe', 'probe', %s, %s, 0, '{}')", (PROBE, PROBE, PROBE))
        finally:
            if not conn.closed:
                conn.execute("ROLLBACK TO probe")
                conn.execute("RELEASE probe")
        conn.execute("UPDATE schema_version SET version = version")


_OWN = ("transaction", "close")  # not wrapped: they handle the connection themselves


class PostgreSQLEngine:
    """The PostgreSQL database of ``[storage] url`` (storage/engines.py): the writer's, the
    readers' and the commands' stores, the schema inspected.

    Each reader thread has a read-only connection of its own (as SQLite's readers), not one
    of psycopg_pool's: a pool reconnects after an outage with an exponential backoff (1, 2,
    4, 8 s...), so pushes could fail for many seconds after the server is back; a reader's
    connection is opened again by its first query after the outage."""

    def __init__(self, storage: StorageConfig, where: str,
                 named: tuple[str, str] | None = None):
        self.credentials = Credentials.of(storage, where, named or CONFIG_KEYS)
        self.where = self.credentials.where
        self.latest = len(MIGRATIONS)

    def exists(self) -> bool:
        return True  # the server says, when a store connects

    def open(self, *, reading: bool = False) -> PostgreSQLStore:
        """A store on a connection of its own: the schema migrated, or checked (reading)."""
        return PostgreSQLStore(self.credentials, reading=reading)

    def reader(self) -> PostgreSQLStore:
        """A read-only store for one of the daemon's reader threads."""
        return PostgreSQLStore(self.credentials, reading=True, checked=True)

    def listener(self) -> JournalListener:
        """What wakes the dispatcher when another process journals (LISTEN, notify.py)."""
        return JournalListener(self.credentials)

    def inspect(self, *, serving: bool = False) -> str | None:
        """What keeps pnbridge from using the database, in one line (unreachable, not
        pnbridge's, another schema version); None when it can. Reads only."""
        try:
            store = PostgreSQLStore(self.credentials, reading=True, checked=True)
        except StoreError as error:
            return error.problem
        try:
            return schema_problem(store.conn, self.where, writing=serving)
        except psycopg.Error as error:
            return self.credentials.failure(error).problem
        finally:
            store.close()


def engine_errors(operation: Callable[P, T]) -> Callable[P, T]:
    """``operation`` of a PostgreSQLStore (its first argument), on its connection (opened
    again if the server dropped it; a read-only store's read tried once more on the new
    one), raising psycopg's errors as StoreError. Called outside a transaction by a store
    that writes (a command's), it runs in one of its own: its changes and their events
    commit together (and under the journal's lock, journal.py)."""
    atomic = operation.__name__ not in ("run_batch", "changes")

    @functools.wraps(operation)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        store = args[0]
        assert isinstance(store, PostgreSQLStore)
        try:
            with store._outermost(reconnect=atomic):  # run_batch: itself, never raising
                if atomic and not store.reading and not store._in_transaction():
                    with store.transaction():
                        return operation(*args, **kwargs)
                return operation(*args, **kwargs)
        except (psycopg.Error, StoreError) as error:
            cause = error.__cause__ if isinstance(error, StoreError) else error
            dropped = isinstance(cause, psycopg.OperationalError) and store.conn.closed
            if not (store.reading and dropped and not store._depth):
                if isinstance(error, StoreError):
                    raise
                raise store.credentials.failure(error) from error
        try:  # a read whose connection the server had dropped (a restart): once more
            with store._outermost():
                return operation(*args, **kwargs)
        except psycopg.Error as error:
            raise store.credentials.failure(error) from error

    return wrapper


# Every operation of the Store raises StoreError (``transaction`` does it itself).
for _name in [n for n in vars(Store) if not n.startswith("_") and n not in _OWN]:
    setattr(PostgreSQLStore, _name, engine_errors(getattr(PostgreSQLStore, _name)))
