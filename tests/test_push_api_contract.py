"""The push API's contract with a PBX (issue 15): an accepted push runs to its deadline,
retries included, when the client leaves mid-push, and is logged and counted; every method
but POST is 405 with ``Allow: POST``; every answer, errors included, is one line of compact
JSON ending in ``\\n`` (Kamailio's http_client reads the first line). Against the real
daemon and a real local server standing in for pnmediator (tests/pnmediator_stub.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from conftest import Daemon, StartDaemon
from plugintools import install_plugins, wait_until
from pnmediator_stub import Answer, Stub
from reports import report

KEY = "contract-key-0123456789abcdef"
CALL = "NotifyIncomingCall"
PUSH = "/api/v1/push"
AUTH = {"Authorization": f"Bearer {KEY}"}


def push_config(stub: Stub, **api: Any) -> dict[str, Any]:
    return {
        "api": {"keys": [KEY], **api},
        "plugins": {"enabled": ["pnmediator"], "pnmediator": {"url": stub.url, "timeout": 1.0}},
    }


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text ``text`` (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.parametrize(("close", "status", "answer"), [
    ("reset", 499, "client-left"),  # the request is cancelled: the fan-out is not
    ("fin", 200, "200"),  # a whole request is answered, to whoever still reads
])
async def test_a_client_that_leaves_mid_push_does_not_cut_it_short(start_daemon, stub, caplog,
                                                                   close, status, answer):
    """The PBX's client gives up while pnmediator's first answer (503) is on its way: the
    retry still goes out, the device is sent the push, and the access log (the status, the
    verb, the username, the outcome counts), the device's line and the metrics record it.
    A reset connection (a client killed, SO_LINGER 0) cancels the request at once; 499 in
    the access log says the client left before the answer."""
    caplog.set_level(logging.INFO, logger="pnbridge")
    daemon = await start_daemon(push_config(stub, deadlines={CALL: 5.0}))
    await report(daemon, "IPHONE",
                 path="/token", username="alice", token="apns-tok", pushappid="com.app")
    stub.answer("apns-tok", Answer(503, {"code": 503, "response": "busy"}, delay=0.3))
    host, port = daemon.url.removeprefix("http://").split(":")
    body = json.dumps({"username": "alice", "verb": CALL, "id": "call-7@pbx"}).encode()
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(
        b"POST /api/v1/push HTTP/1.1\r\nHost: pbx\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    await wait_until(lambda: stub.in_flight)  # pnmediator has the first attempt
    if close == "reset":
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()  # the PBX's client times out and hangs up

    await wait_until(lambda: len(stub.to("apns-tok")) == 2)
    assert [(r["verb"], r["Id"]) for r in stub.to("apns-tok")] == [(CALL, "call-7@pbx")] * 2
    access = await wait_until(lambda: [r.getMessage() for r in caplog.records
                                       if r.name == "pnbridge.access" and PUSH in r.getMessage()])
    assert len(access) == 1
    assert access[0].startswith(
        f"POST route={PUSH} status={status} verb={CALL} username=alice "
        "sent=1 failed=0 removed=0 skipped=0 duration=")
    devices = [r.getMessage() for r in caplog.records if r.name == "pnbridge.push"]
    assert any(line.startswith(f"push {CALL} sent selector=IPH… username=alice") and "attempts=2" in line
               for line in devices), devices
    text = (await daemon.client.get("/metrics")).text
    assert metric(text, "pnbridge_pushes_total", verb=CALL, outcome="sent") == 1
    assert metric(text, "pnbridge_push_requests_total", verb=CALL, answer=answer) == 1
    assert metric(text, "pnbridge_push_requests_in_flight") == 0


async def test_a_push_whose_client_left_finishes_before_the_daemon_stops(start_daemon, stub,
                                                                         caplog):
    """Stopping gives such a push what remains of the grace period: the retry goes out and
    the push is logged before the daemon says it stopped."""
    caplog.set_level(logging.INFO, logger="pnbridge")
    daemon = await start_daemon(push_config(stub, deadlines={CALL: 5.0}))
    await report(daemon, "IPHONE",
                 path="/token", username="alice", token="apns-tok", pushappid="com.app")
    stub.answer("apns-tok", Answer(503, {"code": 503, "response": "busy"}, delay=0.3))
    await send_and_reset(daemon, {"username": "alice", "verb": CALL, "id": "call-8@pbx"}, stub)
    daemon.shutdown.set()
    await wait_until(lambda: any(r.getMessage() == "stopped" for r in caplog.records))
    assert len(stub.to("apns-tok")) == 2
    messages = [r.getMessage() for r in caplog.records]
    left = [n for n, m in enumerate(messages) if "status=499" in m and "sent=1" in m]
    assert left and left[0] < messages.index("stopped")


async def send_and_reset(daemon: Daemon, push: dict[str, Any], stub: Stub) -> None:
    """Send ``push`` on a raw connection and reset it once pnmediator has the first try."""
    host, port = daemon.url.removeprefix("http://").split(":")
    body = json.dumps(push).encode()
    stream = await trio.open_tcp_stream(host, int(port))
    await stream.send_all(
        b"POST /api/v1/push HTTP/1.1\r\nHost: pbx\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    await wait_until(lambda: stub.in_flight)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def test_an_answered_push_is_logged_with_its_verb_username_and_counts(start_daemon, stub,
                                                                           caplog):
    caplog.set_level(logging.INFO, logger="pnbridge")
    daemon = await start_daemon(push_config(stub))
    await report(daemon, "A", path="/token", username="bob", token="tok-a", pushappid="com.app")
    await report(daemon, "B", path="/token", username="bob", token="tok-b", pushappid="com.app")
    stub.answer("tok-b", Answer(200, {"code": 404, "response": "Device token not found"}))
    answer = await daemon.client.post(PUSH, json={"username": "bob", "verb": "NotifyTextMessage"},
                                      headers=AUTH)
    assert answer.status_code == 200
    access = [r.getMessage() for r in caplog.records if r.name == "pnbridge.access"
              and PUSH in r.getMessage()]
    assert access[0].startswith(f"POST route={PUSH} status=200 verb=NotifyTextMessage "
                                "username=bob sent=1 failed=0 removed=1 skipped=0 duration=")
    await daemon.client.post(PUSH, json={"username": "eve\u2028\x1b[2Jx", "verb": CALL,
                                         "id": "c1"}, headers=AUTH)
    access = [r.getMessage() for r in caplog.records if r.name == "pnbridge.access"
              and PUSH in r.getMessage()]
    assert access[1].startswith(f"POST route={PUSH} status=404 verb={CALL} "
                                "username=eve\\u2028\\x1b[2Jx duration=")
    text = (await daemon.client.get("/metrics")).text
    assert metric(text, "pnbridge_push_requests_total", verb="NotifyTextMessage",
                  answer="200") == 1
    assert metric(text, "pnbridge_push_requests_total", verb=CALL, answer="404") == 1


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS",
                                    "TRACE", "PROPFIND"])
async def test_every_method_but_post_is_405_allowing_post(start_daemon, stub, method):
    daemon = await start_daemon(push_config(stub))
    answer = await daemon.client.request(method, PUSH, headers=AUTH)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "POST"
    if method != "HEAD":
        assert_one_compact_line(answer)
        assert answer.json() == {"error": "method not allowed: the push API takes POST"}
    assert stub.requests == []


def assert_one_compact_line(answer: httpx.Response) -> None:
    """One line of compact JSON ending in a newline, served as JSON."""
    text = answer.text
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    assert answer.headers["Content-Type"] == "application/json"
    assert text == json.dumps(json.loads(text), separators=(",", ":")) + "\n"


Send = Callable[[Daemon], Awaitable[httpx.Response]]


def post(body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
         ) -> Send:
    async def send(daemon: Daemon) -> httpx.Response:
        content = raw if raw is not None else json.dumps(body).encode()
        return await daemon.client.post(PUSH, content=content, headers={**AUTH, **(headers or {})})
    return send


def twice(send: Send) -> Send:
    async def again(daemon: Daemon) -> httpx.Response:
        await send(daemon)
        return await send(daemon)
    return again


async def while_one_is_under_way(daemon: Daemon, stub: Stub) -> httpx.Response:
    stub.answer("tok-alice", Answer(delay=1.0))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(post({"username": "alice", "verb": "NotifyTextMessage"}), daemon)
        await wait_until(lambda: stub.in_flight)
        return await post({"username": "alice", "verb": "NotifyTextMessage"})(daemon)


MESSAGE = {"username": "alice", "verb": "NotifyTextMessage", "message": "hi\n\"there\""}
# kind: (extra config, the request, the status, the error's start)
KINDS: dict[str, tuple[dict[str, Any], Any, int, str]] = {
    "200": ({}, post(MESSAGE), 200, ""),
    "400-json": ({}, post(raw=b'{"username": '), 400, "body: "),
    "400-field": ({}, post({"username": "alice"}), 400, "verb: required"),
    "401": ({}, post(MESSAGE, {"Authorization": "Bearer wrong-key-0000000000000"}), 401,
            "missing or wrong API key"),
    "404-user": ({}, post({"username": "nobody", "verb": "NotifyTextMessage"}), 404,
                 "no device of this user"),
    "404-off": ({"api": {"keys": []}}, post(MESSAGE), 404, "the push API is off"),
    "405": ({}, lambda d: d.client.get(PUSH, headers=AUTH), 405, "method not allowed"),
    "413": ({}, post(raw=b'{"message": "' + b"x" * 70_000 + b'"}'), 413, ""),
    "415": ({}, post(MESSAGE, {"Content-Type": "application/x-www-form-urlencoded"}), 415,
            "the body must be JSON"),
    "429": ({"api": {"key_rate": 0.01, "key_burst": 1}}, twice(post(MESSAGE)), 429,
            "too many requests with this key"),
    "431": ({}, post(MESSAGE, {f"X-H{n}": "1" for n in range(70)}), 431,
            "more than 64 header fields"),
    "500": ({"plugins": {"enabled": ["boom"]}}, post(MESSAGE), 500,
            "the push failed unexpectedly"),
    "503-transport": ({"plugins": {"enabled": []}}, post(MESSAGE), 503, "no push transport"),
    "503-busy": ({"api": {"max_in_flight": 1}}, while_one_is_under_way, 503,
                 "too many pushes under way"),
}


@pytest.mark.parametrize("kind", list(KINDS))
async def test_every_answer_is_one_line_of_compact_json(start_daemon: StartDaemon, stub,
                                                       tmp_path: Path, kind):
    extra, send, status, error = KINDS[kind]
    install_plugins(tmp_path / "plugins", "push/boom")
    config = push_config(stub)
    config["plugins"]["paths"] = [str(tmp_path / "plugins")]
    for table, values in extra.items():
        config[table] = {**config[table], **values}
    daemon = await start_daemon(config)
    await report(daemon, "PHONE",
                 path="/token", username="alice", token="tok-alice", pushappid="com.app")
    answer = await (send(daemon, stub) if send is while_one_is_under_way else send(daemon))
    assert answer.status_code == status, answer.text
    assert_one_compact_line(answer)
    if status == 200:
        assert answer.json()["devices"][0]["outcome"] == "sent"
    else:
        assert answer.json()["error"].startswith(error), answer.json()


async def raw_answer(daemon: Daemon, target: str, method: str = "POST") -> tuple[int, bytes]:
    """``method`` ``target`` (sent as is) with the key and a message body: the status and
    the body of the answer."""
    host, port = daemon.url.removeprefix("http://").split(":")
    body = json.dumps({"username": "alice", "verb": "NotifyTextMessage"}).encode()
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(
            f"{method} {target} HTTP/1.1\r\nHost: pbx\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {KEY}\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
    head, _, content = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), content


@pytest.mark.parametrize("target", ["/api/v1/push/", "//api/v1/push", "/api/v1/%70ush",
                                    "/api/v1/push%2F", "/api/v1/push%2f", "/API/v1/push"])
@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_the_push_api_is_served_at_its_exact_path_only(start_daemon, stub, target,
                                                             method):
    """A path that is the API's only once decoded or with its slashes tidied is 404 (JSON
    where routing took it for the API's), and pushes nothing; ``/api/v1/push`` with a query
    string is the API."""
    daemon = await start_daemon(push_config(stub))
    await report(daemon, "PHONE",
                 path="/token", username="alice", token="tok-alice", pushappid="com.app")
    status, content = await raw_answer(daemon, target, method)
    assert status == 404, content
    if content.startswith(b"{"):
        assert content == b'{"error":"no such path: the push API is /api/v1/push"}\n'
    assert stub.requests == []
    assert (await raw_answer(daemon, "/api/v1/push?x=1"))[0] == 200
    assert len(stub.requests) == 1


CURL = shutil.which("curl")


@pytest.mark.skipif(CURL is None and not os.environ.get("CI"), reason="curl is not installed")
async def test_a_client_that_times_out_with_a_fin_is_logged_with_the_status_answered(
        start_daemon, stub, caplog):
    """curl --max-time gives up while the push waits for pnmediator and closes with a FIN:
    pnbridge cannot tell it from a half-closed client that still reads, so it writes the
    answer and logs and counts 200, with the push's duration; the docs say so (and that 499
    is a reset connection)."""
    caplog.set_level(logging.INFO, logger="pnbridge")
    daemon = await start_daemon(push_config(stub))
    await report(daemon, "IPHONE",
                 path="/token", username="alice", token="apns-tok", pushappid="com.app")
    stub.answer("apns-tok", Answer(delay=1.5))
    body = json.dumps({"username": "alice", "verb": CALL, "id": "call-9@pbx"})
    curl = await trio.run_process(
        [CURL or "curl", "-sS", "--max-time", "0.5", "-H", f"Authorization: Bearer {KEY}",
         "-H", "Content-Type: application/json", "--data-binary", body, daemon.url + PUSH],
        capture_stdout=True, capture_stderr=True, check=False)
    assert curl.returncode == 28, curl.stderr  # curl: operation timed out
    access = await wait_until(lambda: [r.getMessage() for r in caplog.records
                                       if r.name == "pnbridge.access" and PUSH in r.getMessage()])
    assert access[0].startswith(f"POST route={PUSH} status=200 verb={CALL} username=alice sent=1")
    assert float(access[0].rsplit("duration=", 1)[1].split("ms")[0]) > 1000
    text = (await daemon.client.get("/metrics")).text
    assert metric(text, "pnbridge_push_requests_total", verb=CALL, answer="200") == 1
    assert metric(text, "pnbridge_push_requests_total", verb=CALL, answer="client-left") == 0
    docs = " ".join((Path(__file__).parent.parent / "docs" / "pbx-integration.md").read_text()
                    .split())
    assert "Status `499` (as nginx writes it) means the connection was reset" in docs
    assert "closes its connection with a FIN (curl `--max-time`" in docs
    assert "So `200` means the answer was written, not that the client read it" in docs
