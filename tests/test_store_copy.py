"""``pnbridge store copy``: a host's SQLite database, written by a real daemon (reports, a
push through the pnmediator stand-in, an event a plugin parked, a plugin that stopped
mid-journal), copied into PostgreSQL: every row there with its times, a second copy refused
and then, with --force, the same; a daemon started on the copy sees the devices and the
plugins resume after their cursors, no event delivered twice or lost. And into an SQLite
file (a backup), with the refusals and the progress bar."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from configs import config_toml, merge
from conftest import cli, on_terminal, pnbridge
from engines import StoreEngine
from plugintools import install_plugins, lines, records, wait_until
from pnbridge.model import PushRecord, Report
from pnbridge.ops.instance import default_name
from pnbridge.storage.sqlite.store import SQLiteStore
from pnmediator_stub import KEY, push_config
from postgres import PostgresServer
from reports import report

VOIP = "voip-9f8e7d6c5b4a3210-ok"
FAST = {"backoff": 0.01, "max_backoff": 0.05}
# Each table a copy takes, as the test reads it (its own SQL, in a fixed order).
TABLES = {
    "devices": "SELECT * FROM devices ORDER BY selector",
    "events": "SELECT * FROM events ORDER BY seq",
    "cursors": "SELECT * FROM cursors ORDER BY plugin",
    "failures": "SELECT * FROM failures ORDER BY plugin, seq",
    "pushes": "SELECT time, verb, id, username, selector, pair, token, appid, outcome, code,"
              " message, attempts, latency, requester FROM pushes ORDER BY time, selector",
}


def content(engine: StoreEngine) -> dict[str, list[tuple[Any, ...]]]:
    return {name: [tuple(row) for row in engine.rows(sql)] for name, sql in TABLES.items()}


def copy(config: Path, to: str, *more: str):
    """``pnbridge store copy`` in a worker thread (the test's loop may run a daemon)."""
    return trio.to_thread.run_sync(lambda: cli("store", "copy", "--to", to, "--config",
                                               str(config), *more))


@pytest.mark.postgresql
async def test_a_host_moves_to_postgresql_and_its_plugins_resume(
        start_daemon, stub, tmp_path: Path, postgres_server: PostgresServer,
        pg_database_url: str):
    directory = install_plugins(tmp_path / "plugins", "delivery/gated", "delivery/picky")
    gated, gate, picky = tmp_path / "gated", tmp_path / "gate", tmp_path / "picky"
    tables = merge(push_config(stub), {"plugins": {
        "enabled": ["pnmediator", "gated", "picky"], "paths": [str(directory)],
        "gated": {"path": str(gated), "gate": str(gate)},
        "picky": {"path": str(picky), "healed": str(tmp_path / "never"), "delivery": FAST}}})
    config = tmp_path / "pnbridge.toml"
    config.write_text(config_toml(tmp_path, tables))
    gate.touch()
    daemon = await start_daemon(tables)
    await report(daemon, "IPHONE", username="alice", token=None, calls=VOIP)
    for selector in ("S1", "S2", "BAD", "S3"):
        await report(daemon, selector, username="bob")
    await report(daemon, "S1", username="bob", token="t2")
    answer = await daemon.client.post("/api/v1/push", json={
        "username": "alice", "verb": "NotifyIncomingCall", "id": "call-1@pbx"},
        headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200, answer.text
    await wait_until(lambda: len(lines(gated)) == 6 and daemon.store().pushes())
    await wait_until(lambda: daemon.store().failures())  # BAD, parked by picky
    gate.unlink()  # gated stops at the next event: its cursor stays behind
    await report(daemon, "S4", username="carol")
    await report(daemon, "S5", username="carol")
    await wait_until(lambda: len(lines(picky)) == 7)

    refused = await copy(config, pg_database_url)
    assert refused.returncode == 1
    assert f"a pnbridge daemon (pid {os.getpid()}) runs on the source" in refused.stderr
    daemon.shutdown.set()
    await wait_until(lambda: not Path(f"{daemon.db_path}.running").exists())
    # The dispatcher's last cursors are written as it stops: gated stays behind.
    await wait_until(lambda: daemon.store().cursors() == {"gated": 6, "picky": 8,
                                                          "pnmediator": 8})

    # A record with every field that may be empty, empty (a push the request refused).
    refused = PushRecord(time=1.8e9, verb="NotifyTextMessage", id=None, username="dave",
                         selector="D1", pair=None, token=None, appid=None, outcome="skipped",
                         code=None, message="no token", attempts=0, latency=0.0,
                         requester="cli")
    with contextlib.closing(SQLiteStore(daemon.db_path)) as store, store.transaction():
        store.record_pushes([refused])
    source = StoreEngine("sqlite", {"path": daemon.db_path})
    target = StoreEngine("postgresql", {"path": str(tmp_path / "moved.db"),
                                        "url": pg_database_url}, postgres_server)
    before = content(source)
    assert [len(before[name]) for name in TABLES] == [7, 8, 3, 1, 2]
    wrong = await copy(config, pg_database_url.replace(postgres_server.password, "not-it-42"))
    assert wrong.returncode == 1 and "authentication failed" in wrong.stderr
    assert "not-it-42" not in wrong.stderr and "Traceback" not in wrong.stderr
    # Named as the command line gave them; the password in the URL warned of.
    assert wrong.stderr.startswith(
        "pnbridge: WARNING: --to has a password in its URL, which every user sees in the "
        "process list: use --password-file\n"), wrong.stderr
    assert ("(check the user of --to and its password: --password-file, PGPASSFILE or "
            "PGPASSWORD)") in wrong.stderr and "[storage]" not in wrong.stderr
    (tmp_path / "wrong-password").write_text("not-it-42\n")
    bare = target_name(pg_database_url).replace("***@", "pnbridge@")
    wrong = await copy(config, bare, "--password-file", str(tmp_path / "wrong-password"))
    assert wrong.returncode == 1 and "WARNING" not in wrong.stderr
    assert "check the user of --to and its password: --password-file" in wrong.stderr
    unread = await copy(config, bare, "--password-file", str(tmp_path / "no-such-file"))
    assert unread.returncode == 1 and unread.stderr == (
        f"pnbridge: --password-file {tmp_path / 'no-such-file'}: cannot read it: "
        "No such file or directory\n")
    assert target.rows("SELECT count(*) FROM pg_tables WHERE tablename = 'devices'") == [(0,)]
    copied = await copy(config, pg_database_url)
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout == (
        "copied 7 devices, 8 journal events, 3 plugin cursors, 1 parked or retried event, "
        f"2 push records from {daemon.db_path} to {target_name(pg_database_url)}\n")
    assert postgres_server.password not in copied.stdout + copied.stderr
    assert content(target) == before  # times too: the same doubles

    # The password from a file this time (the URL without it).
    (tmp_path / "pg-password").write_text(postgres_server.password + "\n")
    bare_url = target_name(pg_database_url).replace("***@", "pnbridge@")
    again = await copy(config, bare_url, "--password-file", str(tmp_path / "pg-password"))
    assert again.returncode == 1
    assert again.stderr == (
        f"pnbridge: --to {target_name(pg_database_url)} is not empty (it holds 7 devices, "
        "8 journal events, 3 plugin cursors, 1 parked or retried event, 2 push records): "
        "pass --force to copy into it, replacing rows with the same keys\n")
    forced = await copy(config, pg_database_url, "--force")
    assert forced.returncode == 0, forced.stderr
    assert content(target) == before  # no row twice

    # And back from PostgreSQL into an SQLite file (a backup): the same rows again.
    on_pg = tmp_path / "on-pg.toml"
    on_pg.write_text(config_toml(tmp_path, {"storage": {"url": pg_database_url}}))
    back = await copy(on_pg, str(tmp_path / "back.db"))
    assert back.returncode == 0, back.stderr
    assert content(StoreEngine("sqlite", {"path": str(tmp_path / "back.db")})) == before

    # A daemon on the copy: the devices are there, each plugin resumes after its cursor.
    gate.touch()
    moved = await start_daemon(merge(tables, {"storage": {"url": pg_database_url}}))
    assert moved.store().count_devices() == 7
    await report(moved, "S6", username="carol")
    await wait_until(lambda: len(lines(gated)) == 9 and len(lines(picky)) == 8)
    journal = [(e.kind, e.seq, e.selector) for e in moved.store().events()]
    assert journal[-1][1] == 9 and len(journal) == 9
    assert records(gated) == journal  # each event once, in order, none lost
    assert records(picky) == [e for e in journal if e[2] != "BAD"]
    assert [f.event.selector for f in moved.store().failures()] == ["BAD"]
    answer = await moved.client.post("/api/v1/push", json={
        "username": "alice", "verb": "NotifyIncomingCall", "id": "call-2@pbx"},
        headers={"Authorization": f"Bearer {KEY}"})
    assert answer.json()["devices"][0]["outcome"] == "sent"
    await wait_until(lambda: len(moved.store().pushes()) == 3)
    # The copy's target named otherwise (no running-daemon record here for that name), as
    # from another host: the leases the daemon holds in it refuse the copy still.
    other = pg_database_url.replace("127.0.0.1", "localhost")
    refused = await copy(config, other, "--force")
    assert refused.returncode == 1
    assert f"\npnbridge: instance {default_name()} holds the lease " in refused.stderr
    assert "stop every instance on it first (on every host)" in refused.stderr


def target_name(url: str) -> str:
    """The URL as pnbridge names it: without the password."""
    return "postgresql://***@" + url.split("@", 1)[1]


def _config(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[storage]\npath = "{tmp_path / name}.db"\n')
    return path


def test_a_backup_into_sqlite_and_what_is_refused(tmp_path: Path):
    config = _config(tmp_path, "host")
    store = SQLiteStore(tmp_path / "host.db")
    with store.transaction():
        for i in range(1500):
            store.register(Report("token", f"u{i % 40}", f"S{i:04}", token_msgs=f"t{i}"),
                           {}, 1_700_000_000.0 + i)
        removed = store.remove(selector="S0007", reason="test", source={}, now=1.8e9)
    store.save_cursor("recorder", 1200, 1.75e9)
    assert removed
    top = store.journal_top()
    store.close()
    backup = tmp_path / "backup.db"
    done = cli("store", "copy", "--to", str(backup), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("copied 1,499 devices, 1,501 journal events, 1 plugin "
                                  "cursor from ")
    source = StoreEngine("sqlite", {"path": str(tmp_path / "host.db")})
    copy_of = StoreEngine("sqlite", {"path": str(backup)})
    assert content(copy_of) == content(source)
    # The next event of the copy is numbered past the source's highest.
    copied = SQLiteStore(backup)
    with copied.transaction():
        change = copied.register(Report("token", "new", "NEW", token_msgs="t"), {}, 1.9e9)
    assert change.event is not None and change.event.seq == top + 1
    copied.close()

    for args, said in (
        (("--to", str(backup)), f"--to {backup} is not empty (it holds 1,500 devices, "
                                "1,502 journal events, 1 plugin cursor): pass --force to "
                                "copy into it, replacing rows with the same keys"),
        (("--to", str(tmp_path / "host.db")), f"--to {tmp_path / 'host.db'} is the "
                                              "config's own database"),
        (("--to", "mysql://root:hunter2@db/x"), "--to mysql://***@db/x: neither a "
                                                "postgresql:// URL nor a file path"),
    ):
        refused = cli("store", "copy", *args, "--config", str(config))
        assert refused.returncode == 1 and refused.stderr == f"pnbridge: {said}\n", \
            refused.stderr
    missing = cli("store", "copy", "--to", str(backup), "--config",
                  str(_config(tmp_path, "none")))
    assert missing.returncode == 1 and "no database at" in missing.stderr
    assert not (tmp_path / "none.db").exists()

    # --force: the source's rows replace the target's with the same keys, the rest is kept.
    forced = cli("store", "copy", "--to", str(backup), "--force", "--config", str(config))
    assert forced.returncode == 0, forced.stderr
    assert content(copy_of)["devices"] == sorted(
        content(source)["devices"] + [row for row in content(copy_of)["devices"]
                                      if row[0] == "NEW"])

    # Progress on a terminal only.
    shown = on_terminal("store", "copy", "--to", str(tmp_path / "b2.db"), "--config",
                        str(config))[1]
    assert b"Copying" in shown and b"100%" in shown
    quiet = cli("store", "copy", "--to", str(tmp_path / "b3.db"), "--config", str(config))
    assert "Copying" not in quiet.stderr and quiet.stderr == ""


def _host(tmp_path: Path, devices: int) -> Path:
    """A host's SQLite database of ``devices`` reports (each a device and its event) and a
    cursor; its config."""
    config = _config(tmp_path, "host")
    store = SQLiteStore(tmp_path / "host.db")
    with store.transaction():
        for i in range(devices):
            store.register(Report("token", f"u{i % 40}", f"S{i:05}", token_msgs=f"t{i}"),
                           {}, 1_700_000_000.0 + i)
    store.save_cursor("recorder", devices // 2, 1.75e9)
    store.close()
    return config


def _events(target: StoreEngine) -> int:
    """How many events the target holds so far (0 before the copy made its schema)."""
    import psycopg
    try:
        return int(target.rows("SELECT count(*) FROM events")[0][0])
    except psycopg.errors.UndefinedTable:
        return 0


@pytest.mark.postgresql
def test_an_interrupted_copy_is_refused_by_serve_and_finished_by_running_it_again(
        tmp_path: Path, postgres_server: PostgresServer, pg_database_url: str):
    config = _host(tmp_path, 6000)
    source = StoreEngine("sqlite", {"path": str(tmp_path / "host.db")})
    target = StoreEngine("postgresql", {"path": str(tmp_path / "moved.db"),
                                        "url": pg_database_url}, postgres_server)
    (tmp_path / "pg-password").write_text(postgres_server.password + "\n")
    to = ("--to", target_name(pg_database_url).replace("***@", "pnbridge@"),
          "--password-file", str(tmp_path / "pg-password"))
    copying = subprocess.Popen(
        [sys.executable, "-m", "pnbridge", "store", "copy", *to, "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while _events(target) == 0 and copying.poll() is None:
        time.sleep(0.005)
    copying.send_signal(signal.SIGINT)  # Ctrl-C, amid the journal's chunks
    out, err = copying.communicate(timeout=60)
    assert copying.returncode == 130, err
    assert (out, err) == ("", "pnbridge: copy interrupted: run it again to finish\n")
    held = _events(target)
    assert 0 < held < 6000, held
    # The partial target's journal hands out seqs past every event it holds.
    [(top, highest)] = target.rows(
        "SELECT pg_sequence_last_value(pg_get_serial_sequence('events', 'seq')::regclass),"
        " max(seq) FROM events")
    assert top >= highest

    said = (f"database {target_name(pg_database_url)} is an unfinished copy of "
            f"{tmp_path / 'host.db'} (pnbridge store copy was interrupted): run the same "
            "pnbridge store copy again to finish it")
    on_pg = tmp_path / "on-pg.toml"
    on_pg.write_text(config_toml(tmp_path, {"storage": {"url": pg_database_url}}))
    served = pnbridge("serve", "--config", str(on_pg))
    assert served.returncode == 1 and f"pnbridge: {said}\n" in served.stderr, served.stderr
    assert "Traceback" not in served.stderr
    doctor = pnbridge("doctor", "--config", str(on_pg))
    assert doctor.returncode == 2 and said in doctor.stdout, doctor.stdout
    # Another source is refused with what the target is.
    other = _config(tmp_path, "other")
    SQLiteStore(tmp_path / "other.db").close()
    refused = cli("store", "copy", *to, "--config", str(other))
    assert refused.returncode == 1 and refused.stderr == (
        f"pnbridge: --to {target_name(pg_database_url)} is an unfinished copy of "
        f"{tmp_path / 'host.db'}, not of {tmp_path / 'other.db'}: run that copy again, or "
        "pass --force to copy into it\n")

    # The same copy again, without --force: finished, as one uninterrupted copy.
    again = cli("store", "copy", *to, "--config", str(config))
    assert again.returncode == 0 and again.stderr == "", again.stderr
    assert again.stdout.startswith("copied 6,000 devices, 6,000 journal events, 1 plugin ")
    assert content(target) == content(source)
    assert target.rows("SELECT name FROM leases") == []
    healthy = pnbridge("doctor", "--config", str(on_pg)).stdout
    assert f"database {target_name(pg_database_url)}: schema version" in healthy, healthy
    with contextlib.closing(target.open()) as store, store.transaction():
        change = store.register(Report("token", "new", "NEW", token_msgs="t"), {}, 1.9e9)
    assert change.event is not None and change.event.seq == 6001


def test_help_recommends_a_password_file():
    shown = " ".join(cli("store", "copy", "--help").stdout.split())
    assert ("its password from --password-file, PGPASSFILE or PGPASSWORD (not in the URL: "
            "ps shows the command line to every user)") in shown
    assert "or in the URL" not in shown and "Recommended." in shown
