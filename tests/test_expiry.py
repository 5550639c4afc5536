"""``[storage] expire_after``: the duration syntax, and the daemon task that removes devices
not seen for that long."""

from __future__ import annotations

import time

import pytest
import trio
from pnbridge.config.tables import parse_config
from pnbridge.config.typed import parse_duration
from pnbridge.errors import ConfigError
from pnbridge.model import Report
from pnbridge.ops.expiry import sweep_interval
from pnbridge.storage.sqlite.store import SQLiteStore


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90d", 90 * 86400), ("12h", 43200), ("30m", 1800), ("45s", 45), ("2w", 14 * 86400),
     ("1h30m", 5400), ("1d 12h", 129600), ("0.5s", 0.5)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "90", "d", "90x", "x90d", "-1d", "0d", "1d-", "1.d"])
def test_bad_duration_names_the_key(text):
    with pytest.raises(ConfigError) as info:
        parse_config({"storage": {"expire_after": text}})
    assert info.value.errors[0].startswith("storage.expire_after: ")
    assert "units: s, m, h, d, w" in info.value.errors[0] or "longer than 0" in info.value.errors[0]


def test_expiry_is_off_by_default():
    assert parse_config({}).storage.expire_seconds is None
    assert parse_config({"storage": {"expire_after": "90d"}}).storage.expire_seconds == 7776000


def test_sweep_interval_is_bounded():
    assert sweep_interval(90 * 86400) == 3600
    assert sweep_interval(60) == 6
    assert sweep_interval(0.5) == 0.1


def test_store_expire_removes_only_stale_devices_with_an_event(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    with store.transaction():
        store.register(Report("token", username="u", selector="old", token_msgs="a"), {}, 100.0)
        store.register(Report("token", username="u", selector="new", token_msgs="b"), {}, 900.0)
        changes, failed = store.expire(500.0, {"task": "expire"}, 1000.0)
    assert failed == {}
    assert [c.device.selector for c in changes] == ["old"]
    assert [d.selector for d in store.devices()] == ["new"]
    event = store.events()[-1]
    assert (event.kind, event.reason, event.selector, event.source) == (
        "removed", "expired", "old", {"task": "expire"})
    assert event.before is not None and event.before.token_msgs == "a"


def test_store_expire_works_in_batches(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    with store.transaction():
        for i in range(5):
            store.register(Report("token", username="u", selector=f"s{i}", token_msgs="t"), {}, 1.0)
        assert len(store.expire(2.0, {}, 3.0, limit=2)[0]) == 2
    assert len(store.devices()) == 3


async def test_daemon_expires_devices_not_seen_for_expire_after(start_daemon, tmp_path):
    store = SQLiteStore(tmp_path / "pnbridge.db")
    now = time.time()
    with store.transaction():
        store.register(Report("token", username="u", selector="stale", token_msgs="a"), {},
                       now - 7200)
        store.register(Report("token", username="u", selector="fresh", token_msgs="b"), {}, now)
    daemon = await start_daemon({"storage": {"expire_after": "1h"}})
    with trio.fail_after(5):
        while [d.selector for d in store.devices()] != ["fresh"]:
            await trio.sleep(0.02)
    removed = [e for e in store.events() if e.kind == "removed"]
    assert [(e.selector, e.reason) for e in removed] == [("stale", "expired")]
    # A report keeps a device alive: it is refreshed, not expired.
    assert (await daemon.client.get("/token", params={
        "username": "u", "selector": "fresh", "token_msgs": "b"})).status_code == 200
    store.close()


async def test_daemon_without_expire_after_keeps_old_devices(start_daemon, tmp_path):
    store = SQLiteStore(tmp_path / "pnbridge.db")
    with store.transaction():
        store.register(Report("token", username="u", selector="old", token_msgs="a"), {}, 1.0)
    await start_daemon()
    await trio.sleep(0.3)
    assert [d.selector for d in store.devices()] == ["old"]
    store.close()
