"""``pnbridge pushes`` and ``pnbridge devices show``'s history, on real SQLite files written
through the store, run as a user runs them."""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import time
from dataclasses import fields
from functools import partial
from pathlib import Path

import pytest
import trio
from conftest import cli, pnbridge
from pnbridge.model import HistoryOutcome, PushRecord, Report, isotime
from pnbridge.ops.log import shorten
from pnbridge.storage.sqlite.schema import MIGRATIONS
from pnbridge.storage.sqlite.store import SQLiteStore
from pnmediator_stub import KEY, push_config
from reports import report
from sqlite_utils import Database

NOW = time.time()
INSTALL_MD = Path(__file__).parent.parent / "docs" / "install.md"
CALLS = "QVBBOTEyMzQ1Njc4OTAxMjM0NTY3ODkwCALLS"
MSGS = "QVBBOTEyMzQ1Njc4OTAxMjM0NTY3ODkwMSGS"
# What must reach no terminal: C0 (but the newline ending a line), DEL, C1, the line and
# paragraph separators, the bidi controls.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e"
                    "\u2066-\u2069]")
FORGED = "1999-12-31T23:59:59.999Z  IncomingCall  FORGED"
HOSTILE = ["a\nb", "a\rb", "\x1b[2J", "\x1b]0;owned\x07", "\x9b31m", "x\u2028y", "\x7f",
           "\x85", "\u202etxt.exe", "\u2066x\u2069", f"x\n{FORGED}"]


def record(ago: float, verb: str, id: str | None, username: str, selector: str,
           outcome: HistoryOutcome, code: int | None, **more) -> PushRecord:
    """A push record ``ago`` seconds before NOW, as the daemon would keep it."""
    pair = more.pop("pair", "calls" if verb == "IncomingCall" else "msgs")
    values = {"token": "QVBBOT…kw" if outcome != "skipped" else None,
              "appid": "com.app", "message": "pnmediator HTTP 200: OK" if code == 200 else "",
              "attempts": 0 if outcome == "skipped" else 1,
              "latency": 0.042, "requester": "api:pbx", **more}
    if outcome == "skipped":
        pair = None
    return PushRecord(NOW - ago, verb, id, username, selector, pair, values["token"],
                      values["appid"], outcome, code, values["message"], values["attempts"],
                      values["latency"], values["requester"])


def history_records() -> list[PushRecord]:
    """The history of the ``history`` fixture, oldest first."""
    return [
        record(7200, "IncomingCall", "call-A", "alice", "S1", "sent", 200),
        record(3000, "IncomingCall", "call-B", "alice", "S1", "failed", 500, attempts=3,
               message="Internal error", latency=2.5),
        record(3000, "IncomingCall", "call-B", "alice", "S2", "skipped", None,
               message="no calls token"),
        record(600, "NotifyGenericTextMessage", None, "bob", "S3", "invalid-token", 200,
               message="token rejected (pnmediator code 404: Device token not found); msgs pair "
                       "cleared", requester="console:ops"),
        record(60, "IncomingCall", "call-C", "bob", "S3", "sent", 200, requester="cli"),
    ]


def database(tmp_path: Path, records: list[PushRecord]) -> tuple[str, Path]:
    """A config whose database holds alice's S1 (both pairs) and S2 (messages only), bob's
    S3, and ``records`` in the push history."""
    db = tmp_path / "pnbridge.db"
    store = SQLiteStore(db)
    with store.transaction():
        for selector, user, calls in (("S1", "alice", CALLS), ("S2", "alice", None),
                                      ("S3", "bob", None)):
            store.register(Report("token", user, selector, token_calls=calls,
                                  appid_calls="com.app.voip" if calls else None,
                                  token_msgs=MSGS, appid_msgs="com.app"),
                           {"route": "/token/", "client": "192.0.2.7"}, NOW - 86400)
        store.record_pushes(records)
    store.close()
    config = tmp_path / "pnbridge.toml"
    config.write_text(f'[storage]\npath = "{db}"\n')
    return str(config), db


@pytest.fixture
def history(tmp_path: Path) -> str:
    """A database whose history ends now: NOW is taken again for each test, so relative
    ``--since`` windows hold however long after the import a test runs."""
    global NOW
    NOW = time.time()
    return database(tmp_path, history_records())[0]


def listed(config: str, *args: str) -> list[dict]:
    """The records ``pnbridge pushes ARGS --json`` prints."""
    result = cli("pushes", *args, "--json", "--config", config)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def labels(found: list[dict]) -> list[tuple[str | None, str]]:
    return [(r["id"], r["selector"]) for r in found]


def test_the_command_lists_the_history_newest_first(history):
    result = pnbridge("pushes", "--config", history)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["TIME", "VERB", "ID", "USERNAME", "SELECTOR", "PAIR", "TOKEN",
                                "OUTCOME", "CODE", "ATTEMPTS", "LATENCY", "REQUESTER",
                                "MESSAGE"]
    rows = [line.split(None, 12) for line in lines[1:]]
    assert [row[2] for row in rows] == ["call-C", "-", "call-B", "call-B", "call-A"]
    assert rows[0] == [isotime(NOW - 60), "IncomingCall", "call-C", "bob", "S3", "calls",
                       "QVBBOT…kw", "sent", "200", "1", "42", "cli", "pnmediator HTTP 200: OK"]
    assert rows[1][7:] == ["invalid-token", "200", "1", "42", "console:ops",
                           "token rejected (pnmediator code 404: Device token not found); msgs "
                           "pair cleared"]
    assert rows[2][5:] == ["-", "-", "skipped", "-", "0", "42", "api:pbx", "no calls token"]
    assert rows[3][7:12] == ["failed", "500", "3", "2500", "api:pbx"]
    assert result.stderr == "5 pushes\n"


@pytest.mark.parametrize(("args", "expected"), [
    (("--username", "alice"), [("call-B", "S2"), ("call-B", "S1"), ("call-A", "S1")]),
    (("--selector", "S3"), [("call-C", "S3"), (None, "S3")]),
    (("--selector", "S1"), [("call-B", "S1"), ("call-A", "S1")]),
    (("--id", "call-B"), [("call-B", "S2"), ("call-B", "S1")]),
    (("--since", "1h"), [("call-C", "S3"), (None, "S3"), ("call-B", "S2"), ("call-B", "S1")]),
    (("--since", "15m"), [("call-C", "S3"), (None, "S3")]),
    (("--since", "1h30m"), [("call-C", "S3"), (None, "S3"), ("call-B", "S2"), ("call-B", "S1")]),
    (("--username", "alice", "--since", "1h"), [("call-B", "S2"), ("call-B", "S1")]),
    (("--username", "alice", "--selector", "S1", "--id", "call-B", "--since", "2h"),
     [("call-B", "S1")]),
    (("--username", "alice", "--id", "call-C"), []),
    (("--selector", "S3", "--since", "5m"), [("call-C", "S3")]),
    (("--username", "nobody"), []),
])
def test_filters_and_their_combination(history, args, expected):
    assert labels(listed(history, *args)) == expected


def test_since_takes_an_iso_time(history):
    hour = [("call-C", "S3"), (None, "S3"), ("call-B", "S2"), ("call-B", "S1")]
    assert labels(listed(history, "--since", isotime(NOW - 3600))) == hour
    naive = isotime(NOW - 3600).removesuffix("Z")  # no zone: UTC
    assert labels(listed(history, "--since", naive)) == hour
    local = time.strftime("%Y-%m-%dT%H:%M:%S+01:00", time.gmtime(NOW - 3600 + 3600))
    assert labels(listed(history, "--since", local)) == hour
    assert listed(history, "--since", isotime(NOW)) == []


@pytest.mark.parametrize("since", ["yesterday", "2x", "h", "-1h", "0s", "2026-13-01",
                                   "1h\x1b[2J"])
def test_a_bad_since_names_the_option(history, since):
    result = cli("pushes", "--since", since, "--config", history)
    assert result.returncode == 2 and result.stdout == ""
    assert "Invalid value for '--since'" in result.stderr
    assert "ISO 8601" in result.stderr and "Traceback" not in result.stderr
    assert "\x1b" not in result.stderr


def test_a_bad_limit_names_the_option(history):
    result = cli("pushes", "--limit", "-1", "--config", history)
    assert result.returncode == 2 and "Invalid value for '--limit'" in result.stderr


def test_json_is_the_records_as_stored(history):
    found = listed(history)
    assert [set(r) for r in found] == [{f.name for f in fields(PushRecord)}] * 5
    assert found[3] == {
        "time": isotime(NOW - 3000), "verb": "IncomingCall", "id": "call-B",
        "username": "alice", "selector": "S1", "pair": "calls", "token": "QVBBOT…kw",
        "appid": "com.app", "outcome": "failed", "code": 500, "message": "Internal error",
        "attempts": 3, "latency": 2.5, "requester": "api:pbx",
    }
    assert found[2]["pair"] is None and found[2]["token"] is None and found[2]["code"] is None
    result = cli("pushes", "--json", "--config", history)
    assert result.stdout.isascii()  # the ellipsis of a shortened token as \u2026
    assert result.stderr == "5 pushes\n"


def test_limit_keeps_the_newest_and_says_more_match(history):
    result = cli("pushes", "--limit", "2", "--config", history)
    assert [line.split()[2] for line in result.stdout.splitlines()[1:]] == ["call-C", "-"]
    assert result.stderr == "2 pushes (the newest; more match: raise --limit, 0 for all)\n"
    result = cli("pushes", "--limit", "1", "--json", "--config", history)
    assert labels(json.loads(result.stdout)) == [("call-C", "S3")]
    assert result.stderr.startswith("1 push (the newest;")
    assert cli("pushes", "--limit", "5", "--config", history).stderr == "5 pushes\n"
    assert len(listed(history, "--limit", "0")) == 5


def test_the_default_limit_is_100(tmp_path):
    many = [record(1000 - n, "IncomingCall", f"call-{n}", "alice", "S1", "sent", 200)
            for n in range(130)]
    config, _ = database(tmp_path, many)
    result = cli("pushes", "--config", config)
    assert len(result.stdout.splitlines()) == 1 + 100
    assert result.stdout.splitlines()[1].split()[2] == "call-129"
    assert result.stderr.startswith("100 pushes (the newest; more match")
    assert len(listed(config, "--limit", "0")) == 130


def test_an_empty_history(tmp_path):
    config, _ = database(tmp_path, [])
    result = cli("pushes", "--config", config)
    assert result.returncode == 0
    assert result.stdout.split() == ["TIME", "VERB", "ID", "USERNAME", "SELECTOR", "PAIR",
                                     "TOKEN", "OUTCOME", "CODE", "ATTEMPTS", "LATENCY",
                                     "REQUESTER", "MESSAGE"]
    assert result.stderr == "0 pushes\n"
    assert listed(config) == []
    shown = cli("devices", "show", "S1", "--config", config)
    assert "\npushes, newest first: none\n" in shown.stdout
    assert json.loads(cli("devices", "show", "S1", "--json", "--config", config).stdout
                      )["pushes"] == []


def assert_clean(text: str, what: str) -> None:
    bad = sorted({hex(ord(c)) for c in UNSAFE.findall(text)})
    assert not bad, f"{what} holds {bad}:\n{text!r}"
    assert not [line for line in text.splitlines() if line.startswith("1999-")], text


def test_what_the_history_holds_is_escaped(tmp_path):
    hostile = [record(100 + n, "IncomingCall", f"id{value}", f"user{value}", f"sel{value}",
                      "failed", 500, message=f"msg{value}", requester=f"api:{value}",
                      token=f"tok{value}")
               for n, value in enumerate(HOSTILE)]
    config, _ = database(tmp_path, hostile)
    table = cli("pushes", "--config", config)
    assert table.returncode == 0, table.stderr
    assert_clean(table.stdout + table.stderr, "the table")
    assert len(table.stdout.splitlines()) == 1 + len(HOSTILE)
    assert "user\\x1b[2J" in table.stdout and "msg\\u202etxt.exe" in table.stdout
    assert "x\\x0a1999-12-31T23:59:59.999Z" in table.stdout
    as_json = cli("pushes", "--json", "--config", config)
    assert_clean(as_json.stdout, "the JSON")
    assert [r["username"] for r in json.loads(as_json.stdout)] == [f"user{v}" for v in HOSTILE]
    for value in HOSTILE:
        found = listed(config, "--username", f"user{value}")
        assert [r["message"] for r in found] == [f"msg{value}"]


def test_devices_show_has_the_last_report_and_pushes(history):
    result = cli("devices", "show", "S3", "--config", history)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "token_msgs:   " + MSGS in text  # the device's fields as before
    assert f"last_seen:    {isotime(NOW - 86400)}" in text
    events = text.split("\njournal events, newest first:\n", 1)[1].split("\n\n")[0]
    assert events.splitlines()[0].split() == ["TIME", "KIND", "REASON", "SOURCE"]
    assert events.splitlines()[1].split() == [
        isotime(NOW - 86400), "registered", "new", '{"route":"/token/","client":"192.0.2.7"}']
    pushes = text.split("\npushes, newest first:\n", 1)[1].splitlines()
    assert pushes[0].split() == ["TIME", "VERB", "ID", "PAIR", "TOKEN", "OUTCOME", "CODE",
                                 "ATTEMPTS", "LATENCY", "REQUESTER", "MESSAGE"]
    assert [line.split()[1:3] for line in pushes[1:]] == [
        ["IncomingCall", "call-C"], ["NotifyGenericTextMessage", "-"]]
    assert "invalid-token  200" in pushes[2]


def test_devices_show_json_adds_events_and_pushes(tmp_path, history):
    before = json.loads(cli("devices", "show", "S1", "--json", "--config", history).stdout)
    assert {k: before[k] for k in ("selector", "username", "token_calls", "token_msgs",
                                   "extras", "last_seen")} == {
        "selector": "S1", "username": "alice", "token_calls": CALLS, "token_msgs": MSGS,
        "extras": {}, "last_seen": isotime(NOW - 86400)}
    assert [e["kind"] for e in before["events"]] == ["registered"]
    assert set(before["events"][0]) == {"id", "seq", "kind", "reason", "time", "source"}
    assert before["events"][0]["source"] == {"route": "/token/", "client": "192.0.2.7"}
    assert labels(before["pushes"]) == [("call-B", "S1"), ("call-A", "S1")]
    assert before["pushes"][0] == listed(history, "--selector", "S1")[0]
    # The newest 10 of each, newest first.
    (tmp_path / "many").mkdir()
    config, db = database(tmp_path / "many", [
        record(1000 - n, "IncomingCall", f"call-{n}", "alice", "S1", "sent", 200)
        for n in range(15)])
    store = SQLiteStore(db)
    with store.transaction():
        for n in range(12):
            store.register(Report("token", "alice", "S1", token_msgs=f"{MSGS}{n}"), {"n": n},
                           NOW - 500 + n)
    store.close()
    shown = json.loads(cli("devices", "show", "S1", "--json", "--config", config).stdout)
    assert [e["source"] for e in shown["events"]] == [{"n": n} for n in range(11, 1, -1)]
    assert [p["id"] for p in shown["pushes"]] == [f"call-{n}" for n in range(14, 4, -1)]
    text = cli("devices", "show", "S1", "--config", config).stdout
    assert len(text.split("\npushes, newest first:\n")[1].splitlines()) == 1 + 10


def test_devices_show_escapes_the_history(tmp_path):
    config, _ = database(tmp_path, [
        record(10 + n, "IncomingCall", f"id{v}", "alice", "S1", "failed", 500,
               message=f"msg{v}", requester=f"api:{v}") for n, v in enumerate(HOSTILE)])
    for args in (("S1",), ("S1", "--json")):
        result = cli("devices", "show", *args, "--config", config)
        assert result.returncode == 0, result.stderr
        assert_clean(result.stdout, "devices show")
    assert "msg\\x1b[2J" in cli("devices", "show", "S1", "--config", config).stdout


def schema_2(tmp_path: Path) -> tuple[str, Path]:
    """A database as pnbridge wrote it before the push history (schema version 2)."""
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for step in MIGRATIONS[:2]:
        step(Database(conn))
    conn.execute("INSERT INTO devices VALUES ('S1', 'alice', NULL, NULL, 't', 'a', '{}', 1, 1, "
                 "1)")
    conn.execute("PRAGMA user_version=2")
    conn.close()
    config = tmp_path / "pnbridge.toml"
    config.write_text(f'[storage]\npath = "{db}"\n')
    return str(config), db


def test_a_database_before_the_history_is_refused_with_the_upgrade_line(tmp_path):
    config, db = schema_2(tmp_path)
    before = db.read_bytes()
    for args in (("pushes",), ("pushes", "--json", "--username", "alice"),
                 ("devices", "show", "S1"), ("devices", "show", "S1", "--json")):
        result = cli(*args, "--config", config)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == (f"pnbridge: database {db} has schema version 2, this pnbridge "
                                 f"reads {len(MIGRATIONS)}: start pnbridge serve once to "
                                 "upgrade it\n"), args
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db", "pnbridge.toml"]


async def test_a_push_through_the_api_is_in_the_history(start_daemon, stub, tmp_path):
    """The whole path: the push API, pnmediator's stand-in, the history written by the
    running daemon, then ``pnbridge pushes --id`` (another process) while it still runs."""
    daemon = await start_daemon(push_config(stub))
    await report(daemon, username="alice", token=None, selector="IPHONE", calls=CALLS,
                 msgs=MSGS)
    call = "call-e2e/1@pbx"
    answer = await daemon.client.post(
        "/api/v1/push", json={"username": "alice", "verb": "NotifyIncomingCall", "id": call},
        headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200, answer.text
    assert [r["DeviceToken"] for r in stub.requests] == [CALLS]
    config = tmp_path / "cli.toml"
    config.write_text(f'[storage]\npath = "{daemon.config.storage.path}"\n')

    def shown() -> list[dict]:
        result = pnbridge("pushes", "--id", call, "--json", "--config", str(config))
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    deadline = trio.current_time() + 15
    while not (found := await trio.to_thread.run_sync(shown)):
        assert trio.current_time() < deadline, "the push never reached the history"
        await trio.sleep(0.2)
    [pushed] = found
    assert {k: v for k, v in pushed.items() if k not in ("time", "latency", "requester", "message")} == {
        "verb": "NotifyIncomingCall", "id": call, "username": "alice", "selector": "IPHONE",
        "pair": "calls", "token": shorten(CALLS), "appid": "com.app.voip", "outcome": "sent",
        "code": 200, "attempts": 1,
    }
    assert "OK" in pushed["message"]  # pnmediator's answer
    assert re.fullmatch(r"api:[0-9a-f]{12}", pushed["requester"]), pushed["requester"]
    assert 0 < pushed["latency"] < 5
    table = await trio.to_thread.run_sync(
        partial(cli, "pushes", "--id", call, "--config", str(config)))
    assert table.stdout.splitlines()[1].split()[1:4] == ["NotifyIncomingCall", call, "alice"]
    assert pushed["requester"] in table.stdout and CALLS not in table.stdout
    device = await trio.to_thread.run_sync(
        partial(cli, "devices", "show", "IPHONE", "--json", "--config", str(config)))
    assert json.loads(device.stdout)["pushes"] == found
    # The runbook's first command, as docs/install.md prints it.
    runbook = INSTALL_MD.read_text().split("### A phone did not ring", 1)[1]
    command = re.search(r"```sh\n(.*?)\n```", runbook, re.S)
    assert command and command.group(1).startswith("pnbridge pushes ")
    args = [*shlex.split(command.group(1))[1:], "--config", str(config)]
    listed = await trio.to_thread.run_sync(partial(cli, *args))
    assert listed.returncode == 0 and call in listed.stdout and listed.stderr == "1 push\n"
