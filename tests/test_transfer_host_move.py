"""``pnbridge devices export`` / ``import`` moving a host: a file that is not UTF-8 writes
nothing, bad lines are reported and the rest is written in one transaction, the per-user cap
holds, the times survive the round trip, the export file is 0600, progress only on a
terminal, and ``devices list --limit`` with a count."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path

from conftest import cli, on_terminal
from pnbridge.model import Report, isotime
from pnbridge.storage.sqlite.store import SQLiteStore

T1 = "QVBBOTEyMzQ1Njc4OTAxMjM0NTY3ODkw"
DAY = 86400.0


def config_file(tmp_path: Path, name: str, extra: str = "") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[storage]\npath = "{tmp_path / name}.db"\n{extra}')
    return str(path)


def stored(db: Path) -> tuple[list[dict], list[tuple[str, str, str]]]:
    store = SQLiteStore(db, reading=True)
    devices = [d.to_dict() for d in store.devices()]
    events = [(e.kind, e.reason, e.selector) for e in store.events(0, -1)]
    store.close()
    return devices, events


def test_a_latin1_csv_is_refused_whole_and_writes_nothing(tmp_path):
    lines = ["username,selector,token_msgs,extras"]
    lines += [f"u{i},S{i},{T1}," for i in range(600)]
    lines[551] = f'jos\u00e9,S550,{T1},"{{""name"": ""Jos\u00e9 Mu\u00f1oz""}}"'
    dump = tmp_path / "from-a-spreadsheet.csv"
    dump.write_bytes(("\r\n".join(lines) + "\r\n").encode("latin-1"))
    conf = config_file(tmp_path, "new")
    result = cli("devices", "import", str(dump), "--config", conf)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert f"{dump}: line 552: byte 0xe9 is not UTF-8" in result.stderr
    assert "nothing imported" in result.stderr and "iconv" in result.stderr
    assert not (tmp_path / "new.db").exists()  # not even an empty database

    seeded = config_file(tmp_path, "seeded")
    (tmp_path / "ok.jsonl").write_text(json.dumps(
        {"username": "a", "selector": "A", "token_msgs": T1}) + "\n")
    assert cli("devices", "import", str(tmp_path / "ok.jsonl"), "--config",
                    seeded).returncode == 0
    before = stored(tmp_path / "seeded.db")
    assert cli("devices", "import", str(dump), "--config", seeded).returncode == 1
    assert stored(tmp_path / "seeded.db") == before

    dump.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))  # the same, converted
    converted = cli("devices", "import", str(dump), "--config", conf)
    assert converted.returncode == 0, converted.stderr
    devices, _ = stored(tmp_path / "new.db")
    assert len(devices) == 600
    assert {"selector": "S550", "username": "jos\u00e9"}.items() <= \
        next(d for d in devices if d["selector"] == "S550").items()


def test_bad_lines_are_reported_and_the_rest_written_in_one_transaction(tmp_path):
    rows = [json.dumps({"username": f"u{i}", "selector": f"S{i}", "token_msgs": T1})
            for i in range(900)]
    rows[10] = '{"username": "u10", "selector": "S10"'  # cut short
    rows[20] = json.dumps({"username": "u20", "selector": "S20", "token_msgs": T1,
                           "last_seen": "yesterday"})
    rows[30] = "[1, 2]"
    dump = tmp_path / "devices.jsonl"
    dump.write_text("\n".join(rows) + "\n")
    conf = config_file(tmp_path, "new")
    result = cli("devices", "import", str(dump), "--config", conf)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{dump}: line 11: not valid JSON" in result.stderr
    assert f"{dump}: line 21: last_seen is not a time" in result.stderr
    assert f"{dump}: line 31: not a JSON object" in result.stderr
    assert result.stdout.endswith(": 897 created, 0 changed, 0 unchanged, 3 skipped\n")
    assert len(stored(tmp_path / "new.db")[0]) == 897

    # A write that fails at row 800 (after the first 500 used to be committed) keeps none.
    again = config_file(tmp_path, "again")
    (tmp_path / "seed.jsonl").write_text(rows[0] + "\n")
    assert cli("devices", "import", str(tmp_path / "seed.jsonl"), "--config",
                    again).returncode == 0
    conn = sqlite3.connect(tmp_path / "again.db")
    conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON devices WHEN new.selector = 'S800'"
                 " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
    conn.commit()
    conn.close()
    failed = cli("devices", "import", str(dump), "--config", again)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.splitlines()[-1] == (
        f"pnbridge: cannot write database {tmp_path / 'again.db'}: refused by the test: "
        "nothing imported")
    devices, events = stored(tmp_path / "again.db")
    assert [d["selector"] for d in devices] == ["S0"] and len(events) == 1


def test_the_cap_per_user_holds_with_a_report_per_user(tmp_path):
    now = time.time()
    dump = tmp_path / "devices.jsonl"
    dump.write_text("".join(
        json.dumps({"username": "alice", "selector": f"A{i:04}", "token_msgs": T1,
                    "last_seen": isotime(now - i * 60)}) + "\n"
        for i in range(1200)
    ) + json.dumps({"username": "bob", "selector": "B1", "token_msgs": T1}) + "\n")
    conf = config_file(tmp_path, "new")
    result = cli("devices", "import", str(dump), "--config", conf)
    assert result.returncode == 1, result.stderr
    assert ("pnbridge: alice: 1,200 devices in the file, the cap ([storage] "
            "max_devices_per_user) is 20: kept the 20 most recently seen (1,180 of the file "
            "not imported)\n") in result.stderr
    assert "bob" not in result.stderr
    assert result.stdout.endswith(
        ": 21 created, 0 changed, 0 unchanged, 0 skipped, 1180 over the cap\n")
    devices, _ = stored(tmp_path / "new.db")
    assert sorted(d["selector"] for d in devices if d["username"] == "alice") == [
        f"A{i:04}" for i in range(20)]

    # Stored devices count too: 5 newer ones in a file evict the 5 least recently seen.
    newer = tmp_path / "newer.jsonl"
    newer.write_text("".join(
        json.dumps({"username": "alice", "selector": f"N{i}", "token_msgs": T1}) + "\n"
        for i in range(5)))
    result = cli("devices", "import", str(newer), "--config", conf)
    assert result.returncode == 0, result.stderr
    assert ("alice: 5 devices in the file and 20 stored, the cap ([storage] "
            "max_devices_per_user) is 20: kept the 20 most recently seen (0 of the file not "
            "imported, 5 stored evicted)") in result.stderr
    devices, events = stored(tmp_path / "new.db")
    alice = sorted(d["selector"] for d in devices if d["username"] == "alice")
    assert alice == [f"A{i:04}" for i in range(15)] + [f"N{i}" for i in range(5)]
    assert sorted(s for k, r, s in events if r == "evicted") == [
        f"A{i:04}" for i in range(15, 20)]

    uncapped = config_file(tmp_path, "uncapped", "max_devices_per_user = 0\n")
    assert cli("devices", "import", str(dump), "--config", uncapped).returncode == 0
    assert len(stored(tmp_path / "uncapped.db")[0]) == 1201


def test_export_then_import_keeps_the_times(tmp_path):
    old = config_file(tmp_path, "old")
    store = SQLiteStore(tmp_path / "old.db")
    created, changed, seen = time.time() - 300 * DAY, time.time() - 100 * DAY, \
        time.time() - 40 * DAY
    with store.transaction():
        store.register(Report("token", "alice", "S1", token_msgs=T1, appid_msgs="a.b"),
                       {}, created)
        store.register(Report("token", "alice", "S1", token_msgs=T1[::-1]), {}, changed)
        store.register(Report("token", "alice", "S1", token_msgs=T1[::-1]), {}, seen)
        store.register(Report("token", "bob", "S2", token_calls=T1, extras={"os": "ios"}),
                       {}, seen)
    store.close()
    original, _ = stored(tmp_path / "old.db")
    assert original[0]["created_at"] != original[0]["updated_at"] != original[0]["last_seen"]
    for fmt in ("jsonl", "csv"):
        dump = tmp_path / f"devices.{fmt}"
        exported = cli("devices", "export", "--format", fmt, "-o", str(dump),
                            "--config", old)
        assert exported.returncode == 0, exported.stderr
        new = config_file(tmp_path, f"new-{fmt}")
        result = cli("devices", "import", str(dump), "--config", new)
        assert result.returncode == 0, result.stderr
        moved, _ = stored(tmp_path / f"new-{fmt}.db")
        assert moved == original, fmt
        # expire_after counts from when the phones were last seen, not from the import
        store = SQLiteStore(tmp_path / f"new-{fmt}.db")
        with store.transaction():
            expired, _ = store.expire(time.time() - 30 * DAY, {}, time.time())
        store.close()
        assert sorted(c.device.selector for c in expired) == ["S1", "S2"]
    # A time in the future is read as now; epoch seconds are read too.
    future = tmp_path / "future.jsonl"
    future.write_text(json.dumps({"username": "c", "selector": "S3", "token_msgs": T1,
                                  "last_seen": time.time() + 30 * DAY,
                                  "created_at": "1700000000"}) + "\n"
                      + json.dumps({"username": "d", "selector": "S4", "token_msgs": T1,
                                    "last_seen": "2026-01-02T03:04:05+01:00"}) + "\n")
    assert cli("devices", "import", str(future), "--config",
                    config_file(tmp_path, "future")).returncode == 0
    device, only_seen = stored(tmp_path / "future.db")[0]
    assert device["created_at"] == isotime(1700000000)
    assert device["last_seen"] <= isotime(time.time())
    # a device is not created after it was last seen
    assert only_seen["created_at"] == only_seen["updated_at"] == only_seen["last_seen"] \
        == "2026-01-02T02:04:05.000Z"


def test_export_file_is_0600_whatever_the_umask_and_progress_only_on_a_terminal(tmp_path):
    conf = config_file(tmp_path, "db")
    dump = tmp_path / "many.jsonl"
    dump.write_text("".join(json.dumps({"username": f"u{i}", "selector": f"S{i}",
                                        "token_msgs": T1}) + "\n" for i in range(300)))
    assert cli("devices", "import", str(dump), "--config", conf).returncode == 0
    mask = os.umask(0o002)
    try:
        out = tmp_path / "export.jsonl"
        plain = cli("devices", "export", "-o", str(out), "--config", conf)
        assert plain.returncode == 0, plain.stderr
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert "exporting" not in plain.stderr
        out.chmod(0o664)  # an existing file is made 0600 as well
        shown_result, shown = on_terminal("devices", "export", "-o", str(out), "--config", conf)
        assert shown_result.returncode == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o600
        assert b"exporting" in shown and b"100%" in shown
        assert len(out.read_text().splitlines()) == 300
    finally:
        os.umask(mask)
    to_terminal, _ = on_terminal("devices", "export", "--config", conf)  # to a pipe: a bar
    assert to_terminal.returncode == 0 and len(to_terminal.stdout.splitlines()) == 300
    full = cli("devices", "export", "-o", "/dev/full", "--config", conf)
    assert full.returncode == 1 and "Traceback" not in full.stderr
    assert full.stderr == "pnbridge: --output: cannot write /dev/full: No space left on device\n"
    assert stat.S_IMODE(os.stat("/dev/full").st_mode) == 0o666  # a device keeps its mode
    denied = cli("devices", "export", "-o", str(tmp_path / "no" / "such"), "--config", conf)
    assert denied.returncode == 1 and "Traceback" not in denied.stderr
    assert f"--output: cannot write {tmp_path / 'no' / 'such'}" in denied.stderr


def test_devices_list_limit_and_count(tmp_path):
    conf = config_file(tmp_path, "db")
    dump = tmp_path / "five.jsonl"
    dump.write_text("".join(json.dumps({"username": "alice" if i < 3 else "bob",
                                        "selector": f"S{i}", "token_msgs": T1}) + "\n"
                            for i in range(5)))
    assert cli("devices", "import", str(dump), "--config", conf).returncode == 0
    everything = cli("devices", "list", "--config", conf)
    assert len(everything.stdout.splitlines()) == 6 and everything.stderr == "5 devices\n"
    limited = cli("devices", "list", "--limit", "2", "--config", conf)
    assert [line.split()[0] for line in limited.stdout.splitlines()[1:]] == ["S0", "S1"]
    assert limited.stderr == "2 of 5 devices\n"
    as_json = cli("devices", "list", "--limit", "1", "--json", "--username", "bob",
                       "--config", conf)
    assert [d["selector"] for d in json.loads(as_json.stdout)] == ["S3"]
    assert as_json.stderr == "1 of 2 devices\n"
    one = cli("devices", "list", "--username", "bob", "--limit", "1", "--config", conf)
    assert one.stderr == "1 of 2 devices\n"
    bad = cli("devices", "list", "--limit", "-1", "--config", conf)
    assert bad.returncode == 2 and "--limit" in bad.stderr
