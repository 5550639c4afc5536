"""`pnbridge devices ...` on the daemon's database, run as a user runs them."""

from __future__ import annotations

import json
import time

import pytest
from conftest import cli
from pnbridge.model import Report
from pnbridge.storage.sqlite.store import SQLiteStore


@pytest.fixture
def config(tmp_path):
    db = tmp_path / "cli.db"
    store = SQLiteStore(db)
    with store.transaction():
        for selector, user, calls, msgs in [
            ("S:1", "alice", "callsTokenAAAA+/=", "msgsTokenAAAA"),
            ("S:2", "alice", None, "msgsTokenBBBB"),
            ("S:3", "bob", None, "msgsTokenCCCC"),
        ]:
            report = Report("token", username=user, selector=selector, token_calls=calls,
                            appid_calls="app.voip" if calls else None, token_msgs=msgs,
                            appid_msgs="app", extras={"installid": selector})
            store.register(report, {"route": "/token"}, time.time())
    store.close()
    path = tmp_path / "pnbridge.toml"
    path.write_text(f'[storage]\npath = "{db}"\n')
    return str(path)


def test_list_json_has_canonical_fields(config):
    result = cli("devices", "list", "--json", "--config", config)
    assert result.returncode == 0, result.stderr
    devices = json.loads(result.stdout)
    assert [d["selector"] for d in devices] == ["S:1", "S:2", "S:3"]
    first = devices[0]
    assert {k: first[k] for k in ("username", "token_calls", "appid_calls", "token_msgs", "appid_msgs")} == {
        "username": "alice", "token_calls": "callsTokenAAAA+/=", "appid_calls": "app.voip",
        "token_msgs": "msgsTokenAAAA", "appid_msgs": "app",
    }
    assert first["extras"] == {"installid": "S:1"}
    assert first["last_seen"].endswith("Z") and first["created_at"].endswith("Z")


def test_list_filters_by_username_and_shortens_tokens_in_the_table(config):
    result = cli("devices", "list", "--username", "alice", "--config", config)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["SELECTOR", "USERNAME"]
    assert [line.split()[0] for line in lines[1:]] == ["S:1", "S:2"]
    assert "callsTokenAAAA+/=" not in result.stdout and "callsT…" in result.stdout


def test_show(config):
    result = cli("devices", "show", "S:1", "--json", "--config", config)
    assert json.loads(result.stdout)["token_calls"] == "callsTokenAAAA+/="
    result = cli("devices", "show", "S:2", "--config", config)
    assert "token_calls:  -" in result.stdout and "token_msgs:   msgsTokenBBBB" in result.stdout
    result = cli("devices", "show", "nope", "--config", config)
    assert result.returncode == 1 and "no device with selector nope" in result.stderr


def test_remove_is_a_removal_event(config, tmp_path):
    result = cli("devices", "remove", "S:2", "--config", config)
    assert result.returncode == 0 and "removed S:2 (username alice)" in result.stdout
    store = SQLiteStore(tmp_path / "cli.db")
    assert [d.selector for d in store.devices()] == ["S:1", "S:3"]
    last = store.events()[-1]
    assert (last.kind, last.reason, last.selector) == ("removed", "operator", "S:2")
    assert last.source == {"command": "devices remove"}
    result = cli("devices", "remove", "S:2", "--config", config)
    assert result.returncode == 1 and "no device with selector S:2" in result.stderr


def test_missing_database_is_a_clear_error(tmp_path):
    path = tmp_path / "pnbridge.toml"
    path.write_text(f'[storage]\npath = "{tmp_path / "none.db"}"\n')
    result = cli("devices", "list", "--config", str(path))
    assert result.returncode == 1 and "no database at" in result.stderr
    assert not (tmp_path / "none.db").exists()
