"""The SQLite schema: the migrations that build it, the check that a file is a pnbridge
database of a version this one can use, and ``inspect`` (doctor and the read-only commands).
How a connection is opened (created private, or read-only) is here too."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import cache
from pathlib import Path
from urllib.parse import quote

import sqlite_utils


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


def _create_push_history(db: sqlite_utils.Database) -> None:
    # One row per device per push (history.py); tokens only shortened.
    db.execute(
        """CREATE TABLE pushes (
            time REAL NOT NULL,
            verb TEXT NOT NULL,
            id TEXT,
            username TEXT NOT NULL,
            selector TEXT NOT NULL,
            pair TEXT,
            token TEXT,
            appid TEXT,
            outcome TEXT NOT NULL,
            code INTEGER,
            message TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            latency REAL NOT NULL,
            requester TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX pushes_time ON pushes (time)")
    db.execute("CREATE INDEX pushes_username ON pushes (username, time)")
    db.execute("CREATE INDEX pushes_selector ON pushes (selector, time)")
    db.execute("CREATE INDEX pushes_id ON pushes (id, time)")
    db.execute("CREATE INDEX events_username ON events (username, seq)")


def _create_leases(db: sqlite_utils.Database) -> None:
    # Which instance delivers each plugin (delivery:NAME) and runs maintenance (leases.py).
    db.execute(
        """CREATE TABLE leases (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            expires_at REAL NOT NULL,
            renewed_at REAL NOT NULL,
            taken_at REAL NOT NULL
        )"""
    )


def _create_digest_nonces(db: sqlite_utils.Database) -> None:
    # HTTP Digest, shared by every instance (nonces.py): the nonces' signing key (one row),
    # and each used nonce's highest nonce count until it expires.
    db.execute("CREATE TABLE digest_key (id INTEGER PRIMARY KEY CHECK (id = 1), key BLOB NOT NULL)")
    db.execute(
        """CREATE TABLE digest_nonces (
            nonce TEXT PRIMARY KEY,
            issued REAL NOT NULL,
            nc INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX digest_nonces_issued ON digest_nonces (issued)")


# Schema version N is reached by running MIGRATIONS[N - 1]. Append, never edit.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _create_devices_and_journal,
    _create_delivery_state,
    _create_push_history,
    _create_leases,
    _create_digest_nonces,
]


def connect_read_only(path: Path, busy_timeout: float) -> sqlite3.Connection:
    """A connection that cannot write ``path``, nor create it or anything beside it.

    While a process has the database open, its ``-wal`` file exists and the connection
    reads through it (``mode=ro``, with the locks every reader takes). Otherwise nothing
    beside the file is needed: it is opened ``immutable``, which creates no ``-wal`` or
    ``-shm`` file (a user who may not write the directory could not create them)."""
    query = "mode=ro" if wal(path) else "mode=ro&immutable=1"
    uri = f"file:{quote(str(path.absolute()))}?{query}"
    return sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None,
                           check_same_thread=False)


def create_private(path: Path) -> None:
    """Create the database file ``path``, when there is none, with mode 0640 (0600 under a
    umask of 077), not a umask's 0644: it holds push tokens (SQLite gives its -wal and -shm
    files the same mode)."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))


@contextmanager
def one_at_a_time(path: Path) -> Iterator[None]:
    """Held while a store checks and migrates the database ``path``: instances starting at
    once (``pnbridge@a``, ``pnbridge@b``) do it one after the other, as a migration is not one
    transaction (sqlite_utils commits as it creates). A lock on the directory (flock), not on
    the file: closing another descriptor of the file would drop SQLite's own locks."""
    try:
        fd = os.open(path.absolute().parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield  # a directory this user cannot open: unguarded, as before
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def wal(path: Path) -> bool:
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
        conn = connect_read_only(path, busy_timeout=5.0)
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
