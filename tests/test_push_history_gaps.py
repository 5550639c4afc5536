"""What the push history must not miss: a push cut short by the daemon stopping (each device
whose push was under way, failed), a push to a user with no device or whose devices could not
be read (one ``skipped`` row for the request), on each store engine (the ``engine`` fixture);
and what it keeps bounded (a pnmediator message cut, a CLI table cell cut, ``--json`` whole).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
import trio
from configs import free_port, merge
from conftest import cli, pnbridge
from consoletools import OPERATOR, PASSWORD, logged_in
from pnbridge.access import users
from pnbridge.model import PushRecord
from pnbridge.ops.log import shorten
from pnbridge.storage.sqlite.store import SQLiteStore
from pnmediator_stub import KEY, Answer, push_config, slow
from reports import report

CALL = "NotifyIncomingCall"
VOIP = "voip-9f8e7d6c5b4a3210-ok"
APNS = "apns-9f8e7d6c5b4a3210-ok"


def records(engine: Any, **filters: Any) -> list[PushRecord]:
    store = engine.open()
    try:
        return store.pushes(limit=1000, **filters)
    finally:
        store.close()


def slow_push_config(stub: Any) -> dict[str, Any]:
    """Pushes that wait for pnmediator up to 30 s; a stop finishes requests for 1 s."""
    config = push_config(stub, NotifyIncomingCall=30.0)
    config["plugins"]["pnmediator"]["timeout"] = 30.0
    return config | {"server": {"grace_period": 1.0}, "storage": {"busy_timeout": 1.0}}


async def test_a_push_cut_short_by_a_stop_is_recorded_failed(engine, spawn, stub, tmp_path):
    daemon = spawn(engine.tables(slow_push_config(stub)))
    url = await trio.to_thread.run_sync(daemon.url)
    with httpx.Client(base_url=url) as client:
        report(client, "PHONE", username="alice", token=None, calls=VOIP)
        report(client, "PAD", username="alice", token=None, calls=APNS)
    stub.answer(VOIP, slow(20))
    stub.answer(APNS, slow(20))

    def post() -> None:  # its answer is not the point: the stop may close the connection
        with httpx.Client(base_url=url, timeout=30) as client, contextlib.suppress(
                httpx.HTTPError):
            client.post("/api/v1/push", headers={"Authorization": f"Bearer {KEY}"},
                        json={"username": "alice", "verb": CALL, "id": "cut-1@pbx"})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, post)
        with trio.fail_after(10):
            while len(stub.requests) < 2:
                await trio.sleep(0.05)
        await trio.sleep(2)
        began = time.time()
        assert await trio.to_thread.run_sync(daemon.stop) == 0
    assert "cancelled: the daemon is stopping" in daemon.log
    found = {r.selector: r for r in records(engine, id="cut-1@pbx")}
    assert set(found) == {"PHONE", "PAD"}, daemon.log
    for selector, token in (("PHONE", VOIP), ("PAD", APNS)):
        record = found[selector]
        assert (record.outcome, record.message, record.attempts, record.pair, record.token,
                record.code, record.username, record.verb) == (
            "failed", "the daemon stopped before an answer", 1, "calls", shorten(token), None,
            "alice", CALL)
        assert record.requester.startswith("api:")
        assert 2.0 <= record.latency <= time.time() - began + 2.5
    shown = pnbridge("pushes", "--config", str(tmp_path / "pnbridge.toml"), "--id",
                     "cut-1@pbx", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("the daemon stopped before an answer") == 2, shown.stdout


def console_tables(stub: Any, tmp_path: Path) -> dict[str, Any]:
    """pnmediator at the stand-in; the console on an admin listener of its own."""
    operators = tmp_path / "operators"
    users.write(operators, {OPERATOR: users.new_user(OPERATOR, "pnbridge", PASSWORD)})
    return merge(push_config(stub), {
        "server": {"admin_listen": [f"127.0.0.1:{free_port()}"]},
        "console": {"enabled": True, "users_file": str(operators)},
    })


def main_of(text: str) -> ElementTree.Element:
    return ElementTree.fromstring(text[text.index("<main>"):text.index("</main>") + 7]
                                  .replace("&nbsp;", " "))


async def test_a_push_to_a_user_with_no_device_is_one_skipped_row(
        engine, start_daemon, stub, tmp_path):
    daemon = await start_daemon(engine.tables(console_tables(stub, tmp_path)))
    answer = await daemon.client.post(
        "/api/v1/push", headers={"Authorization": f"Bearer {KEY}"},
        json={"username": "+4930999", "verb": CALL, "id": "lost/1@pbx"})
    assert answer.status_code == 404, answer.text
    with trio.fail_after(10):
        while not (found := records(engine, id="lost/1@pbx")):
            await trio.sleep(0.05)
    (record,) = found
    assert (record.outcome, record.selector, record.pair, record.token, record.appid,
            record.code, record.attempts, record.message, record.username, record.verb) == (
        "skipped", "", None, None, None, None, 0, "no device of this user", "+4930999", CALL)
    assert record.requester.startswith("api:") and 0 <= record.latency < 5
    assert stub.requests == []

    # The CLI: one row, no selector (-).
    (tmp_path / "cli.toml").write_text(engine.toml())
    shown = cli("pushes", "--config", str(tmp_path / "cli.toml"), "--username", "+4930999")
    assert shown.returncode == 0, shown.stderr
    header, row = shown.stdout.splitlines()
    cells = dict(zip(header.split(), row.split(None, 12), strict=False))
    assert (cells["SELECTOR"], cells["PAIR"], cells["OUTCOME"]) == ("-", "-", "skipped")
    assert row.endswith("no device of this user")

    # The console: the call's page (no device pushed, no device link) and the user's page
    # (no device, the row in their pushes).
    async with logged_in(daemon) as client:
        page = await client.get("/console/call", params={"id": "lost/1@pbx"})
        assert page.status_code == 200, page.text
        main = main_of(page.text)
        (tr,) = main.findall(".//tr[@data-call-id]")
        assert not [a for a in tr.iter("a") if "/console/device?" in (a.get("href") or "")]
        assert "no device of this user" in "".join(tr.itertext())
        facts = {dt.text: "".join(dd.itertext()) for dt, dd in
                 zip(main.iter("dt"), main.iter("dd"), strict=True)}
        assert facts["Devices pushed"] == "0" and facts["Outcomes"] == "skipped 1"
        page = await client.get("/console/user", params={"username": "+4930999"})
        assert page.status_code == 200, page.text
        assert "No device stored" in page.text and "no device of this user" in page.text
        assert len(main_of(page.text).findall(".//tr[@data-call-id]")) == 1


async def test_a_push_whose_devices_cannot_be_read_is_one_skipped_row(start_daemon, stub,
                                                                       tmp_path):
    daemon = await start_daemon(push_config(stub))
    await report(daemon, "PHONE", username="alice", token=None, calls=VOIP)
    store = daemon.store()
    store.conn.execute("ALTER TABLE devices RENAME TO devices_damaged")  # a damaged database
    store.close()
    answer = await daemon.client.post(
        "/api/v1/push", headers={"Authorization": f"Bearer {KEY}"},
        json={"username": "alice", "verb": CALL, "id": "unread-1"})
    assert answer.status_code == 503, answer.text
    query = ("SELECT outcome, selector, pair, attempts, username, message FROM pushes"
             " WHERE id = 'unread-1'")
    with trio.fail_after(10):  # read as it is: pnbridge refuses this damaged database
        while not (found := rows(daemon.db_path, query)):
            await trio.sleep(0.05)
    (row,) = found
    assert row[:5] == ("skipped", "", None, 0, "alice")
    assert "no such table: devices" in row[5], row
    assert stub.requests == []


def rows(path: str, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


async def test_a_long_message_is_cut_and_a_long_id_does_not_pad_the_table(
        engine, start_daemon, stub, tmp_path):
    daemon = await start_daemon(engine.tables(push_config(stub)))
    await report(daemon, "PHONE", username="alice", token=None, calls=VOIP)
    stub.answer(VOIP, Answer(400, {"code": 400, "response": "🔔" * 5_000}))  # fails at once
    long_id = "call-" + "x" * 9_995
    for call_id in (long_id, "short-1"):
        answer = await daemon.client.post(
            "/api/v1/push", headers={"Authorization": f"Bearer {KEY}"},
            json={"username": "alice", "verb": CALL, "id": call_id})
        assert answer.status_code == 200, answer.text
    with trio.fail_after(10):
        while len(found := records(engine, username="alice")) < 2:
            await trio.sleep(0.05)
    cut, sent = found[1], found[0]
    assert (cut.id, cut.outcome, sent.id, sent.outcome) == (long_id, "failed", "short-1", "sent")
    assert len(cut.message) == 1000 and cut.message.endswith("🔔…"), cut.message[:80]
    assert cut.message.startswith("pnmediator HTTP 400")

    (tmp_path / "cli.toml").write_text(engine.toml())
    shown = cli("pushes", "--config", str(tmp_path / "cli.toml"), "--username", "alice")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) == 3 and max(map(len, lines)) < 1000, [len(line) for line in lines]
    assert "call-xxx" in lines[2] and "x…" in lines[2]
    whole = json.loads(cli("pushes", "--config", str(tmp_path / "cli.toml"), "--json").stdout)
    assert [r["id"] for r in whole] == ["short-1", long_id]
    assert whole[1]["message"] == cut.message


def history_db(tmp_path: Path, count: int, name: str = "many") -> Path:
    """A config whose SQLite database holds ``count`` push records, several to a second
    (ties the paging must neither skip nor repeat), each message 200 characters."""
    db = tmp_path / f"{name}.db"
    store = SQLiteStore(db)
    now = time.time()
    batch = [PushRecord(now - n // 7, CALL, f"call-{n}", f"user-{n % 3}", f"S{n % 11}",
                        "calls", "voip-0…ok", "com.app.voip", "sent", 200,
                        f"{n:06d} " + "m" * 193, 1, 0.042, "api:pbx") for n in range(count)]
    with store.transaction():
        store.record_pushes(batch)
    store.close()
    config = tmp_path / f"{name}.toml"
    config.write_text(f'[storage]\npath = "{db}"\n')
    return config


@pytest.mark.parametrize("command", [("pushes",), ("devices", "list"), ("events",)])
def test_a_huge_limit_names_the_option(tmp_path, command):
    config = history_db(tmp_path, 3)
    for limit in ("999999999999999999999", "1000001"):
        result = cli(*command, "--limit", limit, "--config", str(config))
        assert result.returncode == 2, result
        assert "Invalid value for '--limit'" in result.stderr and "1000000" in result.stderr
    assert cli(*command, "--limit", "1000000", "--config", str(config)).returncode == 0


def test_push_pages_give_the_history_once_newest_first(engine):
    store = engine.open()
    try:
        now = time.time()
        with store.transaction():
            store.record_pushes([
                PushRecord(now - n // 7, CALL, f"call-{n}", f"user-{n % 3}", "S", None, None,
                           None, "skipped", None, "", 0, 0.0, "cli") for n in range(1234)])
        for filters in ({}, {"username": "user-1"}, {"since": now - 100}):
            pages = list(store.push_pages(page=100, **filters))
            assert pages and all(0 < len(p) <= 100 for p in pages)
            whole = store.pushes(limit=10_000, **filters)
            assert [r.id for p in pages for r in p] == [r.id for r in whole]
        assert list(store.push_pages(id="none")) == []
    finally:
        store.close()


def test_limit_0_lists_everything_a_page_at_a_time(tmp_path):
    config = history_db(tmp_path, 2_345)
    shown = cli("pushes", "--limit", "0", "--config", str(config))
    lines = shown.stdout.splitlines()
    assert len(lines) == 1 + 2_345 and shown.stderr == "2,345 pushes\n"
    assert [line.split()[2] for line in lines[1:4]] == ["call-6", "call-5", "call-4"]
    widths = {line.index("api:pbx") for line in lines[1:]}
    assert len(widths) == 1  # every page aligned alike (the widths are alike here)
    store = SQLiteStore(tmp_path / "many.db")
    whole = store.pushes(limit=10_000)
    store.close()
    text = cli("pushes", "--limit", "0", "--json", "--config", str(config)).stdout
    assert text == json.dumps([r.to_dict() for r in whole], indent=2) + "\n"
    assert cli("pushes", "--limit", "2345", "--config", str(config)).stderr == "2,345 pushes\n"
    assert cli("pushes", "--limit", "2344", "--config", str(config)).stderr.startswith(
        "2,344 pushes (the newest; more match")


def peak_kib(*args: str) -> int:
    """The peak resident memory (KiB) of ``pnbridge ARGS``, its output thrown away."""
    child = subprocess.Popen([sys.executable, "-m", "pnbridge", *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, child.stderr.read() if child.stderr else ""
    if child.stderr:
        child.stderr.close()
    child.returncode = 0
    return usage.ru_maxrss


def test_limit_0_does_not_hold_the_whole_history_in_memory(tmp_path):
    few, many = history_db(tmp_path, 1_000, "few"), history_db(tmp_path, 100_000)
    for out in ((), ("--json",)):
        base = peak_kib("pushes", "--limit", "0", *out, "--config", str(few))
        peak = peak_kib("pushes", "--limit", "0", *out, "--config", str(many))
        assert peak - base < 20_000, (out, base, peak)  # 100,000 records weigh ~100 MB
