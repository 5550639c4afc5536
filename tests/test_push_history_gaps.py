"""What the push history must not miss: a push cut short by the daemon stopping (each device
whose push was under way, failed), a push to a user with no device or whose devices could not
be read (one ``skipped`` row for the request), on each store engine (the ``engine`` fixture);
and what it keeps bounded (a pnmediator message cut, a CLI table cell cut, ``--json`` whole).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import httpx
import trio
from conftest import pnbridge
from pnbridge.model import PushRecord
from pnbridge.ops.log import shorten
from pnmediator_stub import KEY, push_config, slow
from reports import report

CALL = "NotifyIncomingCall"
VOIP = "voip-0123456789abcdef-ok"
APNS = "apns-0123456789abcdef-ok"


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
