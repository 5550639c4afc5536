"""The push history's recording: one PushRecord per device of every push, with the right
fields, through the push API, FastAGI and ``pnbridge push``; tokens only shortened; kept
for ``[storage] push_history`` and ``push_history_max``; written off the push's path, so a
locked database neither delays nor fails a push, and the records arrive once it clears. The
storage side on each store engine (the ``engine`` fixture)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx
import trio
from agitools import agi_config, session
from conftest import Daemon, pnbridge
from engines import StoreEngine
from plugintools import wait_until
from pnbridge.access.apikeys import hash_key
from pnbridge.model import PushRecord, Report
from pnbridge.ops.log import shorten
from pnbridge.ops.metrics import Metrics
from pnbridge.push.history import PushHistory
from pnbridge.storage.writer import open_writer
from pnmediator_stub import BODY_404, HTTP_500, KEY, push_config
from reports import report

CALL = "NotifyIncomingCall"
TEXT = "NotifyTextMessage"
# Long tokens, so that a shortened one is far from the whole.
VOIP = "voip-9f8e7d6c5b4a3210-ok"
APNS = "apns-9f8e7d6c5b4a3210-ok"
GONE = "voip-9f8e7d6c5b4a3210-gone"
FLAKY = "fcm-9f8e7d6c5b4a3210-flaky"
KEY_ID = hashlib.sha256(KEY.encode()).hexdigest()[:12]


async def push(daemon: Daemon, body: dict[str, Any], key: str = KEY) -> Any:
    answer = await daemon.client.post("/api/v1/push", content=json.dumps(body),
                                      headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200, answer.text
    return answer


def records(daemon: Daemon | StoreEngine, **filters: Any) -> list[PushRecord]:
    """The push records in the daemon's database, newest first (a connection of its own)."""
    store = daemon.store() if isinstance(daemon, Daemon) else daemon.open()
    try:
        return store.pushes(limit=1000, **filters)
    finally:
        store.close()


async def recorded(daemon: Daemon | StoreEngine, count: int, **filters: Any
                   ) -> dict[str, PushRecord]:
    """Wait until ``count`` records match ``filters``; them by selector."""
    found = await wait_until(lambda: len(rows := records(daemon, **filters)) >= count and rows)
    assert len(found) == count, found
    return {r.selector: r for r in found}


async def metric(daemon: Daemon, name: str) -> float:
    for line in (await daemon.client.get("/metrics")).text.splitlines():
        head, _, value = line.rpartition(" ")
        if head == name:
            return float(value)
    return 0.0


async def test_every_device_gets_one_record_with_each_outcome(engine, start_daemon, stub):
    daemon = await start_daemon(engine.tables(push_config(stub, NotifyIncomingCall=1.0)))
    await report(daemon, "IPHONE", username="alice", token=None, calls=VOIP, msgs=APNS)
    await report(daemon, "GONE", username="alice", token=None, calls=GONE)
    await report(daemon, "FLAKY", username="alice", token=None, msgs=FLAKY)
    stub.answer(GONE, BODY_404)
    stub.answer(FLAKY, *[HTTP_500] * 100)
    before = time.time()
    answer = await push(daemon, {"username": "alice", "verb": CALL, "id": "call-1@pbx"})
    assert {d["selector"]: d["outcome"] for d in answer.json()["devices"]} == {
        "IPHONE": "sent", "GONE": "removed", "FLAKY": "failed"}
    found = await recorded(daemon, 3, id="call-1@pbx")

    sent, gone, flaky = found["IPHONE"], found["GONE"], found["FLAKY"]
    assert sent == PushRecord(
        time=sent.time, verb=CALL, id="call-1@pbx", username="alice", selector="IPHONE",
        pair="calls", token=shorten(VOIP), appid="com.app.voip", outcome="sent", code=200,
        message="pnmediator HTTP 200: OK", attempts=1, latency=sent.latency,
        requester=f"api:{KEY_ID}")
    assert before <= sent.time <= time.time() and 0 < sent.latency < 1.0
    assert {r.time for r in found.values()} == {sent.time}  # when the fan-out started

    assert (gone.outcome, gone.pair, gone.token, gone.code) == (
        "invalid-token", "calls", shorten(GONE), 200)
    assert gone.message == "token rejected (pnmediator code 404: Device token not found); " \
                           "device removed"

    assert (flaky.outcome, flaky.pair, flaky.token, flaky.appid, flaky.code) == (
        "failed", "msgs", shorten(FLAKY), "com.app", 500)
    assert flaky.attempts == len(stub.to(FLAKY)) > 1
    assert "pnmediator HTTP 500: Internal error" in flaky.message
    assert sent.latency < flaky.latency < 1.5  # it ran to the deadline

    # A text message to a device with only a PushKit (calls) token: skipped, and why.
    await report(daemon, "PUSHKIT", username="bob", token=None, calls="bob-voip-9876543210")
    await push(daemon, {"username": "bob", "verb": TEXT, "message": "hi"})
    skipped = (await recorded(daemon, 1, username="bob"))["PUSHKIT"]
    assert (skipped.outcome, skipped.pair, skipped.token, skipped.appid, skipped.code,
            skipped.attempts, skipped.id) == ("skipped", None, None, None, None, 0, None)
    assert skipped.message == "no msgs token (a PushKit calls token is never used for messages)"
    assert await metric(daemon, "pnbridge_push_history_written_total") == 4

    # The table holds no full token: every column of every row, as the database has it.
    rows = engine.rows("SELECT * FROM pushes")
    assert len(rows) == 4
    text = repr(rows)
    for token in (VOIP, APNS, GONE, FLAKY, "bob-voip-9876543210"):
        assert token not in text and token[:12] not in text


async def test_the_requester_is_the_api_key_name_agi_or_cli(start_daemon, stub, tmp_path):
    named = "named-key-9f8e7d6c5b4a3210"
    config = push_config(stub) | agi_config(stub)
    config["api"] = {"keys": [KEY], "key_hashes": [hash_key(named, "kamailio")]}
    daemon = await start_daemon(config)
    await report(daemon, "A", path="/token", username="1001", token=None, msgs=APNS)
    await push(daemon, {"username": "1001", "verb": TEXT, "message": "a", "id": "by-name"},
               key=named)
    await push(daemon, {"username": "1001", "verb": TEXT, "message": "b", "id": "by-id"})
    assert (await recorded(daemon, 1, id="by-name"))["A"].requester == "api:kamailio"
    assert (await recorded(daemon, 1, id="by-id"))["A"].requester == f"api:{KEY_ID}"

    asterisk = await session(daemon, "missed?wait=yes", "call-agi", "1001")
    assert asterisk.variables["PNBRIDGE_STATUS"] == "sent"
    agi = (await recorded(daemon, 1, id="call-agi"))["A"]
    assert (agi.requester, agi.verb, agi.outcome) == ("agi", "NotifyIncomingCallMissed", "sent")


async def test_pnbridge_push_writes_its_records_before_it_returns(engine, stub, tmp_path):
    store = engine.open()
    with store.transaction():
        store.register(Report("token", "alice", "A", token_msgs=APNS, appid_msgs="com.app"),
                       {}, time.time())
    store.close()
    config = tmp_path / "cli.toml"
    config.write_text(engine.toml() + '[plugins]\nenabled = ["pnmediator"]\n'
                      f'[plugins.pnmediator]\nurl = "{stub.url}"\n')
    result = await trio.to_thread.run_sync(lambda: pnbridge(
        "push", "--config", str(config), TEXT, "--username", "alice", "--message", "hi",
        "--id", "m-1"))
    assert result.returncode == 0, result.stderr
    (record,) = records(engine)  # no waiting: the command wrote it before it exited
    assert (record.requester, record.id, record.outcome, record.code, record.token) == (
        "cli", "m-1", "sent", 200, shorten(APNS))


async def test_a_push_answered_before_a_stop_is_in_the_history_after_it(engine, spawn, stub):
    daemon = spawn(engine.tables(push_config(stub)))

    def push_then_stop() -> int:
        with httpx.Client(base_url=daemon.url()) as client:
            report(client, "A", username="alice", token=None, msgs=APNS)
            answer = client.post("/api/v1/push", headers={"Authorization": f"Bearer {KEY}"},
                                 json={"username": "alice", "verb": TEXT, "message": "bye"})
            assert answer.status_code == 200, answer.text
        return daemon.stop()  # at once: the record is still waiting to be written

    assert await trio.to_thread.run_sync(push_then_stop) == 0
    (record,) = records(engine)
    assert (record.outcome, record.message) == ("sent", "pnmediator HTTP 200: OK")


async def test_records_older_than_push_history_are_pruned(engine, start_daemon, stub):
    daemon = await start_daemon(
        engine.tables(push_config(stub) | {"storage": {"push_history": "2s"}}))
    await report(daemon, "A", username="alice", token=None, msgs=APNS)
    await push(daemon, {"username": "alice", "verb": TEXT, "message": "old"})
    await recorded(daemon, 1)
    started = time.monotonic()
    await wait_until(lambda: not records(daemon), timeout=6.0)  # pruned every second
    assert time.monotonic() - started > 0.5


async def test_at_most_push_history_max_records_are_kept(engine, start_daemon, stub):
    daemon = await start_daemon(engine.tables(
        push_config(stub) | {"storage": {"push_history": "10s", "push_history_max": 2}}))
    await report(daemon, "A", username="alice", token=None, msgs=APNS)
    for n in range(3):
        await push(daemon, {"username": "alice", "verb": TEXT, "message": "m", "id": f"m{n}"})
        await recorded(daemon, 1, id=f"m{n}")
    await wait_until(lambda: len(records(daemon)) == 2, timeout=6.0)
    assert [r.id for r in records(daemon)] == ["m2", "m1"]  # the newest kept


async def test_push_history_max_0_records_nothing(engine, start_daemon, stub):
    daemon = await start_daemon(
        engine.tables(push_config(stub) | {"storage": {"push_history_max": 0}}))
    await report(daemon, "A", username="alice", token=None, msgs=APNS)
    answer = await push(daemon, {"username": "alice", "verb": TEXT, "message": "m"})
    assert answer.json()["devices"][0]["outcome"] == "sent"
    await trio.sleep(1.0)  # twice the time a record takes to be written
    assert records(daemon) == []
    assert await metric(daemon, "pnbridge_push_history_written_total") == 0


async def test_a_locked_database_neither_delays_nor_fails_a_push(engine, start_daemon, stub):
    daemon = await start_daemon(
        engine.tables(push_config(stub) | {"storage": {"busy_timeout": 1.0}}))
    await report(daemon, "A", username="alice", token=None, msgs=APNS)
    with engine.locked():
        started = time.monotonic()
        answer = await push(daemon, {"username": "alice", "verb": TEXT, "message": "m",
                                     "id": "while-locked"})
        assert time.monotonic() - started < 0.8  # less than one wait for the lock
        assert answer.json()["devices"][0]["outcome"] == "sent"
        failing = 'pnbridge_task_errors_total{task="push history"}'
        with trio.fail_after(10):
            # Tried, failed, kept. (A scrape waits for the lock too: the devices gauge.)
            while not await metric(daemon, failing):
                await trio.sleep(0.05)
        assert records(daemon) == []
    assert (await recorded(daemon, 1, id="while-locked"))["A"].outcome == "sent"
    assert await metric(daemon, "pnbridge_push_history_written_total") == 1


def record(n: int) -> PushRecord:
    return PushRecord(time=1_700_000_000.0 + n, verb=TEXT, id=f"r{n}", username="u",
                      selector="S", pair="msgs", token="tok…ab", appid="com.app",
                      outcome="sent", code=200, message="", attempts=1, latency=0.01,
                      requester="cli")


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def test_a_full_buffer_drops_and_counts_and_keeps_the_rest(engine):
    metrics = Metrics()
    storage = engine.config(busy_timeout=0.1)
    async with open_writer(storage) as writer, trio.open_nursery() as nursery:
        history = PushHistory(writer, storage, metrics, limit=3)
        with engine.locked():
            await nursery.start(history.run)
            for n in range(5):
                history.add(record(n))  # the store is locked: they wait
            assert history.waiting == 3
            assert sample(metrics, "pnbridge_push_history_dropped_total") == 2
            await trio.sleep(0.8)  # a write (after 0.5 s) failed meanwhile: kept
            assert history.waiting == 3
            assert sample(metrics, "pnbridge_task_errors_total", task="push history") >= 1
        await wait_until(lambda: history.waiting == 0)
        nursery.cancel_scope.cancel()
    assert [r.id for r in records(engine)] == ["r2", "r1", "r0"]
    assert sample(metrics, "pnbridge_push_history_written_total") == 3
