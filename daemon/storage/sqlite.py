"""The SQLite store: devices, the event journal, schema migrations.

Everything here is synchronous. The daemon reaches it only through ``writer.Writer`` (a
worker thread, never the trio loop); the CLI calls it directly. Every change to a device
and its journal event are written in one transaction.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import sqlite_utils

from .. import jsontext
from ..model import Device, Event, EventKind, Pair, Report, isotime
from ..ops.log import shorten

log = logging.getLogger("pnbridge.store")

Outcome = Literal["created", "changed", "unchanged", "removed"]


class StoreError(Exception):
    """The database cannot be opened or is of a schema this version does not know."""


class NotOwner(Exception):
    """A report for a device (selector) that belongs to another username."""


@dataclass(frozen=True)
class Change:
    """What one store operation did to one device, and the event it journaled (if any)."""

    outcome: Outcome
    device: Device
    event: Event | None


def _create_devices_and_journal(db: sqlite_utils.Database) -> None:
    db.table("devices").create(
        {
            "selector": str, "username": str,
            "token_calls": str, "appid_calls": str, "token_msgs": str, "appid_msgs": str,
            "extras": str, "created_at": float, "updated_at": float, "last_seen": float,
        },
        pk="selector",
        not_null={"username", "extras", "created_at", "updated_at", "last_seen"},
    )
    db.table("devices").create_index(["username"])
    # AUTOINCREMENT: a sequence number is never reused, even after the journal is pruned.
    db.execute(
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            reason TEXT NOT NULL,
            selector TEXT NOT NULL,
            username TEXT NOT NULL,
            before TEXT,
            after TEXT,
            time REAL NOT NULL,
            source TEXT NOT NULL
        )"""
    )
    db.table("events").create_index(["selector", "seq"])


def _create_delivery_state(db: sqlite_utils.Database) -> None:
    # Each plugin's cursor: the highest journal seq it has passed (delivered or parked).
    db.execute(
        """CREATE TABLE cursors (
            plugin TEXT PRIMARY KEY,
            seq INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )"""
    )
    # Events a plugin gave up on (parked), or that an operator asked to send again (retry).
    db.execute(
        """CREATE TABLE failures (
            plugin TEXT NOT NULL,
            seq INTEGER NOT NULL,
            attempts INTEGER NOT NULL,
            error TEXT NOT NULL,
            first_try REAL NOT NULL,
            parked_at REAL NOT NULL,
            status TEXT NOT NULL,
            PRIMARY KEY (plugin, seq)
        )"""
    )
    db.execute("CREATE INDEX failures_seq ON failures (seq)")


# Schema version N is reached by running MIGRATIONS[N - 1]. Append, never edit.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _create_devices_and_journal,
    _create_delivery_state,
]

_EVENT_COLUMNS = "seq, id, kind, reason, selector, username, before, after, time, source"
_DEVICE_COLUMNS = (
    "selector, username, token_calls, appid_calls, token_msgs, appid_msgs, "
    "extras, created_at, updated_at, last_seen"
)


@dataclass(frozen=True)
class Failure:
    """An event one plugin could not take: parked, or waiting to be sent again (retry)."""

    plugin: str
    event: Event
    attempts: int
    error: str
    first_try: float
    parked_at: float
    status: Literal["parked", "retry"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin, "status": self.status, "attempts": self.attempts,
            "error": self.error, "first_try": isotime(self.first_try),
            "parked_at": isotime(self.parked_at), "event": self.event.to_dict(),
        }


class Store:
    """One connection to the pnbridge database.

    By default it creates the database when there is none and migrates it to this version's
    schema. With ``reading``, it opens the file read-only (SQLite ``mode=ro``), checks it is
    a pnbridge database of this version and never creates, migrates or writes anything: for
    commands that only read. With ``read_only``, one that only queries a database another
    Store has opened (and migrated) before (the daemon's readers).
    """

    def __init__(
        self, path: str | Path, busy_timeout: float = 5.0, *, read_only: bool = False,
        reading: bool = False,
    ):
        self.path = Path(path)
        self.journaled = 0  # events this connection wrote (the writer wakes the dispatcher)
        try:
            if reading:
                conn = _connect_read_only(self.path, busy_timeout)
            else:
                _create_private(self.path)
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
            elif problem := schema_problem(conn, self.path, writing=not reading):
                raise StoreError(problem)
            elif not reading:
                self.db.enable_wal()
                conn.execute("PRAGMA synchronous=FULL")
                self._migrate()
        except BaseException as error:
            conn.close()
            if not isinstance(error, sqlite3.Error):
                raise
            hint = ""
            if reading and isinstance(error, sqlite3.OperationalError) and _wal(self.path):
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
    def transaction(self) -> Iterator[Store]:
        """Run store operations in one transaction (for callers outside the writer)."""
        with self._transaction(self.conn):
            yield self

    def run_batch(self, ops: Sequence[PendingOp]) -> None:
        """Run ``ops`` in one transaction; an op that raises fails only itself.

        The ops run as they come; when one raises, the transaction starts again with each op
        in a savepoint of its own (a savepoint costs two round trips to SQLite, and ops
        rarely fail). Sets each op's ``result`` or ``error``. When the transaction itself
        fails (the database is locked, read-only or full), every op fails with that error
        and nothing of the batch is kept; the connection stays usable.
        """
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            if not self._run_all(ops):
                if conn.in_transaction:  # SQLite ends it itself on some errors
                    conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                for op in ops:
                    conn.execute("SAVEPOINT op")
                    try:
                        op.result = op.fn(self, *op.args)
                    except Exception as error:
                        conn.execute("ROLLBACK TO op")
                        op.result, op.error = None, error
                    conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            with suppress(sqlite3.Error):
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            for op in ops:
                op.result, op.error = None, error

    def _run_all(self, ops: Sequence[PendingOp]) -> bool:
        """Run ``ops`` in the open transaction; False (with the transaction to be rolled
        back) as soon as one raises."""
        for op in ops:
            try:
                op.result = op.fn(self, *op.args)
            except Exception:
                return False
        return True

    # -- operations (call inside a transaction) ------------------------------------------

    def register(
        self, report: Report, source: dict[str, Any], now: float, *, owner: str | None = None
    ) -> Change:
        """Create or update the device ``report`` describes; journal it if it is new or changed.

        With ``owner``, raise NotOwner when the device exists under another username.
        """
        assert report.selector and report.username
        if (seen := self._seen_again(report, now)) is not None:
            return Change("unchanged", seen, None)
        old = self.device(report.selector)
        if owner is not None and old is not None and old.username != owner:
            raise NotOwner(f"selector {report.selector} belongs to another user")
        if old is None:
            return self._create(report, source, now, created_at=now, updated_at=now,
                                last_seen=now)
        return self._update(old, report, source, now, last_seen=now)

    def restore(
        self, report: Report, source: dict[str, Any], now: float, times: dict[str, float]
    ) -> Change:
        """``register`` for a device moved from another host (``devices import``): a new
        device keeps the ``created_at``, ``updated_at`` and ``last_seen`` in ``times`` (one
        not given is the next of them, or now), so ``expire_after`` counts from when the
        phone was last seen, not from the import; a stored one changed by it keeps its
        ``created_at`` and the later ``last_seen``."""
        assert report.selector and report.username
        old = self.device(report.selector)
        if old is None:
            last_seen = times.get("last_seen", now)
            updated_at = times.get("updated_at", last_seen)
            return self._create(
                report, source, now, created_at=times.get("created_at", updated_at),
                updated_at=updated_at, last_seen=last_seen,
            )
        return self._update(old, report, source, now,
                            last_seen=max(old.last_seen, times.get("last_seen", now)))

    def _create(
        self, report: Report, source: dict[str, Any], now: float, *, created_at: float,
        updated_at: float, last_seen: float,
    ) -> Change:
        assert report.selector and report.username
        device = Device(
            selector=report.selector, username=report.username,
            token_calls=report.token_calls, appid_calls=report.appid_calls,
            token_msgs=report.token_msgs, appid_msgs=report.appid_msgs,
            extras=report.extras, created_at=created_at, updated_at=updated_at,
            last_seen=last_seen,
        )
        self.conn.execute(
            f"INSERT INTO devices ({_DEVICE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            _device_row(device),
        )
        return Change("created", device, self._journal("registered", "new", None, device,
                                                       source, now))

    def _update(
        self, old: Device, report: Report, source: dict[str, Any], now: float, *,
        last_seen: float,
    ) -> Change:
        assert report.username
        merged = Device(
            selector=old.selector,
            username=report.username,
            # A value not known yet (None) never erases a stored one.
            token_calls=report.token_calls or old.token_calls,
            appid_calls=report.appid_calls or old.appid_calls,
            token_msgs=report.token_msgs or old.token_msgs,
            appid_msgs=report.appid_msgs or old.appid_msgs,
            extras=report.extras or old.extras,
            created_at=old.created_at,
            updated_at=now,
            last_seen=last_seen,
        )
        return self._rewrite(old, merged, "changed", source, now)

    def _seen_again(self, report: Report, now: float) -> Device | None:
        """The device, when ``report`` changes nothing of it but ``last_seen`` (and extras):
        one statement for what most reports are, an app start. None otherwise, when
        ``register`` creates or changes it. A value not known yet (None) matches any."""
        assert report.selector  # register asserted it
        sets = ["last_seen = ?"]
        params: list[object] = [now]
        if report.extras:
            sets.append("extras = ?")
            params.append(json.dumps(report.extras))
        where = ["selector = ?", "username = ?"]
        params += [report.selector, report.username]
        for name in ("token_calls", "appid_calls", "token_msgs", "appid_msgs"):
            value = getattr(report, name)
            if value:  # as register merges: a value not known yet keeps the stored one
                where.append(f"{name} = ?")
                params.append(value)
        touched = self.conn.execute(
            f"UPDATE devices SET {', '.join(sets)} WHERE {' AND '.join(where)}", params
        ).rowcount
        return self.device(report.selector) if touched else None

    def register_capped(
        self, report: Report, source: dict[str, Any], now: float, *,
        max_devices: int, owner: str | None = None,
    ) -> list[Change]:
        """``register``, then, beyond ``max_devices`` devices of the username (0: no cap),
        remove the least recently seen others (reason ``evicted``); one transaction."""
        change = self.register(report, source, now, owner=owner)
        if not max_devices or change.outcome == "unchanged":
            return [change]
        rows = self.conn.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE username = ? AND selector != ?"
            " ORDER BY last_seen DESC, selector LIMIT -1 OFFSET ?",
            (change.device.username, change.device.selector, max_devices - 1),
        )
        evicted = []
        for device in [_device(row) for row in rows]:
            self.conn.execute("DELETE FROM devices WHERE selector = ?", (device.selector,))
            event = self._journal("removed", "evicted", device, None, source, now)
            evicted.append(Change("removed", device, event))
        return [change, *evicted]

    def remove(
        self,
        *,
        selector: str | None = None,
        username: str | None = None,
        tokens: Sequence[str] = (),
        reason: str,
        source: dict[str, Any],
        now: float,
    ) -> list[Change]:
        """Remove the device with ``selector`` (and ``username``, when given), or else the
        devices of ``username`` that hold one of ``tokens``; journal each removal."""
        if selector:
            where, params = "selector = ?", [selector]
            if username:
                where += " AND username = ?"
                params.append(username)
        elif username and tokens:
            marks = ",".join("?" * len(tokens))
            where = f"username = ? AND (token_calls IN ({marks}) OR token_msgs IN ({marks}))"
            params = [username, *tokens, *tokens]
        else:
            raise ValueError("remove needs a selector, or a username and tokens")
        rows = self.conn.execute(f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE {where}", params)
        changes = []
        for device in [_device(row) for row in rows]:
            self.conn.execute("DELETE FROM devices WHERE selector = ?", (device.selector,))
            event = self._journal("removed", reason, device, None, source, now)
            changes.append(Change("removed", device, event))
        return changes

    def reject_token(
        self, selector: str, pair: Pair, token: str, source: dict[str, Any], now: float
    ) -> Change | None:
        """Clear the ``pair`` of ``selector`` that pnmediator rejected, if it still holds
        ``token``: remove the device when no token is left (reason ``invalid-token``), else
        journal a ``registered`` event with that reason whose before/after show the cleared
        pair. None when the device is gone or has a new token there already."""
        old = self.device(selector)
        if old is None or getattr(old, f"token_{pair}") != token:
            return None
        cleared = Device(**{**asdict(old), f"token_{pair}": None, f"appid_{pair}": None,
                            "updated_at": now})
        if not (cleared.token_calls or cleared.token_msgs):
            return self.remove(selector=selector, reason="invalid-token", source=source,
                               now=now)[0]
        return self._rewrite(old, cleared, "invalid-token", source, now)

    def _rewrite(
        self, old: Device, new: Device, reason: str, source: dict[str, Any], now: float
    ) -> Change:
        """Store ``new`` in place of ``old`` and journal the registration."""
        self.conn.execute(
            f"REPLACE INTO devices ({_DEVICE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
            _device_row(new),
        )
        return Change("changed", new, self._journal("registered", reason, old, new, source, now))

    def expire(
        self, seen_before: float, source: dict[str, Any], now: float, limit: int = 500,
        skip: Sequence[str] = (),
    ) -> tuple[list[Change], dict[str, str]]:
        """Remove up to ``limit`` devices last seen before ``seen_before`` (reason
        ``expired``), but not those in ``skip``. A device that cannot be removed is left as it
        is (its own savepoint) and returned with the error, by selector."""
        rows = self.conn.execute(
            "SELECT selector FROM devices WHERE last_seen < ?"
            " AND selector NOT IN (SELECT value FROM json_each(?)) LIMIT ?",
            (seen_before, json.dumps(list(skip)), limit),
        ).fetchall()
        changes: list[Change] = []
        failed: dict[str, str] = {}
        for (selector,) in rows:
            self.conn.execute("SAVEPOINT expire_one")
            try:
                changes += self.remove(selector=selector, reason="expired", source=source,
                                       now=now)
            except Exception as error:
                self.conn.execute("ROLLBACK TO expire_one")
                failed[selector] = repr(error)
            self.conn.execute("RELEASE expire_one")
        return changes, failed

    def _journal(
        self,
        kind: EventKind,
        reason: str,
        before: Device | None,
        after: Device | None,
        source: dict[str, Any],
        now: float,
    ) -> Event:
        device = after or before
        assert device is not None
        self.journaled += 1
        event_id = str(uuid.uuid4())
        cursor = self.conn.execute(
            "INSERT INTO events (id, kind, reason, selector, username, before, after, time, source)"
            " VALUES (?,?,?,?,?,?,?,?,?)",
            (
                event_id, kind, reason, device.selector, device.username,
                _dump(before), _dump(after), now, json.dumps(source),
            ),
        )
        assert cursor.lastrowid is not None
        return Event(
            id=event_id, seq=cursor.lastrowid, kind=kind, reason=reason,
            selector=device.selector, username=device.username,
            before=before, after=after, time=now, source=source,
        )

    # -- queries --------------------------------------------------------------------------

    def device(self, selector: str) -> Device | None:
        row = self.conn.execute(
            f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE selector = ?", (selector,)
        ).fetchone()
        return _device(row) if row else None

    def devices(self, username: str | None = None, limit: int = -1) -> list[Device]:
        """The devices (of ``username``), by username and selector; the first ``limit``
        (all when negative)."""
        if username is None:
            rows = self.conn.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices ORDER BY username, selector LIMIT ?",
                (limit,),
            )
        else:
            rows = self.conn.execute(
                f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE username = ? ORDER BY selector"
                " LIMIT ?",
                (username, limit),
            )
        return [_device(row) for row in rows]

    def count_devices(self, username: str | None = None) -> int:
        """How many devices are stored (of ``username``)."""
        if username is None:
            return self.conn.execute("SELECT count(*) FROM devices").fetchone()[0]
        return self.conn.execute("SELECT count(*) FROM devices WHERE username = ?",
                                 (username,)).fetchone()[0]

    def events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Journal events with ``seq`` above ``after_seq``, oldest first."""
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [_event(row) for row in rows]

    def newest_events(self, limit: int) -> list[Event]:
        """The ``limit`` newest journal events, oldest first."""
        rows = self.conn.execute(
            f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq DESC LIMIT ?", (limit,)
        )
        return [_event(row) for row in rows][::-1]

    # -- delivery state (per plugin) ------------------------------------------------------

    def cursors(self) -> dict[str, int]:
        """Every plugin's cursor: the highest seq it has passed."""
        return dict(self.conn.execute("SELECT plugin, seq FROM cursors"))

    def save_cursor(self, plugin: str, seq: int, now: float) -> None:
        """Move ``plugin``'s cursor forward to ``seq`` (never back)."""
        self.conn.execute(
            "INSERT INTO cursors (plugin, seq, updated_at) VALUES (?,?,?) ON CONFLICT (plugin)"
            " DO UPDATE SET seq = max(seq, excluded.seq), updated_at = excluded.updated_at",
            (plugin, seq, now),
        )

    def pending(self, plugin: str, after_seq: int, limit: int) -> tuple[list[Failure], list[Event]]:
        """What ``plugin`` has to do: failures to send again, then events after its cursor."""
        return self.failures(plugin, "retry"), self.events(after_seq, limit)

    def park(
        self, plugin: str, event: Event, attempts: int, error: str, first_try: float, now: float
    ) -> None:
        """Park ``event`` as failed for ``plugin`` and move its cursor past it."""
        self.conn.execute(
            "REPLACE INTO failures (plugin, seq, attempts, error, first_try, parked_at, status)"
            " VALUES (?,?,?,?,?,?,'parked')",
            (plugin, event.seq, attempts, error, first_try, now),
        )
        self.save_cursor(plugin, event.seq, now)

    def unpark(self, plugin: str, seq: int) -> None:
        """Forget a failure: the event was delivered after all."""
        self.conn.execute("DELETE FROM failures WHERE plugin = ? AND seq = ?", (plugin, seq))

    def failures(self, plugin: str | None = None, status: str | None = None) -> list[Failure]:
        """Parked (and retry-requested) events, oldest first."""
        where, params = [], []
        for column, value in (("plugin", plugin), ("status", status)):
            if value is not None:
                where.append(f"f.{column} = ?")
                params.append(value)
        sql = (
            "SELECT f.plugin, f.attempts, f.error, f.first_try, f.parked_at, f.status, "
            + ", ".join(f"e.{c.strip()}" for c in _EVENT_COLUMNS.split(","))
            + " FROM failures f JOIN events e ON e.seq = f.seq"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY f.seq, f.plugin"
        )
        return [
            Failure(row[0], _event(row[6:]), *row[1:6]) for row in self.conn.execute(sql, params)
        ]

    def retry(self, plugin: str | None = None, events: Sequence[str] = ()) -> int:
        """Ask for parked events (by seq or id; all when none given) to be sent again."""
        sql = "UPDATE failures SET status = 'retry' WHERE status = 'parked'"
        params: list[Any] = []
        if plugin is not None:
            sql += " AND plugin = ?"
            params.append(plugin)
        if events:
            marks = ",".join("?" * len(events))
            sql += f" AND seq IN (SELECT seq FROM events WHERE id IN ({marks}) OR seq IN ({marks}))"
            params += [*events, *(int(e) if e.isdigit() else -1 for e in events)]
        return self.conn.execute(sql, params).rowcount

    def prune(self, plugins: Sequence[str], before: float) -> int:
        """Delete events older than ``before`` that every one of ``plugins`` has passed and
        none has parked; return how many."""
        cursors = self.cursors()
        passed = min((cursors.get(p, 0) for p in plugins), default=None)
        sql = "DELETE FROM events WHERE time < ? AND seq NOT IN (SELECT seq FROM failures)"
        params: list[Any] = [before]
        if passed is not None:
            sql += " AND seq <= ?"
            params.append(passed)
        return self.conn.execute(sql, params).rowcount


def _connect_read_only(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection that cannot write ``path``, nor create it or anything beside it.

    While a process has the database open, its ``-wal`` file exists and the connection
    reads through it (``mode=ro``, with the locks every reader takes). Otherwise nothing
    beside the file is needed: it is opened ``immutable``, which creates no ``-wal`` or
    ``-shm`` file (a user who may not write the directory could not create them)."""
    query = "mode=ro" if _wal(path) else "mode=ro&immutable=1"
    uri = f"file:{quote(str(path.absolute()))}?{query}"
    return sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None,
                           check_same_thread=False)


def _create_private(path: Path) -> None:
    """Create the database file ``path``, when there is none, with mode 0640 (0600 under a
    umask of 077), not a umask's 0644: it holds push tokens (SQLite gives its -wal and -shm
    files the same mode)."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))


def _wal(path: Path) -> bool:
    return path.with_name(path.name + "-wal").exists()


@cache
def _schema(version: int) -> dict[str, frozenset[str]]:
    """The tables (and their columns) of schema ``version``: MIGRATIONS run in memory."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    db = sqlite_utils.Database(conn, execute_plugins=False)
    for step in MIGRATIONS[:version]:
        step(db)
    found = _tables(conn)
    conn.close()
    return found


def _tables(conn: sqlite3.Connection) -> dict[str, frozenset[str]]:
    names = [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return {
        name: frozenset(row[1] for row in conn.execute("SELECT * FROM pragma_table_info(?)",
                                                       (name,)))
        for name in names
    }


def schema_problem(conn: sqlite3.Connection, path: Path, *, writing: bool) -> str | None:
    """What keeps pnbridge from using the database at ``path`` (open on ``conn``), in one
    line; None when it can. An empty database is fine for ``writing`` (it gets the schema),
    as is an older version of pnbridge's (it is migrated); reading needs this version's.
    Checked before anything is written: a file of another application is never touched."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = _tables(conn)
    latest = len(MIGRATIONS)
    if not tables and not version:
        return None if writing else (f"database {path} is empty (start pnbridge serve once, "
                                     "or pass --config)")
    # A newer pnbridge may have changed any table but the first ones.
    expected = _schema(version if version <= latest else 1) if version else {}
    ours = version > 0 and all(
        columns <= tables.get(name, frozenset()) for name, columns in expected.items())
    if not ours:
        listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        return (f"database {path} is not a pnbridge database (schema version {version}, "
                f"tables: {listed or 'none'}): check [storage] path or --config")
    if version > latest:
        return (f"database {path} has schema version {version}; this pnbridge knows "
                f"versions up to {latest} (upgrade pnbridge)")
    if version < latest and not writing:
        return (f"database {path} has schema version {version}, this pnbridge reads "
                f"{latest}: start pnbridge serve once to upgrade it")
    return None


def inspect(path: str | Path, *, serving: bool = False) -> str | None:
    """What is wrong with the pnbridge database at ``path`` for this version, in one line
    (missing, unreadable, not pnbridge's, another schema version, failing SQLite's
    ``quick_check``); None when it is sound. With ``serving``, as ``pnbridge serve`` takes
    it: an older schema version is fine (serve migrates it). Reads only: creates, migrates,
    writes nothing."""
    path = Path(path)
    if not path.exists():
        return f"no database at {path.absolute()} (start pnbridge serve once, or pass --config)"
    try:
        conn = _connect_read_only(path, busy_timeout=5.0)
    except sqlite3.Error as error:
        return f"database {path}: cannot open: {error}"
    try:
        if problem := schema_problem(conn, path, writing=serving):
            return problem
        checked = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.Error as error:
        return f"database {path}: cannot read: {error}"
    finally:
        conn.close()
    if checked != ["ok"]:
        found = "; ".join(" ".join(line.split()) for line in checked)
        return f"database {path} is damaged: {found[:300]}"
    return None


@dataclass
class PendingOp:
    """A store operation waiting for the writer: ``fn(store, *args)``."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    result: Any = None
    error: BaseException | None = None


def _device_row(device: Device) -> tuple[Any, ...]:
    return (
        device.selector, device.username, device.token_calls, device.appid_calls,
        device.token_msgs, device.appid_msgs, json.dumps(device.extras),
        device.created_at, device.updated_at, device.last_seen,
    )


_DEVICE_FIELDS = tuple(f.name for f in fields(Device))
_TIMES = ("created_at", "updated_at", "last_seen")


def _device(row: Sequence[Any]) -> Device:
    try:
        extras = jsontext.stored(row[6])
    except (ValueError, TypeError, RecursionError) as error:
        extras = _unreadable(row[0], "extras", error)
    return _sound(dict(zip(_DEVICE_FIELDS, (*row[:6], extras, *row[7:10]), strict=True)))


def _sound(data: dict[str, Any]) -> Device:
    """A Device from stored values, even ones an older version stored badly (extras nested
    too deep, a time that is no number): what cannot be read is read as ``{}`` (extras) or
    0 (a time) and logged, so such a device can still be shown, listed, removed and expired."""
    selector = data["selector"]
    if not isinstance(data["extras"], dict):
        data["extras"] = _unreadable(selector, "extras", "not a JSON object")
    for name in _TIMES:
        if not isinstance(data[name], int | float):
            data[name] = _unreadable(selector, name, "not a number", 0.0)
    return Device(**data)


def _unreadable(selector: Any, what: str, problem: Any, instead: Any = None) -> Any:
    log.warning("device selector=%s: stored %s cannot be read (%s); read as %r",
                shorten(str(selector)), what, problem, {} if instead is None else instead)
    return {} if instead is None else instead


def _dump(device: Device | None) -> str | None:
    return json.dumps(asdict(device)) if device else None


def _load(text: str | None, selector: str, username: str) -> Device | None:
    """A journaled device (``before`` or ``after``); see ``_sound``. One whose extras nest
    too deep is read without them; one that cannot be read at all, as its selector and
    username."""
    if not text:
        return None
    try:
        data = jsontext.stored(text)
    except (ValueError, RecursionError) as error:
        try:  # the C parser stops itself at the recursion limit
            data = json.loads(text)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            data["extras"] = _unreadable(selector, "extras", error)
    if not isinstance(data, dict) or set(data) != set(_DEVICE_FIELDS):
        _unreadable(selector, "journaled device", "not a device")
        data = {**dict.fromkeys(_DEVICE_FIELDS), **dict.fromkeys(_TIMES, 0.0),
                "selector": selector, "username": username, "extras": {}}
    return _sound(data)


def _event(row: Sequence[Any]) -> Event:
    seq, event_id, kind, reason, selector, username, before, after, time, source = row
    try:
        origin = jsontext.stored(source)
    except (ValueError, TypeError, RecursionError):
        origin = None
    return Event(
        id=event_id, seq=seq, kind=kind, reason=reason, selector=selector, username=username,
        before=_load(before, selector, username), after=_load(after, selector, username),
        time=time, source=origin if isinstance(origin, dict) else {},
    )
