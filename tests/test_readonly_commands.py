"""Reading commands (devices list/show/export, events) open the database read-only and never
create, migrate or write it; a missing, foreign or other-version database is one line that
names the path. Writing commands refuse a foreign file before touching it."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import cli, pnbridge
from pnbridge.model import Report
from pnbridge.storage.sqlite.schema import MIGRATIONS, inspect
from pnbridge.storage.sqlite.store import SQLiteStore

SERVICE_USER = "pnbridge-ro-test"
TOKEN = "QVBBOTEyMzQ1Njc4OTAxMjM0NTY3ODkw"
READING = (("devices", "list"), ("devices", "show", "S1"), ("devices", "export"), ("events",),
           ("pushes",))
WRITING = (("devices", "remove", "S1"), ("events", "retry"), ("devices", "import", "-"))


@pytest.fixture(scope="module")
def service_user() -> Iterator[pwd.struct_passwd]:
    """A system user that is not root (root ignores file modes)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI must run as root to create a service user")
        pytest.skip("needs root to create a user the database is not writable by")
    subprocess.run(["userdel", SERVICE_USER], capture_output=True)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    SERVICE_USER], check=True, capture_output=True)
    yield pwd.getpwnam(SERVICE_USER)
    subprocess.run(["userdel", SERVICE_USER], capture_output=True)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A root-owned 0755 directory outside root's 0700 pytest tree: the service user may
    read it but not create anything in it (no -wal, no -shm)."""
    path = Path(tempfile.mkdtemp(prefix="pnbridge-ro-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def as_user(user: pwd.struct_passwd, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pnbridge ARGS`` run as ``user``: the interpreter lives under root's 0700 home, so
    the child loads pnbridge as root and then drops to the user before the command runs."""
    code = ("import os, sys; from pnbridge.cli import main; os.setgroups([]); "
            f"os.setgid({user.pw_gid}); os.setuid({user.pw_uid}); "
            "sys.argv = ['pnbridge', *sys.argv[1:]]; main()")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def config(directory: Path, db: Path) -> str:
    path = directory / "pnbridge.toml"
    path.write_text(f'[server]\nlisten = ["127.0.0.1:0"]\n[storage]\npath = "{db}"\n')
    path.chmod(0o644)
    return str(path)


def seed(db: Path) -> None:
    store = SQLiteStore(db)
    with store.transaction():
        store.register(Report("token", "alice", "S1", token_msgs=TOKEN, appid_msgs="com.app"),
                       {"test": True}, time.time())
    store.close()


def snapshot(directory: Path) -> dict[str, str]:
    """Every file of ``directory`` and a hash of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.iterdir()}


def one_line_naming(result: subprocess.CompletedProcess[str], path: Path, words: str) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert str(path) in result.stderr and words in result.stderr, result.stderr


def foreign_database(path: Path, *, wal: bool, version: int) -> None:
    conn = sqlite3.connect(path)
    if wal:
        conn.execute("PRAGMA journal_mode=wal")
    conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO messages (body) VALUES ('hello')")
    conn.execute(f"PRAGMA user_version={version}")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(("wal", "version"), [(False, 0), (True, 0), (False, 2)])
def test_a_foreign_database_is_refused_byte_for_byte_untouched(tmp_path, wal, version):
    db = tmp_path / "other-app.db"
    foreign_database(db, wal=wal, version=version)
    before = snapshot(tmp_path)
    conf = config(tmp_path, db)
    for args in (*READING, *WRITING):
        result = pnbridge(*args, "--config", conf, input="")  # a real stdin, for import -
        one_line_naming(result, db, "is not a pnbridge database")
        assert snapshot(tmp_path) == {**before, "pnbridge.toml": snapshot(tmp_path)[
            "pnbridge.toml"]}, args
    served = pnbridge("serve", "--config", conf)  # serve logs its config first
    assert served.returncode == 1 and "Traceback" not in served.stderr
    assert served.stderr.splitlines()[-1] == f"pnbridge: {inspect(db)}"
    assert snapshot(tmp_path).keys() == {*before, "pnbridge.toml"}
    assert snapshot(tmp_path)[db.name] == before[db.name]
    assert "not a pnbridge database" in (inspect(db) or "")


def test_a_missing_database_is_one_line_and_nothing_is_created(tmp_path):
    db = tmp_path / "nowhere.db"
    conf = config(tmp_path, db)
    for args in (*READING, ("devices", "remove", "S1"), ("events", "retry")):
        result = cli(*args, "--config", conf)
        one_line_naming(result, db, "no database at")
        assert "start pnbridge serve once, or pass --config" in result.stderr
        assert sorted(os.listdir(tmp_path)) == ["pnbridge.toml"], args
    assert inspect(db) == f"no database at {db} (start pnbridge serve once, or pass --config)"


def test_a_read_only_database_lists_for_a_user_who_cannot_write_it(service_user, shared):
    db = shared / "pnbridge.db"
    seed(db)
    db.chmod(0o444)
    conf = config(shared, db)
    before = snapshot(shared)
    for args in READING:
        result = as_user(service_user, shared, *args, "--config", conf)
        assert result.returncode == 0, (args, result.stderr)
        assert "readonly" not in result.stderr
        assert snapshot(shared) == before, args  # not even a -wal or -shm file
    listed = as_user(service_user, shared, "devices", "list", "--config", conf)
    assert "S1" in listed.stdout and "alice" in listed.stdout
    assert '"selector":"S1"' in as_user(service_user, shared, "devices", "export",
                                        "--config", conf).stdout
    assert inspect(db) is None
    removed = as_user(service_user, shared, "devices", "remove", "S1", "--config", conf)
    assert removed.returncode == 1 and "Traceback" not in removed.stderr


def test_a_running_daemons_database_is_read_through_its_wal(service_user, shared, spawn):
    db = shared / "pnbridge.db"
    conf = config(shared, db)
    daemon = spawn(Path(conf).read_text())
    url = daemon.url()
    answer = httpx.get(f"{url}/token/", params={"username": "bob", "selector": "LIVE",
                                                "pushToken": TOKEN, "pushappid": "a.b"})
    assert answer.status_code == 200
    assert (shared / "pnbridge.db-wal").exists()  # the daemon holds it open
    files = sorted(shared.glob("pnbridge.db*"))
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o640}  # whatever the umask
    denied = as_user(service_user, shared, "devices", "list", "--config", conf)
    one_line_naming(denied, db, "permission denied (run as the daemon's user, or one in its")
    for path in files:  # the operator is in the daemon's group
        os.chown(path, -1, service_user.pw_gid)
    listed = as_user(service_user, shared, "devices", "list", "--config", conf)
    assert listed.returncode == 0, listed.stderr
    assert "LIVE" in listed.stdout
    events = as_user(service_user, shared, "events", "--config", conf)
    assert events.returncode == 0 and "LIVE" in events.stdout, events.stderr
    assert daemon.stop() == 0


def test_another_schema_version_is_one_line_for_reading_and_migrated_by_writing(tmp_path):
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    from sqlite_utils import Database
    MIGRATIONS[0](Database(conn))
    conn.execute("PRAGMA user_version=1")
    conn.close()
    before = snapshot(tmp_path)
    conf = config(tmp_path, db)
    for args in READING:
        result = cli(*args, "--config", conf)
        one_line_naming(result, db, f"schema version 1, this pnbridge reads {len(MIGRATIONS)}")
        assert snapshot(tmp_path)[db.name] == before[db.name]
    assert "start pnbridge serve once to upgrade it" in (inspect(db) or "")
    retried = cli("events", "retry", "--config", conf)  # a writing command migrates
    assert retried.returncode == 0, retried.stderr
    assert cli("events", "--config", conf).returncode == 0
    assert inspect(db) is None

    newer = sqlite3.connect(db)
    newer.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    newer.commit()
    newer.close()
    for args in (*READING, ("events", "retry")):
        one_line_naming(cli(*args, "--config", conf), db, "upgrade pnbridge")


def test_a_wal_the_user_cannot_read_through_is_one_line_with_the_fix(service_user, shared):
    live = shared / "live.db"
    store = SQLiteStore(live)
    with store.transaction():
        store.register(Report("token", "alice", "S1", token_msgs=TOKEN), {}, time.time())
    db = shared / "pnbridge.db"  # what a crashed daemon leaves: the file and its -wal
    shutil.copy(live, db)
    shutil.copy(f"{live}-wal", f"{db}-wal")
    store.close()
    for path in shared.iterdir():
        path.chmod(0o644)
    conf = config(shared, db)
    before = snapshot(shared)
    result = as_user(service_user, shared, "devices", "list", "--config", conf)
    one_line_naming(result, db, "run as the daemon's user")
    assert snapshot(shared) == before
    assert cli("devices", "list", "--config", conf).returncode == 0  # root may
