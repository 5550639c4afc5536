"""Outages of what the daemon talks to: a webhook receiver and pnmediator refusing
connections, timing out, answering 503, then back. Nothing is lost, each device's events
arrive in order, the retries show in /metrics, and reports are answered as fast as before."""

from __future__ import annotations

import statistics
import time

import trio
from configs import free_port
from plugintools import wait_until
from pnmediator_stub import DROP, HTTP_500, KEY, Answer, Stub, push_config, slow
from reports import report
from webhook_receiver import SECRET, Receiver

SELECTORS = ("A", "B", "C")
HTTP_503 = Answer(503, {"code": 503, "response": "Service unavailable"})


async def timed_reports(daemon, phase: str, rounds: int = 5) -> list[float]:
    """Report a new token for every device ``rounds`` times; each answer's latency."""
    took = []
    for i in range(rounds):
        for selector in SELECTORS:
            started = time.perf_counter()
            await report(daemon, selector,
                         username="alice", token=None, msgs=f"{phase}-{i}-{selector}")
            took.append(time.perf_counter() - started)
    return took


def assert_not_slower(before: list[float], during: list[float]) -> None:
    """A generous bound: the outage must not put the reporter behind the plugin."""
    assert statistics.median(during) < 5 * statistics.median(before) + 0.05, (before, during)
    assert max(during) < 1.0, during


async def test_webhook_receiver_outage_loses_nothing(start_daemon):
    port = free_port()
    receiver = Receiver(port=port)
    daemon = await start_daemon({"plugins": {"enabled": ["webhook"], "webhook": {
        "urls": [f"http://127.0.0.1:{port}/hook"], "secret": SECRET, "timeout": 0.3,
        "delivery": {"backoff": 0.05, "max_backoff": 0.3},
    }}})
    before = await timed_reports(daemon, "up")
    await wait_until(lambda: len(receiver.accepted) == 15)
    accepted = receiver.accepted
    during: list[float] = []
    await trio.to_thread.run_sync(receiver.close)  # refusing connections
    during += await timed_reports(daemon, "refused")
    receiver = Receiver(port=port, answer=lambda payload: time.sleep(0.6) or 503)  # timing out
    receiver.accepted = accepted  # one de-duplicating record across both receivers
    during += await timed_reports(daemon, "slow", rounds=2)
    await trio.sleep(0.5)
    receiver.answer = lambda payload: 503
    during += await timed_reports(daemon, "down")
    await trio.sleep(0.5)
    receiver.answer = lambda payload: 200
    try:
        journal = daemon.store().events()
        await wait_until(lambda: set(receiver.accepted) >= {e.id for e in journal}, timeout=20)
        assert len(journal) == 3 * 17
        for selector in SELECTORS:
            seqs = [p["seq"] for p in receiver.accepted.values() if p["selector"] == selector]
            assert seqs == sorted(seqs)
        metrics = (await daemon.client.get("/metrics")).text
        assert _sample(metrics, 'pnbridge_deliveries_total{outcome="retried",plugin="webhook"}') > 3
        assert daemon.store().failures() == []
        assert_not_slower(before, during)
    finally:
        await trio.to_thread.run_sync(receiver.close)


async def test_pnmediator_outage_fails_late_pushes_and_recovers(start_daemon, nursery):
    port = free_port()
    stub = Stub(port=port, url=f"http://127.0.0.1:{port}/pnm2/send")
    daemon = await start_daemon(push_config(stub, NotifyTextMessage=1.5, NotifyIncomingCall=4.0))
    before = await timed_reports(daemon, "up")
    body = {"username": "alice", "verb": "NotifyTextMessage", "message": "hi"}

    async def push_during_reports() -> tuple[dict, list[float]]:
        answers: dict = {}

        async def one() -> None:
            answers["push"] = (await _push(daemon, body)).json()

        async with trio.open_nursery() as both:
            both.start_soon(one)
            took = await timed_reports(daemon, "refused")
        return answers["push"], took

    refused, during = await push_during_reports()  # nothing listens: connection refused
    assert {d["outcome"] for d in refused["devices"]} == {"failed"}
    assert all(d["attempts"] > 1 for d in refused["devices"])
    await nursery.start(stub.serve)
    token = "refused-4-A"
    stub.answer(token, DROP, slow(0.8), HTTP_500, HTTP_503)  # then 200
    call = {"username": "alice", "verb": "NotifyIncomingCall", "id": "call-1"}
    answered = (await _push(daemon, call)).json()
    assert {d["outcome"] for d in answered["devices"]} == {"sent"}, answered
    outcome_a = next(d for d in answered["devices"] if d["selector"] == "A")
    assert outcome_a["attempts"] == 5
    assert len(stub.to(token)) == 5
    metrics = (await daemon.client.get("/metrics")).text
    assert _sample(metrics, 'pnbridge_pushes_total{outcome="failed",verb="NotifyTextMessage"}') == 3
    assert _sample(metrics, 'pnbridge_pushes_total{outcome="sent",verb="NotifyIncomingCall"}') == 3
    assert_not_slower(before, during)


async def _push(daemon, body: dict):
    return await daemon.client.post("/api/v1/push", json=body,
                                    headers={"Authorization": f"Bearer {KEY}"}, timeout=10)


def _sample(metrics: str, name: str) -> float:
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


