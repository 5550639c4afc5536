"""Hostile JSON, charsets and usernames, sent as an attacker would, over real sockets to a real
daemon: nesting (500 to 30,000 levels), NaN and Infinity, numbers out of range, a key given
twice, lone surrogates, oversized extras, charsets that are no text encoding, and an E.164
username with a raw "+". And rows an older version stored that deep: the daemon's background
tasks and the CLI survive them."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
import trio
from conftest import Daemon, cli, pnbridge
from faults import metric
from plugintools import lines, wait_until_sync
from pnbridge.model import Report
from pnbridge.storage.sqlite.store import SQLiteStore
from pnmediator_stub import Stub

KEY = "hostile-json-key-0123456789"
TOKEN = "QVBBOTdevicetoken+/="
GOOD = f"username=1001&selector=GOOD&pushToken={TOKEN}".encode()
BIG = {"reporter": {"max_body": 1024 * 1024}, "server": {"max_header_bytes": 128 * 1024},
       "api": {"keys": [KEY]}}


def request(method: str, target: str, body: bytes = b"",
            headers: list[tuple[bytes, bytes]] = ()) -> bytes:
    head = [f"{method} {target} HTTP/1.1".encode(), b"Host: pnbridge", b"Connection: close",
            b"Content-Length: " + str(len(body)).encode(),
            *(name + b": " + value for name, value in headers)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def exchange(daemon: Daemon, raw: bytes) -> tuple[int, str]:
    """Send ``raw`` on a new connection; the status and body of the answer."""
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(raw)
        answer = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


async def post(daemon: Daemon, target: str, body: bytes,
               content_type: bytes = b"application/json") -> tuple[int, str]:
    headers = [(b"Content-Type", content_type)]
    if target.startswith("/api/"):
        headers.append((b"Authorization", f"Bearer {KEY}".encode()))
    return await exchange(daemon, request("POST", target, body, headers))


async def still_serving(daemon: Daemon) -> None:
    status, text = await post(daemon, "/token", GOOD, b"application/x-www-form-urlencoded")
    assert status == 200, text


def nested(depth: int, kind: str = "object") -> str:
    """A JSON value ``depth`` levels deep."""
    if kind == "object":
        return '{"a":' * depth + "1" + "}" * depth
    return "[" * depth + "1" + "]" * depth


def report_json(**extra: str) -> str:
    """A token report's JSON text with ``extra`` fields (JSON texts) added."""
    fields = [f'"{k}": {v}' for k, v in extra.items()]
    return "{" + ", ".join(['"username": "1001"', '"selector": "S1"',
                            f'"pushToken": "{TOKEN}"', *fields]) + "}"


# -- nesting ----------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [17, 500, 800, 30_000])
@pytest.mark.parametrize("kind", ["object", "array"])
async def test_deep_json_is_400_on_every_route_and_the_api(start_daemon, depth, kind):
    daemon = await start_daemon(BIG)
    body = report_json(extra=nested(depth, kind)).encode()
    for target in ("/token", "/removeToken", "/token/1001"):
        status, text = await post(daemon, target, body)
        assert (status, text) == (400, "body: not valid JSON (nested deeper than 16 levels, "
                                        "or brackets that do not match)\n")
    push = f'{{"username": "1001", "verb": "NotifyTextMessage", "message": {nested(depth, kind)}}}'
    status, text = await post(daemon, "/api/v1/push", push.encode())
    assert status == 400 and json.loads(text)["field"] == "body", text
    assert "nested deeper than 16 levels" in json.loads(text)["error"]
    await still_serving(daemon)
    assert [d.selector for d in daemon.store().devices()] == ["GOOD"]


async def test_deep_extras_on_the_unchanged_repeat_path_are_refused(start_daemon):
    """The repeat of a stored report (the one-statement path) took any extras: now it takes
    what a first report takes, and the device stays readable, removable and changeable."""
    daemon = await start_daemon(BIG)
    assert (await post(daemon, "/token", report_json(ver='"1.0"').encode()))[0] == 200
    for extra, reason in [
        (nested(800), "body: not valid JSON (nested deeper than 16 levels"),
        (nested(15), "meta: nested too deep"),
        ('{"a": {"b": 1}}', "meta: nested too deep"),
        ('[[1]]', "meta: nested too deep"),
    ]:
        status, text = await post(daemon, "/token", report_json(meta=extra).encode())
        assert status == 400 and text.startswith(reason), text
    store = daemon.store()
    (device,) = store.devices()
    assert device.extras == {"ver": "1.0"}
    assert device.to_dict()["extras"] == {"ver": "1.0"}
    shallow = '{"app": "x", "n": 2, "ok": true, "none": null}'
    body = report_json(meta=shallow, tags='["a", 1]').encode()
    assert (await post(daemon, "/token", body))[0] == 200
    assert store.devices()[0].extras == {"meta": json.loads(shallow), "tags": ["a", 1]}
    removal = b'{"selector": "S1"}'
    assert (await post(daemon, "/removeToken", removal))[0] == 200
    assert store.devices() == []


# -- numbers, duplicates, surrogates ----------------------------------------------------------


@pytest.mark.parametrize(("body", "reason"), [
    (report_json(ver="NaN"), "ver: NaN is not a JSON number"),
    (report_json(ver="Infinity"), "ver: Infinity is not a JSON number"),
    (report_json(ver="-Infinity"), "ver: -Infinity is not a JSON number"),
    (report_json(ver="[1, NaN]"), "ver: NaN is not a JSON number"),
    (report_json(ver="1e400"), "ver: number out of range"),
    (report_json(ver="-1e999"), "ver: number out of range"),
    (report_json(ver="9" * 41), "ver: number longer than 40 digits"),
    (report_json(ver="9" * 5000), "ver: number longer than 40 digits"),
    ('{"username": NaN, "selector": "S1", "pushToken": "t"}', "username: NaN is not"),
    ('{"username": 1e999, "selector": "S1", "pushToken": "t"}', "username: number out of"),
    (report_json(selector='"S2"'), "selector: key selector given twice"),
    (report_json(ver='{"a": 1, "a": 2}'), "ver: key a given twice"),
    (report_json(ver='"\\ud800"'), "ver: lone surrogate"),
    (report_json(ver='"x\\udfff"'), "ver: lone surrogate"),
    (report_json(ver='{"\\ud800": 1}'), "ver: lone surrogate (\\ud800-\\udfff) in a key"),
    ('{"username": "\\udc00", "selector": "S1", "pushToken": "t"}', "username: lone surrogate"),
    (report_json(**{"\\ud800": "1"}), "'\\ud800': name holds a lone surrogate"),
])
async def test_what_json_numbers_and_strings_cannot_be_is_400_naming_the_field(
    start_daemon, body, reason
):
    daemon = await start_daemon()
    status, text = await post(daemon, "/token", body.encode())
    assert status == 400 and text.startswith(reason), text
    assert daemon.store().devices() == []
    await still_serving(daemon)


@pytest.mark.parametrize(("body", "field"), [
    ('{"username": "1001", "verb": "NotifyTextMessage", "badge": NaN}', "badge"),
    ('{"username": "1001", "verb": "NotifyTextMessage", "badge": 1e400}', "badge"),
    ('{"username": "1001", "verb": "NotifyTextMessage", "badge": ' + "9" * 5000 + "}", "badge"),
    ('{"username": "1001", "username": "1002", "verb": "NotifyTextMessage"}', "username"),
    ('{"username": "1001", "verb": "NotifyTextMessage", "message": "\\ud83d"}', "message"),
    ('{"username": "1001", "verb": "NotifyTextMessage", "message": ' + nested(30_000) + "}",
     "body"),
])
async def test_push_api_bodies_are_read_strictly(start_daemon, body, field):
    daemon = await start_daemon(BIG)
    status, text = await post(daemon, "/api/v1/push", body.encode())
    assert status == 400, text
    answer = json.loads(text)
    assert answer["field"] == field and answer["error"].startswith(f"{field}: "), answer


# -- extras limits ----------------------------------------------------------------------------


def _query(**fields: str) -> str:
    return "&".join(f"{k}={v}" for k, v in {"username": "1001", "selector": "S1",
                                              "pushToken": "tok", **fields}.items())


@pytest.mark.parametrize(("fields", "reason"), [
    ({f"x{i}": "1" for i in range(33)}, "extras: more than 32 fields (max_extras)"),
    ({"note": "n" * 600}, "note: longer than 512 bytes as stored (max_extra_bytes)"),
    ({"note": "n" * 60_000}, "note: longer than 512 bytes"),
    ({f"x{i}": "n" * 490 for i in range(9)}, "extras: longer than 4096 bytes in all"),
    ({"n" * 600: "1"}, "'" + "n" * 40 + "': longer than 512 bytes"),
])
async def test_extras_are_bounded_in_count_and_size(start_daemon, fields, reason):
    daemon = await start_daemon(BIG)
    form = _query(**fields).encode()
    for raw in (request("GET", "/token?" + form.decode()),
                request("POST", "/token", form,
                        [(b"Content-Type", b"application/x-www-form-urlencoded")])):
        status, text = await exchange(daemon, raw)
        assert status == 400 and text.startswith(reason), text
    as_json = report_json(**{k: json.dumps(v) for k, v in fields.items()}).encode()
    status, text = await post(daemon, "/token", as_json)
    assert status == 400 and text.startswith(reason), text
    store = daemon.store()
    assert store.devices() == [] and store.events() == []


async def test_extras_limits_are_config(start_daemon):
    daemon = await start_daemon({"reporter": {"max_extras": 2, "max_extra_bytes": 2000,
                                              "max_extras_bytes": 2500}})
    status, text = await exchange(daemon, request("GET", "/token?" + _query(a="1", b="2", c="3")))
    assert status == 400 and text.startswith("extras: more than 2 fields"), text
    status, text = await exchange(daemon, request("GET", "/token?" + _query(a="n" * 1500)))
    assert status == 200, text
    status, text = await exchange(daemon, request("GET", "/token?" + _query(a="n" * 1500,
                                                                            b="n" * 1500)))
    assert status == 400 and text.startswith("extras: longer than 2500 bytes in all"), text
    assert daemon.store().devices()[0].extras == {"a": "n" * 1500}


# -- charsets ---------------------------------------------------------------------------------


NOT_TEXT = ["rot13", "rot_13", "base64", "hex", "zlib", "bz2", "uu", "quopri", "undefined",
            "punycode", "idna", "unicode_escape", "raw-unicode-escape", "charmap", "mbcs",
            "bogus", "x" * 300, "encodings.utf_8", "../../os", "aliases"]


@pytest.mark.parametrize("name", [n.encode() for n in NOT_TEXT] + [b"\xe2\x80\xae", b"\xff"])
async def test_a_charset_that_is_no_text_encoding_is_400(start_daemon, caplog, name):
    caplog.set_level(logging.DEBUG, logger="pnbridge")
    daemon = await start_daemon()
    reason = "Content-Type: the charset is not a known text encoding (e.g. utf-8)\n"
    for mime, body in ((b"application/json", report_json().encode()),
                       (b"application/x-www-form-urlencoded", _query().encode()),
                       (b"text/plain", b"username=1001")):
        for value in (mime + b"; charset=" + name, mime + b'; charset="' + name + b'"'):
            assert await post(daemon, "/token", body, value) == (400, reason)
    shown = name.decode("latin-1")
    assert not [r for r in caplog.records if shown in r.getMessage()]
    assert daemon.store().devices() == []
    await still_serving(daemon)


@pytest.mark.parametrize("name", ["utf-8", "UTF-8", "utf8", "latin-1", "ISO-8859-1",
                                  "windows-1252", "cp1252", "us-ascii", "utf-16", "utf-32",
                                  "koi8-r", "shift_jis", ""])
async def test_real_charsets_still_work(start_daemon, name):
    daemon = await start_daemon()
    for mime, body in (("application/json", report_json(ver='"1.0"')),
                       ("application/x-www-form-urlencoded", _query(ver="1.0"))):
        data = body.encode(name or "utf-8")
        status, text = await post(daemon, "/token", data, f"{mime}; charset={name}".encode())
        assert status == 200, (name, text)
    assert daemon.store().devices()[0].username == "1001"


async def test_a_lone_surrogate_a_charset_decodes_to_is_400(start_daemon):
    """UTF-7 is a text encoding, yet decodes "+2AA-" to a lone surrogate."""
    daemon = await start_daemon()
    for mime, body in ((b"application/json", report_json(ver='"+2AA-"').replace(TOKEN, "t")),
                       (b"application/x-www-form-urlencoded", _query(ver="+2AA-"))):
        status, text = await post(daemon, "/token", body.encode(), mime + b"; charset=utf-7")
        assert (status, text) == (400, "body is not valid utf-7 (a lone surrogate)\n")
    assert daemon.store().devices() == []


# -- E.164 usernames --------------------------------------------------------------------------


async def test_a_raw_plus_in_a_username_is_kept(start_daemon, nursery, tmp_path):
    stub = await nursery.start(Stub().serve)
    daemon = await start_daemon({
        "api": {"keys": [KEY]},
        "plugins": {"enabled": ["pnmediator"], "pnmediator": {"url": stub.url}},
    })
    target = f"/token?username=+4930123456&selector=PHONE1&pushToken={TOKEN}&pushappid=app"
    assert (await exchange(daemon, request("GET", target)))[0] == 200
    form = f"user=+4930123457&selector=PHONE2&pushToken={TOKEN}&note=a+b".encode()
    assert (await post(daemon, "/token", form, b"application/x-www-form-urlencoded"))[0] == 200
    target = f"/token?username=%2B4930123458&selector=PHONE3&pushToken={TOKEN}"
    assert (await exchange(daemon, request("GET", target)))[0] == 200
    stored = {d.selector: d for d in daemon.store().devices()}
    assert {s: d.username for s, d in stored.items()} == {
        "PHONE1": "+4930123456", "PHONE2": "+4930123457", "PHONE3": "+4930123458"}
    assert stored["PHONE1"].token_msgs == TOKEN and stored["PHONE2"].extras == {"note": "a b"}
    body = b'{"username": "+4930123456", "verb": "NotifyTextMessage", "message": "hi"}'
    status, text = await post(daemon, "/api/v1/push", body)
    assert status == 200, text
    assert [(d["selector"], d["outcome"]) for d in json.loads(text)["devices"]] == [
        ("PHONE1", "sent")]
    config = tmp_path / "cli.toml"
    config.write_text(f'[storage]\npath = "{daemon.db_path}"\n')
    result = cli("devices", "list", "--username", "+4930123457", "--json",
                      "--config", str(config))
    assert [d["selector"] for d in json.loads(result.stdout)] == ["PHONE2"], result.stderr


# -- rows stored by an older version ----------------------------------------------------------


def seed(db: Path, now: float) -> None:
    """A database as an older pnbridge left it: devices whose extras nest 800 and 5,000 levels
    (taken then through the unchanged-repeat path), a journal event holding such a device, an
    event of a kind this version does not know, and a device no statement can delete."""
    SQLiteStore(db).close()
    conn = sqlite3.connect(db, isolation_level=None)
    columns = "selector, username, token_msgs, appid_msgs, extras, created_at, updated_at, " \
              "last_seen"
    old = now - 3600
    for selector, extras in [("DEEP800", nested(800)), ("DEEP5000", nested(5000)),
                             ("DEEPLIST", nested(900, "array")), ("PLAIN", "{}"),
                             ("STUCK", "{}")]:
        conn.execute(f"INSERT INTO devices ({columns}) VALUES (?,?,?,?,?,?,?,?)",
                     (selector, "1001", TOKEN, "app", extras, old, old, old))
    device = ('{"selector": "DEEP800", "username": "1001", "token_calls": null, '
              '"appid_calls": null, "token_msgs": "' + TOKEN + '", "appid_msgs": "app", '
              f'"extras": {nested(900)}, "created_at": {old}, "updated_at": {old}, '
              f'"last_seen": {old}}}')
    event = ("INSERT INTO events (id, kind, reason, selector, username, before, after, time,"
             " source) VALUES (?,?,?,?,?,?,?,?,?)")
    conn.execute(event, ("e-deep", "registered", "new", "DEEP800", "1001", None, device, old,
                         '{"route": "/token"}'))
    conn.execute(event, ("e-bogus", "renamed", "new", "PLAIN", "1001", None, device, old, "{}"))
    conn.execute("CREATE TRIGGER stuck BEFORE DELETE ON devices WHEN old.selector = 'STUCK'"
                 " BEGIN SELECT RAISE(ABORT, 'this row cannot be deleted'); END")
    conn.close()


def test_the_cli_shows_lists_exports_and_removes_stored_deep_rows(tmp_path):
    db = tmp_path / "old.db"
    seed(db, time.time())
    config = tmp_path / "cli.toml"
    config.write_text(f'[storage]\npath = "{db}"\n')

    def run(*args: str) -> str:
        result = cli(*args, "--config", str(config))
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        return result.stdout

    listed = json.loads(run("devices", "list", "--json"))
    assert {d["selector"]: d["extras"] for d in listed} == {
        "DEEP800": {}, "DEEP5000": {}, "DEEPLIST": {}, "PLAIN": {}, "STUCK": {}}
    assert "DEEP5000" in run("devices", "list")
    assert json.loads(run("devices", "show", "DEEP800", "--json"))["token_msgs"] == TOKEN
    assert "DEEP800" in run("devices", "show", "DEEP800")
    assert len(run("devices", "export").splitlines()) == 5
    assert len(run("devices", "export", "--format", "csv").splitlines()) == 6
    events = json.loads(run("events", "--json"))
    assert events[0]["after"]["selector"] == "DEEP800" and events[0]["after"]["extras"] == {}
    for selector in ("DEEP800", "DEEP5000", "DEEPLIST"):
        assert run("devices", "remove", selector).startswith(f"removed {selector}")
    assert [d.selector for d in SQLiteStore(db).devices()] == ["PLAIN", "STUCK"]
    removed = SQLiteStore(db).events()[-1]
    assert (removed.kind, removed.selector, removed.before.token_msgs) == (
        "removed", "DEEPLIST", TOKEN)


def test_devices_import_reads_json_lines_strictly(tmp_path):
    config = tmp_path / "cli.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "new.db"}"\n')
    rows = [
        {"username": "1001", "selector": "OK", "pushToken": TOKEN, "extras": {"v": 1}},
        f'{{"username": "1001", "selector": "DEEP", "pushToken": "t", "x": {nested(30_000)}}}',
        {"username": "1001", "selector": "NESTED", "pushToken": TOKEN,
         "extras": {"a": {"b": {"c": 1}}}},
        {"username": "1001", "selector": "STRING", "pushToken": TOKEN,
         "extras": json.dumps({"a": "x" * 600})},
        '{"username": "1001", "selector": "NAN", "pushToken": "t", "extras": {"v": NaN}}',
        {"username": "1001", "selector": "MANY", "pushToken": TOKEN,
         "extras": {f"k{i}": i for i in range(40)}},
    ]
    path = tmp_path / "devices.jsonl"
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    result = cli("devices", "import", str(path), "--config", str(config))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "line 2: not valid JSON (nested deeper than 16 levels" in result.stderr
    assert "line 3: a: nested too deep" in result.stderr
    assert "line 4: a: longer than 512 bytes" in result.stderr
    assert "line 5: extras: NaN is not a JSON number" in result.stderr
    assert "line 6: extras: more than 32 fields" in result.stderr
    assert [(d.selector, d.extras) for d in SQLiteStore(tmp_path / "new.db").devices()] == [
        ("OK", {"v": 1})]


def daemon_config(tmp_path: Path, db: Path) -> Path:
    config = tmp_path / "pnbridge.toml"
    config.write_text(f"""\
[server]
listen = ["127.0.0.1:0"]
grace_period = 2
[storage]
path = "{db}"
busy_timeout = 1
expire_after = "10m"
[reporter]
client_rate = 0
username_rate = 0
[plugins]
enabled = ["auditlog"]
[plugins.auditlog]
path = "{tmp_path / 'audit.log'}"
fsync = "never"
""")
    return config


def test_the_daemon_outlasts_stored_deep_rows_in_expiry_delivery_and_metrics(tmp_path, spawn):
    """Before, the first sweep raised RecursionError and the daemon exited 1, at every start."""
    db = tmp_path / "old.db"
    seed(db, time.time())
    toml = daemon_config(tmp_path, db).read_text()
    audit = tmp_path / "audit.log"
    for start in range(2):
        daemon = spawn(toml)
        with httpx.Client(base_url=daemon.url()) as client:
            daemon.wait_for(r"cannot expire selector=STU…")
            wait_until_sync(lambda: [d.selector for d in SQLiteStore(db).devices()] in (["STUCK"],
                                                                      ["NEW", "STUCK"]))
            assert client.get("/token", params={"username": "1001", "selector": "NEW",
                                                "pushToken": TOKEN}).status_code == 200
            assert metric(client, "pnbridge_task_errors_total", task="expiry") == 1
            if start == 0:
                daemon.wait_for(r"cannot deliver event e-bogus")
                assert metric(client, "pnbridge_task_errors_total", task="delivery") == 1
                wait_until_sync(lambda: '"selector":"NEW"' in audit.read_text())
                seen = [(r["kind"], r["reason"], r["selector"])
                        for r in map(json.loads, lines(audit))]
                assert seen[0] == ("registered", "new", "DEEP800")
                assert sorted(seen[1:5]) == [("removed", "expired", s) for s in
                                             ("DEEP5000", "DEEP800", "DEEPLIST", "PLAIN")]
            assert client.get("/readyz").status_code == 200
            time.sleep(0.5)
            assert daemon.popen.poll() is None, daemon.log
        assert daemon.stop() == 0, daemon.log
        assert "Traceback" not in daemon.log and "RecursionError" not in daemon.log
    assert [f.event.id for f in SQLiteStore(db).failures()] == ["e-bogus"]


async def test_reports_for_stored_deep_devices_are_taken(start_daemon, tmp_path):
    seed(tmp_path / "pnbridge.db", time.time())
    daemon = await start_daemon()
    assert (await post(daemon, "/token", report_json().replace("S1", "DEEP800").encode()))[0] == 200
    status, text = await post(daemon, "/token", report_json(ver='"2"').replace("S1", "DEEP5000")
                              .replace(TOKEN, "other").encode())
    assert status == 200, text
    store = daemon.store()
    assert store.device("DEEP800").extras == {}
    assert store.device("DEEP5000").extras == {"ver": "2"}
    assert store.events()[-1].before.extras == {}
    status, text = await post(daemon, "/removeToken", b'{"selector": "DEEPLIST"}')
    assert status == 200 and store.device("DEEPLIST") is None
    assert store.events()[-1].before.selector == "DEEPLIST"


def test_store_reads_what_cannot_be_read_as_little_as_possible(tmp_path):
    """Times that are no number and extras that are no object, read without raising."""
    db = tmp_path / "db"
    store = SQLiteStore(db)
    with store.transaction():
        store.register(Report("token", username="u", selector="S", token_msgs="t"), {}, 1.0)
    store.conn.execute("UPDATE devices SET extras = '[1]', last_seen = 'soon'")
    (device,) = store.devices()
    assert (device.extras, device.last_seen, device.created_at) == ({}, 0.0, 1.0)
    assert device.to_dict()["last_seen"] == "1970-01-01T00:00:00.000Z"
    store.conn.execute("UPDATE events SET after = 'x', source = '[' ")
    (event,) = store.events()
    assert (event.after.selector, event.after.username, event.source) == ("S", "u", {})



@pytest.mark.parametrize("args", [
    ("devices", "list", "--username", "\udcff"),
    ("devices", "show", "S\udcfe"),
    ("devices", "remove", "S\udcfe"),
    ("push", "NotifyTextMessage", "--username", "1001", "--message", "caf\udce9"),
])
def test_cli_arguments_that_are_no_utf8_are_refused(tmp_path, args):
    SQLiteStore(tmp_path / "p.db").close()
    config = tmp_path / "cli.toml"
    config.write_text(f'[storage]\npath = "{tmp_path / "p.db"}"\n')
    result = pnbridge(*args, "--config", str(config))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("pnbridge: argument '") and "is not valid UTF-8" in result.stderr
