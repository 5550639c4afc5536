"""Delivery from the journal: retries, isolation, parking and replay, restarts, pruning; on
each store engine (the ``engine`` fixture)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import trio
from configs import config_toml
from conftest import cli
from plugintools import install_plugins, lines, records, wait_until, wait_until_sync
from pnbridge.storage.sqlite.schema import MIGRATIONS
from pnbridge.storage.sqlite.store import SQLiteStore
from reports import report

FAST = {"backoff": 0.01, "max_backoff": 0.05}


def plugin_tables(directory: Path, enabled: list[str], **tables: dict) -> dict:
    return {"plugins": {"enabled": enabled, "paths": [str(directory)], **tables}}


async def register(daemon, *selectors: str, token: str = "t") -> None:
    """Report each selector in turn."""
    for selector in selectors:
        await report(daemon, selector, token=token)


def cli_beside(*args: str):
    """The command in a worker thread, beside the daemon running in the test's loop."""
    return trio.to_thread.run_sync(lambda: cli(*args))


async def test_failing_plugin_gets_every_event_once_it_recovers(engine, start_daemon, tmp_path):
    """Fails its first 3 calls, then succeeds: every event arrives, in journal order."""
    out = tmp_path / "out"
    directory = install_plugins(tmp_path / "plugins", "delivery/flaky")
    daemon = await start_daemon(engine.tables(plugin_tables(
        directory, ["flaky"], flaky={"path": str(out), "delivery": {**FAST, "max_attempts": 5}}
    )))
    await register(daemon, "S1", "S2", "S3")
    await register(daemon, "S1", token="t2")
    await wait_until(lambda: len(lines(out)) == 4)
    journal = daemon.store().events()
    assert records(out) == [("registered", e.seq, e.selector) for e in journal]
    assert daemon.store().failures() == []


async def test_retry_later_sets_the_delay(engine, start_daemon, tmp_path, virtual_clock):
    out = tmp_path / "out"
    directory = install_plugins(tmp_path / "plugins", "delivery/later")
    # A backoff far longer than the test: only RetryLater's delay can make it pass.
    daemon = await start_daemon(engine.tables(plugin_tables(directory, ["later"], later={
        "path": str(out), "delivery": {"backoff": 60, "max_backoff": 60}})))
    await register(daemon, "S1")
    times = [float(t) for t in await wait_until(lambda: len(lines(out)) == 2 and lines(out))]
    assert 0.3 <= times[1] - times[0] < 2


async def test_hanging_plugins_delay_neither_ingestion_nor_other_plugins(engine, start_daemon, tmp_path,
                                                                         virtual_clock):
    """An async hook that never returns and a plain one blocked in its thread hold back only
    themselves: reports are answered at once and the recorder gets everything."""
    directory = tmp_path / "plugins"
    out = tmp_path / "out"
    install_plugins(directory, "recorder", "delivery/hang", "delivery/stuck")
    daemon = await start_daemon(engine.tables(plugin_tables(
        directory, ["hang", "stuck", "recorder"], recorder={"path": str(out)}
    )))
    try:
        started = trio.current_time()
        await register(daemon, *(f"S{i}" for i in range(20)))
        assert trio.current_time() - started < 3  # the hooks' 30 s timeout did not pass
        await wait_until(lambda: len(lines(out)) == 20)
        assert [s for _, _, s in records(out)] == [f"S{i}" for i in range(20)]
        cursors = daemon.store().cursors()
        assert cursors.get("hang", 0) == cursors.get("stuck", 0) == 0
    finally:
        sys.modules["pnbridge_plugin_stuck"].release.set()


async def test_parked_events_are_listed_and_retried(engine, start_daemon, tmp_path):
    """Permanent failure, timeouts and errors past max_attempts park the event and delivery
    goes on; ``pnbridge events --failed`` lists them, ``pnbridge events retry`` resends them."""
    out, healed = tmp_path / "out", tmp_path / "healed"
    directory = install_plugins(tmp_path / "plugins", "delivery/picky")
    daemon = await start_daemon(engine.tables(plugin_tables(directory, ["picky"], picky={
        "path": str(out), "healed": str(healed),
        "delivery": {**FAST, "max_attempts": 2, "timeout": 0.1},
    })))
    await register(daemon, "BAD", "OK1", "SLOW", "ERR", "OK2")
    await wait_until(lambda: len(lines(out)) == 2)
    assert [s for _, _, s in records(out)] == ["OK1", "OK2"]
    # The delivery task saves its place after the hook returned: wait for it before asking.
    await wait_until(lambda: daemon.store().cursors().get("picky") == 5)
    config = tmp_path / "cli.toml"
    config.write_text(engine.toml() + '[plugins]\nenabled = ["picky"]\n')

    result = await cli_beside("events", "--failed", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    failed = json.loads(result.stdout)
    assert [(f["event"]["selector"], f["plugin"], f["attempts"], f["status"]) for f in failed] \
        == [("BAD", "picky", 1, "parked"), ("SLOW", "picky", 2, "parked"),
            ("ERR", "picky", 2, "parked")]
    assert failed[0]["error"] == "permanent failure: no such customer"
    assert failed[1]["error"] == "timed out after 0.1s"
    assert failed[2]["error"] == "ValueError: bad field"
    text = (await cli_beside("events", "--failed", "--config", str(config))).stdout
    assert "SLOW" in text and "timed out after 0.1s" in text and "OK1" not in text

    result = await cli_beside("events", "--plugin", "picky", "--json", "--config", str(config))
    states = {e["selector"]: e["plugins"]["picky"] for e in json.loads(result.stdout)}
    assert states == {"BAD": "failed", "OK1": "delivered", "SLOW": "failed",
                      "ERR": "failed", "OK2": "delivered"}

    result = await cli_beside("events", "retry", "999", "--config", str(config))
    assert result.returncode == 1 and "no parked event matches 999" in result.stderr
    healed.touch()
    bad_id = failed[0]["event"]["id"]
    result = await cli_beside("events", "retry", bad_id, "--config", str(config))
    assert result.stdout.strip() == "1 parked event(s) will be sent again"
    await wait_until(lambda: len(lines(out)) == 3)
    result = await cli_beside("events", "retry", "--plugin", "picky", "--config", str(config))
    assert result.stdout.strip() == "2 parked event(s) will be sent again"
    await wait_until(lambda: len(lines(out)) == 5)
    assert [s for _, _, s in records(out)] == ["OK1", "OK2", "BAD", "SLOW", "ERR"]
    assert daemon.store().failures() == []
    result = await cli_beside("events", "--config", str(config))
    assert result.stdout.count("picky:delivered") == 5
    result = await cli_beside("events", "--limit", "2", "--json", "--config", str(config))
    assert [e["selector"] for e in json.loads(result.stdout)] == ["ERR", "OK2"]
    result = await cli_beside("events", "--limit", "-1", "--config", str(config))
    assert result.returncode == 2 and "--limit" in result.stderr


def test_undelivered_events_survive_kill_and_stop(engine, spawn, tmp_path):
    """Events left undelivered by ``kill -9``, and events journaled by the CLI while the
    daemon is down, are delivered after the restart, in order; nothing is lost."""
    directory = tmp_path / "plugins"
    gated, seen, gate = tmp_path / "gated", tmp_path / "seen", tmp_path / "gate"
    install_plugins(directory, "delivery/gated", "recorder")
    toml = config_toml(tmp_path, engine.tables({"plugins": {
        "enabled": ["gated", "recorder"], "paths": [str(directory)],
        "recorder": {"path": str(seen)}, "gated": {"path": str(gated), "gate": str(gate)}}}))
    daemon = spawn(toml)
    url = daemon.url()
    for selector, token in (("S1", "a"), ("S2", "b"), ("S1", "c")):
        r = httpx.get(f"{url}/token/", params={"username": "u", "selector": selector,
                                               "pushToken": token})
        assert r.status_code == 200
    wait_until_sync(lambda: len(lines(seen)) == 3)
    daemon.popen.kill()  # kill -9 while "gated" waits on its first event
    daemon.popen.wait()
    assert lines(gated) == []
    result = cli("devices", "remove", "S2", "--config", str(tmp_path / "pnbridge.toml"))
    assert result.returncode == 0, result.stderr

    gate.touch()
    daemon = spawn(toml)
    daemon.url()
    journal = [(e.kind, e.seq, e.selector) for e in engine.open().events()]
    assert [k for k, _, _ in journal] == ["registered"] * 3 + ["removed"]
    wait_until_sync(lambda: len(lines(gated)) == 4)
    assert records(gated) == journal
    # The recorder may see events again after the kill (at least once), never out of order.
    wait_until_sync(lambda: records(seen)[-1:] == journal[-1:])
    got = records(seen)
    assert got[:3] == journal[:3]
    assert got[3:] == journal[len(journal) - len(got[3:]):]  # a redelivered tail, in order
    assert daemon.stop() == 0


async def test_pruning_keeps_undelivered_events(engine, start_daemon, tmp_path):
    """With retention 0 the journal drops what every plugin passed, and keeps events one
    plugin parked or has not reached yet."""
    directory = tmp_path / "plugins"
    out = tmp_path / "out"
    install_plugins(directory, "recorder", "delivery/picky")
    daemon = await start_daemon(engine.tables({
        "plugins": {
            "enabled": ["recorder", "picky"], "paths": [str(directory)],
            "retention": 0, "prune_interval": 0.05, "recorder": {"path": str(out)},
            "picky": {"path": str(tmp_path / "picky"), "healed": str(tmp_path / "healed"),
                      "delivery": {"timeout": 60}},
        },
    }))
    await register(daemon, "BAD", "OK1", "SLOW", "OK2")
    await wait_until(lambda: len(lines(out)) == 4)
    store = daemon.store()
    # BAD (seq 1) is parked by picky, SLOW (3) hangs in picky, OK2 (4) lies beyond it.
    await wait_until(lambda: [e.selector for e in store.events()] == ["BAD", "SLOW", "OK2"])
    await trio.sleep(0.7)  # cursors saved, several prunings later: still there
    assert [e.selector for e in store.events()] == ["BAD", "SLOW", "OK2"]
    assert [f.event.selector for f in store.failures()] == ["BAD"]


def test_v1_database_is_migrated(tmp_path):
    """A database made by the previous schema gets the delivery tables and keeps its events."""
    import sqlite3

    import sqlite_utils

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(sqlite3.connect(path))
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO events (id, kind, reason, selector, username, time, source)"
               " VALUES ('e1', 'removed', 'operator', 'S', 'u', 1.0, '{}')")
    db.conn.commit()
    db.conn.close()
    store = SQLiteStore(path)
    assert store.schema_version == len(MIGRATIONS)
    assert [e.id for e in store.events()] == ["e1"]
    assert store.cursors() == {} and store.failures() == []


async def test_delivery_metrics_and_readiness(engine, start_daemon, tmp_path):
    """/metrics counts deliveries per plugin and outcome and shows each plugin's backlog;
    /readyz has a check per plugin's delivery task."""
    directory = tmp_path / "plugins"
    install_plugins(directory, "recorder", "delivery/hang", "delivery/once")
    daemon = await start_daemon(engine.tables(plugin_tables(
        directory, ["recorder", "hang", "once"],
        recorder={"path": str(tmp_path / "out")}, once={"delivery": FAST},
    )))
    await register(daemon, "S1", "S2")
    await wait_until(lambda: len(lines(tmp_path / "out")) == 2)

    async def metrics() -> str:
        return (await daemon.client.get("/metrics")).text

    for _ in range(100):
        text = await metrics()
        if 'pnbridge_deliveries_total{outcome="delivered",plugin="once"} 2.0' in text:
            break
        await trio.sleep(0.02)
    assert 'pnbridge_deliveries_total{outcome="retried",plugin="once"} 1.0' in text
    assert 'pnbridge_deliveries_total{outcome="delivered",plugin="recorder"} 2.0' in text
    assert 'pnbridge_journal_pending_events{plugin="hang"} 2.0' in text
    assert 'pnbridge_journal_pending_events{plugin="recorder"} 0.0' in text
    ready = await daemon.client.get("/readyz")
    assert ready.status_code == 200
    assert "plugin hang: ok" in ready.text and "plugin once: ok" in ready.text
