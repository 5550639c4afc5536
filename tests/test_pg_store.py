"""The PostgreSQL engine itself (storage/postgresql/), on a real server: migrations and the
schema's refusals, psycopg's errors as StoreError worded for an operator (the server stopped
mid-run, then back: the same store recovers), the password in no output, the missing extra's
one line, group commit, and a report's 2xx durable across kill -9 of the daemon."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import trio
from configs import config_toml, free_port
from pnbridge.config.tables import StorageConfig
from pnbridge.errors import StoreError
from pnbridge.model import Report
from pnbridge.storage.engines import DRIVER_MISSING, engine
from pnbridge.storage.postgresql.schema import MIGRATIONS
from pnbridge.storage.writer import open_writer
from postgres import PostgresServer


def report(selector: str, token: str = "tok", username: str = "alice") -> Report:
    return Report(kind="token", selector=selector, username=username, token_calls=token,
                  appid_calls="app.id")


def version(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        assert row is not None
        return row[0]


def database(server: PostgresServer) -> str:
    """Another new database on the run's server (its URL, with the password)."""
    return server.url(server.create_database())


def test_migrations_and_refusals(postgres_server: PostgresServer, pg_database_url: str):
    fresh = pg_database_url
    with pytest.raises(StoreError, match="is empty"):  # reading creates nothing
        engine(StorageConfig(url=fresh)).open(reading=True)
    engine(StorageConfig(url=fresh)).open().close()
    assert version(fresh) == len(MIGRATIONS)

    older = database(postgres_server)  # version 1 of the schema, with a device
    with psycopg.connect(older, autocommit=True) as conn:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = 1")
        conn.execute("INSERT INTO devices (selector, username, extras, created_at,"
                     " updated_at, last_seen) VALUES ('s1', 'bob', '{}', 1, 1, 1)")
    with pytest.raises(StoreError, match=f"schema version 1, this pnbridge reads {len(MIGRATIONS)}"):
        engine(StorageConfig(url=older)).open(reading=True)
    store = engine(StorageConfig(url=older)).open()
    assert [d.username for d in store.devices()] == ["bob"]
    assert store.pushes() == []  # the push history's table is there
    store.close()
    assert version(older) == len(MIGRATIONS)

    with psycopg.connect(older, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    for reading in (False, True):
        with pytest.raises(StoreError, match="schema version 99; this pnbridge knows "
                                             f"versions up to {len(MIGRATIONS)} "
                                             "\\(upgrade pnbridge\\)"):
            engine(StorageConfig(url=older)).open(reading=reading)

    theirs = database(postgres_server)
    with psycopg.connect(theirs, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id integer)")
    with pytest.raises(StoreError, match=r"is not a pnbridge database .*tables: orders"):
        engine(StorageConfig(url=theirs)).open()
    with psycopg.connect(theirs) as conn:  # left as it was
        names = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
    assert names == {"orders"}
    assert "not a pnbridge database" in (engine(StorageConfig(url=theirs)).inspect() or "")


def test_errors_worded_without_the_password(postgres_server: PostgresServer,
                                            pg_database_url: str, tmp_path: Path):
    password, port = postgres_server.password, postgres_server.port
    url = pg_database_url.replace(f":{password}@", "@")
    name = url.rsplit("/", 1)[1]
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password-9\n")
    cases = [
        (StorageConfig(url=url, password_file=str(wrong)), "authentication failed"),
        (StorageConfig(url=url.replace(name, "nosuch"), password_file=str(wrong)),
         "authentication failed|does not exist"),
        (StorageConfig(url=f"postgresql://pnbridge:{password}@127.0.0.1:{port}/nosuch"),
         "the database does not exist"),
        (StorageConfig(url=f"postgresql://pnbridge:{password}@127.0.0.1:{free_port()}/x"),
         "cannot reach the PostgreSQL server"),
    ]
    for storage, problem in cases:
        with pytest.raises(StoreError) as raised:
            engine(storage).open()
        said = f"{raised.value} {raised.value.problem}"
        assert str(raised.value).startswith("cannot open database postgresql://***@127.0.0.1:")
        assert re.search(problem, raised.value.problem), said
        assert password not in said and "not-the-password-9" not in said
    engine(StorageConfig(url=pg_database_url)).open().close()  # the schema
    with psycopg.connect(pg_database_url, autocommit=True) as conn:  # a standby, say
        conn.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    store = engine(StorageConfig(url=pg_database_url)).open()
    [(_, error)] = store.run_batch([lambda s: s.register(report("s1"), {}, 1.0)])
    store.close()
    assert isinstance(error, StoreError)
    assert error.problem.startswith("the database is read-only (a standby, or "
                                    "default_transaction_read_only) ("), error.problem
    right = tmp_path / "right"
    right.write_text(password + "\n")  # the first line, without its newline
    engine(StorageConfig(url=url, password_file=str(right))).open().close()
    with pytest.raises(StoreError, match=f"password_file {tmp_path}/none: cannot read it"):
        engine(StorageConfig(url=url, password_file=str(tmp_path / "none")))


def test_connection_settings_keep_the_urls(pg_database_url: str):
    """busy_timeout is the lock timeout; the URL's own options and application_name stay."""
    url = (f"{pg_database_url}?options=-c%20statement_timeout%3D7000"
           "&application_name=pbx1")
    store = engine(StorageConfig(url=url, busy_timeout=0.25)).open()
    shown = [store.conn.execute(f"SHOW {name}").fetchone() for name in
             ("lock_timeout", "statement_timeout", "application_name")]
    store.close()
    assert shown == [("250ms",), ("7s",), ("pbx1",)]


def test_a_unix_socket(postgres_server: PostgresServer, pg_database_url: str):
    """``?host=/socket/dir``: libpq's unix socket (trust here: no password)."""
    name = pg_database_url.rsplit("/", 1)[1]
    url = (f"postgresql://pnbridge@/{name}?host={postgres_server.socket_dir}"
           f"&port={postgres_server.port}")
    database = engine(StorageConfig(url=url))
    assert database.where == url.replace("pnbridge@", "***@")
    store = database.open()
    [(change, error)] = store.run_batch([lambda s: s.register(report("s1"), {}, 1.0)])
    store.close()
    assert error is None and change.outcome == "created"


def test_server_stopped_mid_run_then_back(postgres_server: PostgresServer,
                                          pg_database_url: str):
    database = engine(StorageConfig(url=pg_database_url, busy_timeout=1))
    store, reader = database.open(), database.reader()
    [(change, error)] = store.run_batch([lambda s: s.register(report("s1"), {}, 1.0)])
    assert error is None and reader.count_devices() == 1
    postgres_server.stop()
    try:
        [(_, error)] = store.run_batch([lambda s: s.register(report("s2"), {}, 2.0)])
        assert isinstance(error, StoreError)
        assert "PostgreSQL server" in error.problem, error.problem
        assert isinstance(error.__cause__, psycopg.Error)
        for operation in (reader.count_devices, store.devices):
            with pytest.raises(StoreError) as raised:
                operation()
            assert "PostgreSQL server" in raised.value.problem
    finally:
        postgres_server.start()
    # The same stores, without being opened again.
    [(change, error)] = store.run_batch([lambda s: s.register(report("s2"), {}, 3.0)])
    assert error is None and change.event is not None
    assert reader.count_devices() == 2
    postgres_server.kill()  # a crash: the connections die without a word
    postgres_server.start()
    [(change, error)] = store.run_batch([lambda s: s.register(report("s3"), {}, 4.0)])
    assert error is None, error  # BEGIN on the dead connection, then on a new one
    assert reader.count_devices() == 3
    store.close()
    reader.close()


def test_missing_extra_is_one_line(tmp_path: Path):
    config = tmp_path / "pnbridge.toml"
    config.write_text(config_toml(tmp_path, {"storage": {"url": "postgresql://x@h/db"}}))
    hide = ("import sys; sys.modules['psycopg'] = None; "
            "from pnbridge.cli import main; sys.argv[0] = 'pnbridge'; main()")
    for command in (["devices", "list"], ["serve"], ["doctor"], ["check-config"]):
        result = subprocess.run([sys.executable, "-c", hide, *command, "--config", str(config)],
                                capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert result.returncode != 0, command
        assert DRIVER_MISSING in result.stdout + result.stderr, (command, result.stderr)
        assert "Traceback" not in result.stderr


async def test_group_commit_and_unchanged_reports(pg_database_url: str):
    storage = StorageConfig(url=pg_database_url)
    async with open_writer(storage) as writer:
        results: list[object] = []

        async def one(n: int) -> None:
            results.append(await writer.call(
                lambda s: s.register(report(f"s{n}", username=f"u{n % 9}"), {}, 10.0)))

        async with trio.open_nursery() as nursery:
            for n in range(300):
                nursery.start_soon(one, n)
        again = await writer.call(lambda s: s.register(report("s1", username="u1"), {}, 20.0))
    with psycopg.connect(storage.url or "") as conn:  # xmin: the transaction that wrote it
        row = conn.execute("SELECT count(*), count(DISTINCT xmin::text) FROM events").fetchone()
    assert row is not None
    events, transactions = row
    assert len(results) == 300 and events == 300
    assert transactions <= 30, f"{transactions} transactions for 300 reports"
    assert again.outcome == "unchanged" and again.event is None
    assert again.device.last_seen == 20.0 and again.device.updated_at == 10.0


def test_answered_report_survives_kill_9(postgres_server: PostgresServer,
                                         pg_database_url: str, spawn):
    url = pg_database_url
    daemon = spawn({"storage": {"url": url}})
    base = daemon.url()
    assert postgres_server.password not in daemon.log and "postgresql://***@127.0.0.1" in daemon.log
    answered = []
    with httpx.Client(base_url=base, timeout=5) as client:
        for n in range(40):
            answer = client.post("/token/", data={
                "username": f"u{n % 5}", "selector": f"sel-{n}", "pushToken": f"tok-{n}",
                "pushappid": "app.id"})
            assert answer.status_code == 200, answer.text
            answered.append(f"sel-{n}")
    daemon.popen.send_signal(signal.SIGKILL)
    daemon.popen.wait(10)
    store = engine(StorageConfig(url=url)).open(reading=True)
    stored = {d.selector for d in store.devices()}
    journaled = {e.selector for e in store.events(0, 1000)}
    store.close()
    assert set(answered) <= stored and set(answered) <= journaled


def test_readyz_and_reports_while_the_server_is_down(postgres_server: PostgresServer,
                                                      pg_database_url: str, spawn,
                                                      tmp_path: Path):
    url, password = pg_database_url, postgres_server.password
    tables = {"storage": {"url": url, "busy_timeout": 1}}
    daemon = spawn(tables)
    base = daemon.url()
    config = tmp_path / "pnbridge.toml"
    for command in ("check-config", "doctor"):
        shown = subprocess.run([sys.executable, "-m", "pnbridge", command, "--config",
                                str(config)], capture_output=True, text=True, timeout=60)
        assert password not in shown.stdout + shown.stderr, command
    doctor = shown.stdout + shown.stderr
    assert "database postgresql://***@127.0.0.1" in doctor
    assert f"schema version {len(MIGRATIONS)}" in doctor

    def post(client: httpx.Client, n: int) -> int:
        return client.post("/token/", data={"username": "u", "selector": f"s{n}",
                                            "pushToken": f"t{n}", "pushappid": "a"}).status_code

    with httpx.Client(base_url=base, timeout=10) as client:
        assert post(client, 1) == 200
        assert client.get("/readyz").status_code == 200
        postgres_server.stop()
        try:
            assert post(client, 2) == 503
            ready = client.get("/readyz")
            assert ready.status_code == 503 and "PostgreSQL server" in ready.text
            assert password not in ready.text
        finally:
            postgres_server.start()
        deadline = time.monotonic() + 20
        while post(client, 3) != 200:  # no restart of pnbridge
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert client.get("/readyz").status_code == 200
    daemon.stop()
    assert password not in daemon.log
    assert "storage failed" in daemon.log
