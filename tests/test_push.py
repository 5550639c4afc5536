"""The push API and the pnmediator plugin, against a real local HTTP server standing in for
pnmediator (tests/pnmediator_stub.py): pairs and fields, fan-out, deadlines, retries,
rejected tokens, authentication and body checks."""

from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import Daemon, cli, pnbridge
from plugintools import install_plugins, lines, wait_until
from pnbridge.model import Report
from pnbridge.storage.sqlite.store import SQLiteStore
from pnmediator_stub import (
    BODY_404,
    DROP,
    HTTP_400,
    HTTP_404,
    HTTP_500,
    KEY,
    Answer,
    Stub,
    push_config,
    slow,
)
from reports import report

CALL = "NotifyIncomingCall"


@pytest.fixture
async def daemon(start_daemon, stub) -> Daemon:
    return await start_daemon(push_config(stub, NotifyIncomingCall=2.0))


async def push(daemon: Daemon, body: Any, key: str | None = KEY) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return await daemon.client.post("/api/v1/push", content=content, headers=headers)


def by_selector(answer: Any) -> dict[str, dict[str, Any]]:
    return {d["selector"]: d for d in answer.json()["devices"]}


async def test_call_push_reaches_every_device_with_the_right_pair_and_fields(daemon, stub):
    await report(daemon, username="alice",
                 token=None, selector="IPHONE", calls="voip-tok", msgs="apns-tok")
    await report(daemon, username="alice", token=None, selector="ANDROID", msgs="fcm-tok")
    await report(daemon, username="bob",
                 token=None, selector="BOBS", calls="bob-voip", msgs="bob-apns")
    answer = await push(daemon, {
        "username": "alice", "verb": CALL, "id": "call-1@pbx", "display_name": "Carol",
        "badge": 3, "sound": "ring.caf", "thread_id": "t1", "message": "Call from Carol",
    })
    assert answer.status_code == 200, answer.text
    assert answer.json()["username"] == "alice" and answer.json()["verb"] == CALL
    assert by_selector(answer) == {
        "IPHONE": {"selector": "IPHONE", "pair": "calls", "outcome": "sent", "attempts": 1},
        "ANDROID": {"selector": "ANDROID", "pair": "msgs", "outcome": "sent", "attempts": 1},
    }
    fields = {"verb": CALL, "Id": "call-1@pbx", "UserDisplayName": "Carol", "Badge": 3,
              "Sound": "ring.caf", "ThreadId": "t1", "Message": "Call from Carol"}
    assert sorted(stub.requests, key=lambda r: r["Selector"]) == [
        {**fields, "AppId": "com.app", "DeviceToken": "fcm-tok", "Selector": "ANDROID"},
        {**fields, "AppId": "com.app.voip", "DeviceToken": "voip-tok", "Selector": "IPHONE"},
    ]
    assert set(stub.paths) == {"/pnm2/send"}

    for verb in ("NotifyIncomingCallMissed", "NotifyIncomingCallAnsweredElsewhere"):
        stub.requests.clear()
        answer = await push(daemon, {"username": "alice", "verb": verb, "id": "call-1@pbx"})
        assert [d["outcome"] for d in answer.json()["devices"]] == ["sent", "sent"]
        assert sorted((r["verb"], r["Id"], r["DeviceToken"]) for r in stub.requests) == [
            (verb, "call-1@pbx", "fcm-tok"), (verb, "call-1@pbx", "voip-tok")]


async def test_message_push_never_uses_a_pushkit_token(daemon, stub):
    await report(daemon, username="alice",
                 token=None, selector="IPHONE", calls="voip-tok", msgs="apns-tok")
    await report(daemon, username="alice",
                 token=None, selector="NEW-IPHONE",
                 calls="voip-only")  # "other" token not yet know)
    for verb in ("NotifyTextMessage", "NotifyGenericTextMessage"):
        stub.requests.clear()
        answer = await push(daemon, {"username": "alice", "verb": verb, "message": "hi"})
        assert by_selector(answer) == {
            "IPHONE": {"selector": "IPHONE", "pair": "msgs", "outcome": "sent", "attempts": 1},
            "NEW-IPHONE": {"selector": "NEW-IPHONE", "pair": None, "outcome": "skipped",
                           "attempts": 0, "reason": "no msgs token (a PushKit calls token "
                                                    "is never used for messages)"},
        }
        assert [(r["verb"], r["DeviceToken"], r["Message"]) for r in stub.requests] == [
            (verb, "apns-tok", "hi")]


async def test_selector_narrows_the_push_to_one_device(daemon, stub):
    await report(daemon, username="alice", token=None, selector="A", msgs="tok-a")
    await report(daemon, username="alice", token=None, selector="B", msgs="tok-b")
    answer = await push(daemon, {"username": "alice", "verb": "NotifyTextMessage",
                                 "selector": "B"})
    assert list(by_selector(answer)) == ["B"]
    assert [r["DeviceToken"] for r in stub.requests] == ["tok-b"]


@pytest.mark.parametrize("rejection", [BODY_404, HTTP_404], ids=["body-code-404", "http-404"])
async def test_rejected_token_removes_the_device_with_an_event(daemon, stub, rejection):
    await report(daemon, username="alice", token=None, selector="GONE", msgs="dead-tok")
    await report(daemon, username="alice", token=None, selector="KEPT", msgs="live-tok")
    stub.answer("dead-tok", rejection)
    answer = await push(daemon, {"username": "alice", "verb": "NotifyTextMessage"})
    gone = by_selector(answer)["GONE"]
    assert (gone["outcome"], gone["pair"]) == ("removed", "msgs")
    assert "code 404" in gone["reason"] or "HTTP 404" in gone["reason"]
    assert gone["reason"].endswith("device removed")
    assert by_selector(answer)["KEPT"]["outcome"] == "sent"

    listed = cli("devices", "list", "--json", env=_env(daemon))
    assert listed.returncode == 0, listed.stderr
    assert [d["selector"] for d in json.loads(listed.stdout)] == ["KEPT"]
    store = daemon.store()
    removal = store.events()[-1]
    store.close()
    assert (removal.kind, removal.reason, removal.selector) == ("removed", "invalid-token", "GONE")
    assert removal.before is not None and removal.before.token_msgs == "dead-tok"
    assert removal.source["route"] == "/api/v1/push"
    # Gone is gone: the next push does not try it again.
    stub.requests.clear()
    await push(daemon, {"username": "alice", "verb": "NotifyTextMessage"})
    assert [r["DeviceToken"] for r in stub.requests] == ["live-tok"]


async def test_rejected_pushkit_token_clears_that_pair_and_keeps_the_device(daemon, stub):
    await report(daemon, username="alice",
                 token=None, selector="IPHONE", calls="old-voip", msgs="apns-tok")
    stub.answer("old-voip", HTTP_404)
    answer = await push(daemon, {"username": "alice", "verb": CALL, "id": "c2"})
    device = by_selector(answer)["IPHONE"]
    assert (device["outcome"], device["pair"]) == ("removed", "calls")
    assert device["reason"].endswith("calls pair cleared, device kept")
    store = daemon.store()
    kept = store.device("IPHONE")
    event = store.events()[-1]
    store.close()
    assert kept is not None
    assert (kept.token_calls, kept.appid_calls, kept.token_msgs) == (None, None, "apns-tok")
    assert (event.kind, event.reason) == ("registered", "invalid-token")
    assert event.before.token_calls == "old-voip" and event.after.token_calls is None
    # Calls now fall back to the remaining pair.
    stub.requests.clear()
    await push(daemon, {"username": "alice", "verb": CALL, "id": "c3"})
    assert [r["DeviceToken"] for r in stub.requests] == ["apns-tok"]


async def test_rejected_token_reaches_the_plugins_as_device_removed(start_daemon, stub,
                                                                    tmp_path):
    install_plugins(tmp_path / "plugins", "push/removals")
    seen = tmp_path / "removals.txt"
    config = push_config(stub)
    config["plugins"] |= {"enabled": ["pnmediator", "removals"],
                          "paths": [str(tmp_path / "plugins")],
                          "removals": {"path": str(seen)}}
    daemon = await start_daemon(config)
    await report(daemon, username="alice", token=None, selector="GONE", msgs="dead-tok")
    stub.answer("dead-tok", BODY_404)
    await push(daemon, {"username": "alice", "verb": "NotifyTextMessage"})
    assert await wait_until(lambda: lines(seen)) == ["GONE invalid-token dead-tok"]


async def test_hook_send_push_first_answer_wins_none_falls_through(start_daemon, stub,
                                                                   tmp_path):
    """A transport plugin enabled after pnmediator is asked first; what it leaves (None)
    goes on to pnmediator; its invalid-token clears the token like pnmediator's 404."""
    install_plugins(tmp_path / "plugins", "push/owntransport")
    config = push_config(stub)
    config["plugins"] |= {"enabled": ["pnmediator", "owntransport"],
                          "paths": [str(tmp_path / "plugins")]}
    daemon = await start_daemon(config)
    await report(daemon, username="alice",
                 token=None, selector="MINE", calls="own:voip", msgs="own:msgs")
    await report(daemon, username="alice", token=None, selector="GONE", msgs="own:gone")
    await report(daemon, username="alice", token=None, selector="OTHER", msgs="pnm-tok")
    answer = await push(daemon, {"username": "alice", "verb": CALL, "id": "c9", "badge": 1})
    assert {s: (d["outcome"], d["pair"]) for s, d in by_selector(answer).items()} == {
        "MINE": ("sent", "calls"), "GONE": ("removed", "msgs"), "OTHER": ("sent", "msgs")}
    assert by_selector(answer)["GONE"]["reason"].startswith("token rejected (unknown subscriber)")
    assert [r["DeviceToken"] for r in stub.requests] == ["pnm-tok"]
    import pnbridge_plugin_owntransport as plugin

    mine = next(p for p in plugin.seen if p.device.selector == "MINE")
    assert (mine.verb, mine.pair, mine.token, mine.appid, mine.id, mine.badge, mine.attempt) == (
        CALL, "calls", "own:voip", "com.app.voip", "c9", 1, 1)
    store = daemon.store()
    assert store.device("GONE") is None
    store.close()


def test_a_rejected_token_that_was_replaced_meanwhile_is_kept(tmp_path):
    store = SQLiteStore(tmp_path / "db")
    with store.transaction():
        store.register(Report("token", "u", "S", token_msgs="new"), {}, 1.0)
        assert store.reject_token("S", "msgs", "old", {}, 2.0) is None
        assert store.reject_token("GONE", "msgs", "old", {}, 2.0) is None
    assert store.device("S").token_msgs == "new"
    assert len(store.events()) == 1


async def test_slow_device_does_not_delay_the_answer_past_the_deadline(start_daemon, stub,
                                                                     virtual_clock):
    daemon = await start_daemon(push_config(stub, NotifyIncomingCall=1.0) | {
        "plugins": {"enabled": ["pnmediator"],
                    "pnmediator": {"url": stub.url, "timeout": 30.0}}})
    await report(daemon, username="alice", token=None, selector="FAST", msgs="fast-tok")
    await report(daemon, username="alice", token=None, selector="SLOW", msgs="slow-tok")
    await report(daemon, username="alice", token=None, selector="SILENT", msgs="silent-tok")
    stub.answer("slow-tok", slow(10))
    stub.answer("silent-tok", Answer(delay=1000))
    started = trio.current_time()
    answer = await push(daemon, {"username": "alice", "verb": CALL, "id": "c"})
    took = trio.current_time() - started
    assert 1.0 <= took < 1.5, took
    devices = by_selector(answer)
    assert devices["FAST"]["outcome"] == "sent"
    for selector in ("SLOW", "SILENT"):
        assert devices[selector]["outcome"] == "failed"
        assert "within the 1 s deadline" in devices[selector]["reason"]


@pytest.mark.parametrize(
    "transient",
    [HTTP_500, Answer(429), Answer(503, {"code": 503}, headers={"Retry-After": "0"}),
     Answer(200, {"code": 500, "response": "busy"}), DROP, slow(2)],
    ids=["http-500", "http-429", "http-503-retry-after", "body-code-500", "no-answer",
         "too-slow"],
)
async def test_transient_errors_are_retried(daemon, stub, transient):
    await report(daemon, username="alice", token=None, selector="A", msgs="tok")
    stub.answer("tok", transient, transient)
    answer = await push(daemon, {"username": "alice", "verb": CALL, "id": "c"})
    assert by_selector(answer)["A"] == {"selector": "A", "pair": "msgs", "outcome": "sent",
                                        "attempts": 3}
    assert len(stub.to("tok")) == 3


async def test_retry_after_is_honoured_within_the_deadline(start_daemon, stub, virtual_clock):
    daemon = await start_daemon(push_config(stub, NotifyTextMessage=3.0))
    await report(daemon, username="alice", token=None, selector="A", msgs="tok")
    await report(daemon, username="alice", token=None, selector="B", msgs="tok-b")
    stub.answer("tok", Answer(429, {"code": 429}, headers={"Retry-After": "1"}))
    stub.answer("tok-b", Answer(429, {"code": 429}, headers={"Retry-After": "60"}))
    started = trio.current_time()
    answer = await push(daemon, {"username": "alice", "verb": "NotifyTextMessage"})
    assert trio.current_time() - started < 2.5
    devices = by_selector(answer)
    assert devices["A"]["outcome"] == "sent" and devices["A"]["attempts"] == 2
    gap = [t for t, r in zip(stub.times, stub.requests, strict=True) if r["DeviceToken"] == "tok"]
    assert gap[1] - gap[0] >= 0.95
    # A Retry-After beyond the deadline is not waited for.
    assert devices["B"]["outcome"] == "failed" and devices["B"]["attempts"] == 1
    assert "HTTP 429" in devices["B"]["reason"]


async def test_permanent_error_is_not_retried(daemon, stub):
    await report(daemon, username="alice", token=None, selector="A", msgs="tok")
    stub.answer("tok", HTTP_400)
    answer = await push(daemon, {"username": "alice", "verb": "NotifyTextMessage"})
    assert by_selector(answer)["A"] == {
        "selector": "A", "pair": "msgs", "outcome": "failed", "attempts": 1,
        "reason": "pnmediator HTTP 400: Missing AppId"}
    assert len(stub.requests) == 1


async def test_one_pooled_connection_serves_many_pushes(daemon, stub):
    await report(daemon, username="alice", token=None, selector="A", msgs="tok")
    for _ in range(5):
        await push(daemon, {"username": "alice", "verb": "NotifyTextMessage"})
    assert len(stub.requests) == 5
    assert stub.connections == 1


async def test_pushes_under_way_never_exceed_max_in_flight(start_daemon, stub):
    config = push_config(stub, NotifyTextMessage=5.0)
    config["plugins"]["pnmediator"]["max_in_flight"] = 2
    daemon = await start_daemon(config)
    for i in range(5):
        await report(daemon, username="alice", token=None, selector=f"D{i}", msgs=f"tok{i}")
        stub.answer(f"tok{i}", slow(0.2))
    answer = await push(daemon, {"username": "alice", "verb": "NotifyTextMessage"})
    assert [d["outcome"] for d in answer.json()["devices"]] == ["sent"] * 5
    assert stub.most_in_flight == 2
    assert stub.connections == 2


async def test_a_connection_pnmediator_closes_is_replaced(daemon, stub):
    await report(daemon, username="alice", token=None, selector="A", msgs="tok")
    stub.answer("tok", Answer(headers={"connection": "close"}))
    for _ in range(3):
        answer = await push(daemon, {"username": "alice", "verb": "NotifyTextMessage"})
        assert by_selector(answer)["A"]["outcome"] == "sent"
    assert len(stub.requests) == 3
    assert stub.connections == 2


async def test_pushes_go_through_the_configured_proxy(start_daemon, stub):
    # The stub plays the proxy: it answers the forwarded request itself.
    target = "http://pnm.invalid/pnm2/send"
    proxy = "http://pbx%40example:s3cret@" + stub.url.split("/")[2]
    daemon = await start_daemon({
        "api": {"keys": [KEY]},
        "plugins": {"enabled": ["pnmediator"],
                    "pnmediator": {"url": target, "timeout": 0.5, "proxy": proxy}},
    })
    await report(daemon, username="alice", token=None, selector="A", msgs="tok")
    answer = await push(daemon, {"username": "alice", "verb": "NotifyTextMessage"})
    assert by_selector(answer)["A"]["outcome"] == "sent"
    assert stub.paths == [target]
    assert stub.headers[0]["proxy-authorization"] == (
        "Basic " + base64.b64encode(b"pbx@example:s3cret").decode())
    assert stub.requests[0]["DeviceToken"] == "tok"


async def test_unknown_user_is_404_with_a_json_reason(daemon, stub):
    await report(daemon, username="alice", token=None, selector="A", msgs="tok")
    answer = await push(daemon, {"username": "nobody", "verb": "NotifyTextMessage"})
    assert answer.status_code == 404
    assert answer.json() == {"error": "no device of this user", "username": "nobody"}
    answer = await push(daemon, {"username": "alice", "verb": "NotifyTextMessage",
                                 "selector": "B"})
    assert answer.status_code == 404 and "selector" in answer.json()["error"]
    assert stub.requests == []


async def test_api_is_off_without_keys(start_daemon, stub):
    daemon = await start_daemon(push_config(stub) | {"api": {"keys": []}})
    await report(daemon, username="alice", token=None, selector="A", msgs="tok")
    answer = await push(daemon, {"username": "alice", "verb": "NotifyTextMessage"})
    assert answer.status_code == 404
    assert stub.requests == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-0000000000000"}, {"Authorization": KEY},
     {"Authorization": f"Basic {KEY}"}, {"Authorization": f"Bearer {KEY}x"},
     {"Authorization": "Bearer"}],
    ids=["none", "wrong", "no-scheme", "basic", "longer", "empty"],
)
async def test_missing_or_wrong_key_is_401_and_sends_nothing(daemon, stub, headers):
    await report(daemon, username="alice", token=None, selector="A", msgs="tok")
    answer = await daemon.client.post(
        "/api/v1/push", json={"username": "alice", "verb": "NotifyTextMessage"},
        headers=headers)
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert answer.json() == {"error": "missing or wrong API key"}
    assert stub.requests == []


@pytest.mark.parametrize(
    ("body", "field"),
    [("not json", "body"), (b"\xff\xfe", "body"), ("[1, 2]", "body"), ({}, "username"),
     ({"verb": CALL, "id": "c"}, "username"), ({"username": "alice", "id": "c"}, "verb"),
     ({"username": "alice", "verb": "NotifyEverything"}, "verb"),
     ({"username": "alice", "verb": CALL}, "id"),
     ({"username": "alice", "verb": "NotifyIncomingCallMissed", "id": ""}, "id"),
     ({"username": "alice", "verb": "NotifyTextMessage", "badge": "3"}, "badge"),
     ({"username": "alice", "verb": "NotifyTextMessage", "badge": -1}, "badge"),
     ({"username": "alice", "verb": "NotifyTextMessage", "badge": True}, "badge"),
     ({"username": "alice", "verb": "NotifyTextMessage", "badge": 2**31}, "badge"),
     ({"username": "alice", "verb": "NotifyTextMessage", "badge": int("9" * 40)}, "badge"),
     ({"username": 1001, "verb": "NotifyTextMessage"}, "username"),
     ({"username": "alice", "verb": "NotifyTextMessage", "message": ["x"]}, "message"),
     ({"username": "alice", "verb": "NotifyTextMessage", "displayName": "x"}, "displayName"),
     ({"username": "alice", "verb": CALL, "id": "c\x00d"}, "id")],  # no store keeps a NUL
)
async def test_malformed_body_is_400_naming_the_field_and_sends_nothing(daemon, stub, body,
                                                                        field):
    await report(daemon, username="alice", token=None, selector="A", msgs="tok")
    answer = await push(daemon, body)
    assert answer.status_code == 400
    assert answer.json()["field"] == field
    assert answer.json()["error"].startswith(f"{field}: ")
    assert stub.requests == []


async def test_push_metrics_count_outcomes(daemon, stub):
    await report(daemon, username="alice", token=None, selector="A", msgs="tok")
    await report(daemon, username="alice", token=None, selector="B", msgs="dead")
    stub.answer("dead", HTTP_404)
    await push(daemon, {"username": "alice", "verb": "NotifyTextMessage"})
    metrics = (await daemon.client.get("/metrics")).text
    assert 'pnbridge_pushes_total{outcome="sent",verb="NotifyTextMessage"} 1.0' in metrics
    assert 'pnbridge_pushes_total{outcome="removed",verb="NotifyTextMessage"} 1.0' in metrics
    assert 'pnbridge_push_duration_seconds_count{verb="NotifyTextMessage"} 2.0' in metrics


def _env(daemon: Daemon) -> dict[str, str]:
    """The environment for a pnbridge command on the daemon's database."""
    path = os.path.join(os.path.dirname(daemon.db_path), "cli.toml")
    with open(path, "w") as file:
        file.write(f'[storage]\npath = "{daemon.db_path}"\n')
    return {**os.environ, "PNBRIDGE_CONFIG": path}


def cli_setup(tmp_path: Path, stub: Stub, *more: Report) -> tuple[Path, Path]:
    """A database with alice's device A (and ``more``), and a config for ``pnbridge push``
    with pnmediator at ``stub``: their paths."""
    db = tmp_path / "cli.db"
    store = SQLiteStore(db)
    with store.transaction():
        for report_ in (Report("token", "alice", "A", token_msgs="tok-a", appid_msgs="com.app"),
                        *more):
            store.register(report_, {}, time.time())
    store.close()
    config = tmp_path / "cli.toml"
    config.write_text(f'[storage]\npath = "{db}"\n[plugins]\nenabled = ["pnmediator"]\n'
                      f'[plugins.pnmediator]\nurl = "{stub.url}"\n')
    return db, config


async def test_cli_push_goes_through_the_same_code_path(stub, tmp_path):
    db, config = cli_setup(tmp_path, stub, Report(
        "token", "alice", "B", token_calls="dead-voip", appid_calls="com.app.voip",
        token_msgs="tok-b", appid_msgs="com.app"))
    stub.answer("dead-voip", HTTP_404)

    def run(*args: str) -> Any:
        return pnbridge("push", "--config", str(config), *args)

    result = await trio.to_thread.run_sync(lambda: run(
        CALL, "--username", "alice", "--id", "c1", "--display-name", "Carol", "--badge", "2"))
    assert result.returncode == 0, result.stderr
    rows = [line.split(None, 4) for line in result.stdout.splitlines()]
    assert rows[0] == ["SELECTOR", "PAIR", "OUTCOME", "ATTEMPTS", "REASON"]
    assert rows[1] == ["A", "msgs", "sent", "1", "-"]
    assert rows[2][:4] == ["B", "calls", "removed", "1"]
    assert sorted((r["DeviceToken"], r["Id"], r["UserDisplayName"], r["Badge"])
                  for r in stub.requests) == [("dead-voip", "c1", "Carol", 2),
                                              ("tok-a", "c1", "Carol", 2)]
    store = SQLiteStore(db)
    assert store.device("B").token_calls is None
    assert store.events()[-1].source == {"command": "push", "requester": "cli"}
    store.close()

    stub.requests.clear()
    result = await trio.to_thread.run_sync(lambda: run(
        "NotifyTextMessage", "--username", "alice", "--selector", "B", "--message", "hi",
        "--json"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["devices"] == [
        {"selector": "B", "pair": "msgs", "outcome": "sent", "attempts": 1}]
    assert [(r["DeviceToken"], r["Message"]) for r in stub.requests] == [("tok-b", "hi")]


async def test_cli_push_errors(stub, tmp_path):
    db, config = cli_setup(tmp_path, stub)
    bare = tmp_path / "bare.toml"
    bare.write_text(f'[storage]\npath = "{db}"\n')
    stub.answer("tok-a", HTTP_400)
    cases = [
        (config, [CALL, "--username", "alice"], "--id: required for NotifyIncomingCall"),
        (config, ["NotifyTextMessage", "--username", "nobody"], "no device of user nobody"),
        (bare, ["NotifyTextMessage", "--username", "alice"], "no enabled plugin sends pushes"),
        (config, ["NotifyTextMessage", "--username", "alice"], None),  # sent nowhere: exit 1
    ]
    for path, args, error in cases:
        result = await trio.to_thread.run_sync(
            lambda p=path, a=args: pnbridge("push", "--config", str(p), *a))
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        if error:
            assert error in result.stderr, result.stderr
        else:
            assert "failed" in result.stdout and "HTTP 400" in result.stdout
    assert len(stub.requests) == 1


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "expected"),
    [(200, {"code": 200, "response": "OK"}, None, ("sent", "pnmediator HTTP 200: OK", None)),
     (200, None, None, ("sent", "pnmediator HTTP 200", None)),
     (202, {"response": "queued"}, None, ("sent", "pnmediator HTTP 202: queued", None)),
     (200, {"code": 404, "response": "gone"}, None,
      ("invalid-token", "pnmediator code 404: gone", None)),
     (200, {"code": "404"}, None, ("invalid-token", "pnmediator code 404", None)),
     (200, {"code": " 200 "}, None, ("sent", "pnmediator HTTP 200", None)),
     (200, {"code": True}, None, ("sent", "pnmediator HTTP 200", None)),
     (200, [404], None, ("sent", "pnmediator HTTP 200", None)),
     (404, {"code": 404}, None, ("invalid-token", "pnmediator code 404", None)),
     (500, {"code": 404.0}, None, ("invalid-token", "pnmediator code 404", None)),
     (404, {}, None, ("failed", "HTTP 404 without pnmediator's JSON code 404, not "
                               "pnmediator's answer: likely a configuration error (a wrong "
                               "url, or a proxy)", None)),
     (404, None, None, ("failed", "HTTP 404 without pnmediator's JSON code 404, not "
                                 "pnmediator's answer: likely a configuration error (a wrong "
                                 "url, or a proxy)", None)),
     (400, {"code": 400, "response": "no AppId"}, None,
      ("failed", "pnmediator HTTP 400: no AppId", None)),
     (200, {"code": 400}, None, ("failed", "pnmediator code 400", None)),
     (403, None, None, ("failed", "pnmediator HTTP 403", None)),
     (429, None, "7", ("retry", "pnmediator HTTP 429", 7.0)),
     (429, None, "soon", ("retry", "pnmediator HTTP 429", None)),
     (503, None, "Wed, 21 Oct 2015 07:28:00 GMT", ("retry", "pnmediator HTTP 503", 0.0)),
     (500, None, None, ("retry", "pnmediator HTTP 500", None)),
     (200, {"code": 502}, None, ("retry", "pnmediator code 502", None)),
     (301, None, None, ("failed", "pnmediator HTTP 301", None))],
)
def test_pnmediator_answers_map_to_outcomes(status, body, retry_after, expected):
    from pnbridge.plugins.pnmediator import outcome

    result = outcome(status, body, retry_after)
    assert (result.outcome, result.reason, result.retry_after) == expected
    assert result.code == status  # the HTTP status of every answer, for the push history


def test_push_settings_errors_name_the_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[plugins]\nenabled = ["pnmediator"]\n[plugins.pnmediator]\n'
                    'url = "ftp://x"\ntimeout = 0\nmax_in_flight = 0\nproxy = "socks5://p:1080"\n')
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 1
    for line in ("plugins.pnmediator.url: must be an http(s):// URL",
                 "plugins.pnmediator.timeout: must be greater than 0",
                 "plugins.pnmediator.max_in_flight: must be greater than 0",
                 "plugins.pnmediator.proxy: must be an http(s):// URL (or empty: no proxy)"):
        assert line in result.stderr
    path.write_text('[api]\nkeys = ["short"]\n[api.deadlines]\nNotifyIncomingCall = 0\n'
                    'NotifyEverything = 1\n')
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 1
    for line in ("api.keys: key(s) at index 0 shorter than 16 characters",
                 "api.deadlines.NotifyIncomingCall: must be greater than 0",
                 "api.deadlines.NotifyEverything: unknown key"):
        assert line in result.stderr
