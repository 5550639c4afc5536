"""The webhook plugin against real local HTTP receivers that check the signature with the
receiver example of docs/plugins/webhook.md."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import reports
import trio
from conftest import cli
from plugintools import wait_until
from webhook_receiver import SECRET, TOKEN, verify

FAST = {"backoff": 0.01, "max_backoff": 0.05}


def webhook(urls: list, **settings: Any) -> dict:
    delivery = settings.pop("delivery", FAST)
    return {"plugins": {"enabled": ["webhook"], "webhook": {
        "urls": urls, "secret": SECRET, "delivery": delivery, **settings,
    }}}


report = partial(reports.report, username="1001", token=TOKEN, pushappid="app.id",
                 password="hunter2")


def failed_events(daemon, tmp_path: Path) -> list[dict]:
    config = tmp_path / "cli.toml"
    config.write_text(f'[storage]\npath = "{daemon.db_path}"\n')
    result = cli("events", "--failed", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


async def test_every_event_arrives_signed_and_deduplicable(start_daemon, receivers):
    receiver = receivers()
    daemon = await start_daemon(webhook([receiver.url]))
    await report(daemon, "S1")
    await report(daemon, "S1", token=TOKEN + "2")
    await report(daemon, "S1", path="/removeToken/")
    await wait_until(lambda: len(receiver.accepted) == 3)
    journal = daemon.store().events()
    assert list(receiver.accepted) == [e.id for e in journal]
    assert receiver.forged == 0
    for (headers, payload), event in zip(receiver.requests, journal, strict=True):
        assert headers["X-Pnbridge-Event-Id"] == payload["id"] == event.id
        assert abs(int(headers["X-Pnbridge-Timestamp"]) - time.time()) < 10
        assert headers["X-Pnbridge-Signature"].startswith("v1=")
        assert headers["Content-Type"] == "application/json"
        assert payload["seq"] == event.seq and payload["kind"] == event.kind
        assert payload["reason"] == event.reason
        assert payload["username"] == "1001" and payload["selector"] == "S1"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", payload["time"])
        assert payload["appid_msgs"] == "app.id"
        assert payload["source"]["route"] in ("/token/", "/removeToken/")
    new, changed, removed = (p for _, p in receiver.requests)
    assert (new["reason"], new["before"], new["after"]["token_msgs"]) == ("new", None, TOKEN)
    assert changed["before"]["token_msgs"] == TOKEN
    assert changed["token_msgs"] == changed["after"]["token_msgs"] == TOKEN + "2"
    assert (removed["kind"], removed["after"], removed["token_msgs"]) == \
        ("removed", None, TOKEN + "2")
    assert all("hunter2" not in json.dumps(p) for _, p in receiver.requests)


async def test_503_then_200_loses_nothing_and_keeps_order(start_daemon, receivers):
    """The receiver is down (503) for its first 6 requests: every event arrives, each
    device's events in the order they happened, and the journal order holds overall."""
    calls = {"n": 0}

    def answer(payload: dict) -> int:
        calls["n"] += 1
        return 503 if calls["n"] <= 6 else 200

    receiver = receivers(answer=answer)
    daemon = await start_daemon(webhook([receiver.url]))
    for i in range(3):
        for selector in ("A", "B"):
            await report(daemon, selector, token=f"{TOKEN}-{selector}{i}")
    await report(daemon, "A", path="/removeToken/")
    await wait_until(lambda: len(receiver.accepted) == 7)
    journal = daemon.store().events()
    assert list(receiver.accepted) == [e.id for e in journal]
    for selector in ("A", "B"):
        tokens = [p["token_msgs"] for p in receiver.accepted.values()
                  if p["selector"] == selector and p["kind"] == "registered"]
        assert tokens == [f"{TOKEN}-{selector}{i}" for i in range(3)]
    assert calls["n"] == 6 + 7
    assert daemon.store().failures() == []


async def test_429_retry_after_is_honoured(start_daemon, receivers):
    """A backoff far longer than the test: only Retry-After can make it pass."""
    times: list[float] = []

    def answer(payload: dict) -> Any:
        times.append(time.monotonic())
        return (429, {"Retry-After": "1"}) if len(times) == 1 else 200

    receiver = receivers(answer=answer)
    daemon = await start_daemon(webhook(
        [receiver.url], delivery={"backoff": 60, "max_backoff": 60}
    ))
    await report(daemon, "S1")
    await wait_until(lambda: len(receiver.accepted) == 1)
    # Wall clock: the receiver's own thread stamps the requests; 1 s against a 30-60 s backoff.
    assert 1 <= times[1] - times[0] < 3


async def test_timeouts_and_408_are_retried(start_daemon, receivers):
    calls = {"n": 0}

    def answer(payload: dict) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(0.5)  # longer than the plugin's timeout
        return 408 if calls["n"] == 2 else 200

    receiver = receivers(answer=answer)
    daemon = await start_daemon(webhook([receiver.url], timeout=0.2))
    await report(daemon, "S1")
    await wait_until(lambda: len(receiver.accepted) == 1)
    assert calls["n"] == 3


async def test_400_parks_the_event_and_delivery_goes_on(start_daemon, receivers, tmp_path):
    receiver = receivers(answer=lambda p: 400 if p["selector"] == "BAD" else 200)
    daemon = await start_daemon(webhook([receiver.url]))
    for selector in ("OK1", "BAD", "OK2"):
        await report(daemon, selector)
    await wait_until(lambda: len(receiver.accepted) == 2)
    assert [p["selector"] for p in receiver.accepted.values()] == ["OK1", "OK2"]
    failed = await trio.to_thread.run_sync(failed_events, daemon, tmp_path)
    assert [(f["event"]["selector"], f["plugin"], f["attempts"]) for f in failed] == \
        [("BAD", "webhook", 1)]
    assert failed[0]["error"] == f"permanent failure: {receiver.url}: 400 Bad Request"


async def test_wrong_secret_is_detected_by_the_receiver(start_daemon, receivers, tmp_path):
    receiver = receivers(secret="the receiver's secret")
    daemon = await start_daemon(webhook([receiver.url]))
    await report(daemon, "S1")
    await wait_until(lambda: daemon.store().failures())
    assert receiver.forged == 1 and receiver.accepted == {}
    failed = await trio.to_thread.run_sync(failed_events, daemon, tmp_path)
    assert failed[0]["error"].endswith("401 Unauthorized")


def test_verify_rejects_tampering_and_stale_timestamps():
    body, stamp = b'{"id":"x"}', str(int(time.time()))
    good = "v1=" + hmac.new(SECRET.encode(), f"{stamp}.".encode() + body,
                            hashlib.sha256).hexdigest()
    headers = {"X-Pnbridge-Timestamp": stamp, "X-Pnbridge-Signature": good}
    assert verify(SECRET.encode(), headers, body)
    assert not verify(SECRET.encode(), headers, body + b" ")
    assert not verify(b"other", headers, body)
    assert not verify(SECRET.encode(), headers, body, now=time.time() + 600)
    assert not verify(SECRET.encode(), {**headers, "X-Pnbridge-Timestamp": "x"}, body)


async def test_several_urls_each_get_every_event_once(start_daemon, receivers):
    """The second receiver fails twice; the first, which took the event, is not sent it
    again. Each URL may have its own secret and timeout."""
    calls = {"n": 0}

    def flaky(payload: dict) -> int:
        calls["n"] += 1
        return 500 if calls["n"] <= 2 else 200

    steady = receivers()
    other = receivers(secret="other secret", answer=flaky)
    daemon = await start_daemon(webhook(
        [steady.url, {"url": other.url, "secret": "other secret", "timeout": 5}]
    ))
    await report(daemon, "S1")
    await report(daemon, "S2")
    await wait_until(lambda: len(other.accepted) == 2)
    ids = [e.id for e in daemon.store().events()]
    assert list(steady.accepted) == list(other.accepted) == ids
    assert len(steady.requests) == 2 and calls["n"] == 4
    assert steady.forged == other.forged == 0


async def test_redacted_tokens_and_kind_filter(start_daemon, receivers):
    receiver = receivers()
    daemon = await start_daemon(webhook(
        [receiver.url], redact_tokens=True, events=["removed"]
    ))
    await report(daemon, "S1")
    await report(daemon, "S1", path="/removeToken/")
    await wait_until(lambda: len(receiver.accepted) == 1)
    await trio.sleep(0.2)
    (payload,) = receiver.accepted.values()
    digest = "sha256:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:16]
    assert payload["kind"] == "removed"
    assert payload["token_msgs"] == payload["before"]["token_msgs"] == digest
    assert TOKEN not in json.dumps(payload)
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(("table", "error"), [
    ({"secret": "x"}, "plugins.webhook.urls: required key is missing"),
    ({"urls": [], "secret": "x"}, "plugins.webhook.urls: list at least one URL"),
    ({"urls": ["ftp://x"], "secret": "x"},
     "plugins.webhook.urls: item 0: 'ftp://x' is no http:// or https:// URL"),
    ({"urls": [{"url": "http://x", "timout": 1}], "secret": "x"},
     "plugins.webhook.urls: item 0: unknown key timout (known keys: url, secret, timeout)"),
    ({"urls": [3], "secret": "x"},
     "plugins.webhook.urls: item 0: expected a URL or a table { url = ... }, got 3"),
    ({"urls": ["http://x", {"url": "http://y", "timeout": "x"}], "secret": "x"},
     "plugins.webhook.urls: item 1: timeout: expected a number, got 'x'"),
    ({"urls": ["http://x"], "secret": ""}, "plugins.webhook.secret: must not be empty"),
    ({"urls": ["http://x"], "secret": "x", "events": ["added"]},
     "plugins.webhook.events[0]: expected one of 'registered', 'removed', got 'added'"),
    ({"urls": ["http://x"], "secret": "x", "timeout": 0},
     "plugins.webhook.timeout: must be more than 0"),
])
def test_bad_settings_name_the_key(tmp_path, table, error):
    lines = ['[plugins]', 'enabled = ["webhook"]', "[plugins.webhook]"]
    for key, value in table.items():
        lines.append(f"{key} = {_toml(value)}")
    config = tmp_path / "pnbridge.toml"
    config.write_text("\n".join(lines) + "\n")
    result = cli("check-config", "--config", str(config))
    assert result.returncode == 1
    assert f"error: {error}" in result.stderr


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


async def test_two_instances_post_apart(start_daemon, receivers):
    """Two instances of the built-in webhook (``[plugins.crm] plugin = "webhook"``), each
    with its own receiver, secret and retries: one receiver refusing (503) keeps the other
    from nothing, each signs with its own secret, and each parks apart."""
    good = receivers()
    down = receivers(secret="crm-secret", answer=lambda payload: 503)
    daemon = await start_daemon({"plugins": {
        "enabled": ["webhook", "crm"],
        "webhook": {"urls": [good.url], "secret": SECRET, "delivery": FAST},
        "crm": {"plugin": "webhook", "urls": [down.url], "secret": "crm-secret",
                "delivery": {**FAST, "max_attempts": 2}},
    }})
    await report(daemon, "S1")
    await report(daemon, "S2")
    await wait_until(lambda: len(good.accepted) == 2)
    await wait_until(lambda: len(daemon.store().failures()) == 2)
    journal = [e.id for e in daemon.store().events()]
    assert list(good.accepted) == journal
    assert (good.forged, down.forged) == (0, 0)  # each signed with its own secret
    assert [p["id"] for _, p in down.requests] == [journal[0]] * 2 + [journal[1]] * 2
    assert {(f.plugin, f.event.id) for f in daemon.store().failures()} == \
        {("crm", event_id) for event_id in journal}
