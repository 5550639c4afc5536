"""``pnbridge devices export`` and ``pnbridge devices import``: migrating between hosts."""

from __future__ import annotations

import csv
import io
import json
import time

from conftest import cli, on_terminal
from pnbridge.model import Report
from pnbridge.storage.sqlite.store import SQLiteStore

T1 = "QVBBOTEyMzQ1Njc4OTAxMjM0NTY3ODkw"
T2 = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MDEy"


def config_file(tmp_path, name: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'[storage]\npath = "{tmp_path / name}.db"\n')
    return str(path)


def seed(tmp_path) -> str:
    config = config_file(tmp_path, "old")
    store = SQLiteStore(tmp_path / "old.db")
    with store.transaction():
        for selector, user, token in (("S1", "alice", T1), ("S2", "bob", T2)):
            report = Report("token", user, selector, token_msgs=token, appid_msgs="com.app",
                            extras={"platform": "ios"} if user == "alice" else {})
            store.register(report, {"test": True}, time.time())
    store.close()
    return config


def events(db) -> list:
    store = SQLiteStore(db)
    found = store.conn.execute("SELECT kind, reason, selector FROM events ORDER BY seq").fetchall()
    store.close()
    return found


def devices(db) -> list:
    store = SQLiteStore(db)
    found = [d.to_dict() for d in store.devices()]
    store.close()
    return found


def test_export_and_import_jsonl_and_csv_between_hosts(tmp_path):
    old = seed(tmp_path)
    for fmt in ("jsonl", "csv"):
        exported = cli("devices", "export", "--format", fmt, "--config", old)
        assert exported.returncode == 0, exported.stderr
        dump = tmp_path / f"devices.{fmt}"
        dump.write_text(exported.stdout)
        new = config_file(tmp_path, f"new-{fmt}")
        result = cli("devices", "import", str(dump), "--config", new)
        assert result.returncode == 0, result.stderr
        assert result.stdout.endswith(": 2 created, 0 changed, 0 unchanged, 0 skipped\n")
        moved = devices(tmp_path / f"new-{fmt}.db")
        assert [(d["selector"], d["username"], d["token_msgs"], d["appid_msgs"], d["extras"])
                for d in moved] == [("S1", "alice", T1, "com.app", {"platform": "ios"}),
                                    ("S2", "bob", T2, "com.app", {})]
        assert events(tmp_path / f"new-{fmt}.db") == [
            ("registered", "new", "S1"), ("registered", "new", "S2")]

    lines = exported.stdout.splitlines()
    assert lines[0] == "selector,username,token_calls,appid_calls,token_msgs,appid_msgs,extras," \
                       "created_at,updated_at,last_seen"
    first = json.loads(cli("devices", "export", "--config", old).stdout.splitlines()[0])
    assert first["selector"] == "S1" and first["extras"] == {"platform": "ios"}


def test_import_twice_changes_nothing_and_a_changed_row_is_an_event(tmp_path):
    old = seed(tmp_path)
    dump = tmp_path / "devices.jsonl"
    dump.write_text(cli("devices", "export", "--config", old).stdout)
    new = config_file(tmp_path, "new")
    assert cli("devices", "import", str(dump), "--config", new).returncode == 0
    before = devices(tmp_path / "new.db")
    again = cli("devices", "import", str(dump), "--config", new)
    assert again.stdout.endswith(": 0 created, 0 changed, 2 unchanged, 0 skipped\n")
    assert devices(tmp_path / "new.db") == before  # not even last_seen moved
    assert len(events(tmp_path / "new.db")) == 2

    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    rows[1]["token_msgs"] = T1[::-1]
    dump.write_text("".join(json.dumps(r) + "\n" for r in rows))
    changed = cli("devices", "import", str(dump), "--config", new)
    assert changed.stdout.endswith(": 0 created, 1 changed, 1 unchanged, 0 skipped\n")
    assert events(tmp_path / "new.db")[-1] == ("registered", "changed", "S2")


def test_bad_rows_are_reported_with_their_line_and_skipped(tmp_path):
    new = config_file(tmp_path, "new")
    dump = tmp_path / "devices.jsonl"
    dump.write_text(
        f'{{"username": "alice", "selector": "S1", "pushToken": "{T1}", "password": "x"}}\n'
        "\n"
        '{"username": "bob", "selector": "S2"}\n'
        "not json\n"
        f'{{"username": "carol", "selector": "S3", "token_calls": "{T2}"}}\n'
        '["a list"]\n'
    )
    result = cli("devices", "import", str(dump), "--config", new)
    assert result.returncode == 1
    assert result.stdout.endswith(": 2 created, 0 changed, 0 unchanged, 3 skipped\n")
    assert "line 3: no push token (token_calls or token_msgs) (skipped)" in result.stderr
    assert "line 4: not valid JSON" in result.stderr
    assert "line 6: not a JSON object" in result.stderr
    stored = devices(tmp_path / "new.db")
    assert [d["selector"] for d in stored] == ["S1", "S3"]
    assert stored[0]["token_msgs"] == T1  # the app's field name, through the alias table
    assert "password" not in json.dumps(stored)  # credentials are never stored

    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerows([["username", "selector", "token_msgs", "extras"],
                      ["dave", "S4", T1, ""], ["erin", "", T2, ""], ["frank", "S6", T2, "{bad"]])
    (tmp_path / "devices.csv").write_text(table.getvalue())
    result = cli("devices", "import", str(tmp_path / "devices.csv"), "--config", new)
    assert result.returncode == 1
    assert "line 3: missing selector" in result.stderr
    assert "line 4: extras is not valid JSON" in result.stderr
    assert result.stdout.endswith(": 1 created, 0 changed, 0 unchanged, 2 skipped\n")


def test_progress_bar_only_on_a_terminal(tmp_path):
    dump = tmp_path / "devices.jsonl"
    dump.write_text("".join(
        json.dumps({"username": f"u{i}", "selector": f"S{i}", "token_msgs": T1}) + "\n"
        for i in range(50)))
    plain = cli("devices", "import", str(dump), "--config", config_file(tmp_path, "a"))
    assert "importing" not in plain.stderr and "100%" not in plain.stderr

    result, shown = on_terminal("devices", "import", str(dump), "--config",
                                config_file(tmp_path, "b"))
    assert result.returncode == 0
    assert b"importing" in shown and b"100%" in shown
