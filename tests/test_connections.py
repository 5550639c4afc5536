"""Connections that end badly: a client that cuts its body short and closes, half-closes,
resets or stays open as the answer (413, 429) goes out never stops the daemon
(docs/reliability.md); a connection that fails anyway is contained and counted. A request
whose handler takes longer than ``read_timeout`` still gets its answer."""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import httpx
import trio
from conftest import cli
from faults import daemon_toml, locked, metric, report_status
from fuzzing import STYLES, cut_body
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app
from pnbridge.http.worker import Connection
from pnmediator_stub import KEY, Answer, Stub, push_config
from prometheus_client import CollectorRegistry, Counter
from quart import request
from quart_trio import QuartTrio
from reports import report


def test_cut_bodies_ended_every_way_never_stop_the_daemon(spawn, tmp_path):
    # 150 per style, all at once from 16 threads; half of them rate-limited (429), half too
    # large (413); a good client reports throughout.
    daemon = spawn(f"""\
[server]
listen = ["127.0.0.1:0"]
access_log = false
trusted_proxies = ["127.0.0.1/32"]
[storage]
path = "{tmp_path / 'db'}"
[reporter]
client_rate = 0.1
client_burst = 1
username_rate = 0
""")
    url = daemon.url()
    port = int(url.rsplit(":", 1)[1])
    jobs = [(style, "198.51.100.7" if i % 2 else None) for style in STYLES for i in range(150)]
    random.shuffle(jobs)
    statuses: list[int] = []
    done = threading.Event()

    def good_client() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            i = 0
            while not done.is_set() or i < 20:
                client.headers["X-Forwarded-For"] = f"10.0.{i // 250}.{i % 250}"
                statuses.append(report_status(client, f"S{i % 50}"))
                i += 1

    good = threading.Thread(target=good_client)
    good.start()
    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda job: cut_body(port, *job), jobs))
    finally:
        done.set()
        good.join()
    assert daemon.popen.poll() is None, daemon.log
    assert len(statuses) >= 20 and set(statuses) == {200}, statuses
    with httpx.Client(base_url=url) as client:
        client.headers["X-Forwarded-For"] = "10.9.9.9"
        assert report_status(client, "after") == 200
        assert metric(client, "pnbridge_connection_errors_total",
                      error="BusyResourceError") == 0
    assert "Traceback" not in daemon.log


class HypercornClose(Connection):
    """A connection closed the way hypercorn closes it: EOF outside the send lock."""

    _close = TCPServer._close


async def test_a_connection_that_fails_is_contained_and_counted(nursery):
    # With hypercorn's racy close back in, cut bodies make connections fail with
    # BusyResourceError; each stays in its connection and is counted; serving goes on.
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 1000

    @app.post("/token/")
    async def token() -> str:
        return str(len(await request.get_data()))

    errors = Counter("pnbridge_connection_errors", "", ["error"], registry=CollectorRegistry())
    config = HypercornConfig()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    handler = partial(HypercornClose, errors, wrap_app(app, config.wsgi_max_body_size, "asgi"),
                      config, WorkerContext(None), ConnectionState({}))
    nursery.start_soon(partial(trio.serve_listeners, handler, listeners))

    def busy() -> float:
        return errors.labels("BusyResourceError")._value.get()

    def attack() -> None:
        with ThreadPoolExecutor(8) as pool:
            for _ in range(10):
                list(pool.map(lambda style: cut_body(port, style), ["half", "close"] * 50))
                if busy() > 0:
                    return

    await trio.to_thread.run_sync(attack)
    assert busy() > 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        answer = await client.post("/token/", content=b"x" * 10)
    assert answer.status_code == 200 and answer.text == "10"


# -- [server] read_timeout bounds reading a request, not answering it ---------------------


async def test_a_push_longer_than_read_timeout_gets_its_answer(start_daemon, nursery):
    # pnmediator answers 503 after 0.4 s, each retry too, until the 2 s deadline: the
    # answer comes 2 s in, 4 times read_timeout; it used to be a closed socket at 0.5 s.
    stub = await nursery.start(Stub().serve)
    daemon = await start_daemon({"server": {"read_timeout": 0.5},
                                 **push_config(stub, NotifyTextMessage=2.0)})
    await report(daemon, "A", username="alice", token=None, msgs="slow-503")
    stub.answer("slow-503", *[Answer(503, {"code": 503, "response": "busy"}, delay=0.4)] * 20)
    started = trio.current_time()
    answer = await daemon.client.post(
        "/api/v1/push", json={"username": "alice", "verb": "NotifyTextMessage", "message": "hi"},
        headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert answer.status_code == 200
    assert [d["outcome"] for d in answer.json()["devices"]] == ["failed"]
    assert trio.current_time() - started > 1.5
    assert len(stub.to("slow-503")) >= 3


def test_a_report_waiting_for_a_lock_longer_than_read_timeout_gets_503(spawn, tmp_path):
    db = tmp_path / "pnbridge.db"
    daemon = spawn(daemon_toml(tmp_path, db, busy_timeout=1.5, server="read_timeout = 0.5"))
    with httpx.Client(base_url=daemon.url(), timeout=10) as client:
        assert report_status(client, "before") == 200
        with locked(db):
            started = time.monotonic()
            assert report_status(client, "during") == 503
            # Wall clock: a child daemon waits for a real SQLite lock (busy_timeout 1.5 s).
            assert time.monotonic() - started > 1.4
        assert report_status(client, "after") == 200
    assert daemon.popen.poll() is None


async def test_read_timeout_still_cuts_a_client_silent_mid_request(start_daemon, virtual_clock):
    daemon = await start_daemon({"server": {"read_timeout": 0.5, "body_timeout": 30,
                                            "keep_alive_timeout": 30}})
    port = int(daemon.url.rsplit(":", 1)[1])

    def silent(request: bytes) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            while sock.recv(65536):
                pass

    head = b"POST /token/ HTTP/1.1\r\nHost: pnbridge\r\nContent-Length: 50\r\n"
    for sent in (head, head + b"\r\nusername=al"):  # in the head, in the body
        started = trio.current_time()  # the daemon's clock: it jumps to its next deadline
        await trio.to_thread.run_sync(silent, sent)
        took = trio.current_time() - started
        assert 0.4 < took < 3, (sent, took)


def test_check_config_rejects_busy_timeout_longer_than_grace_period(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[server]\ngrace_period = 5\n[storage]\nbusy_timeout = 5.5\n")
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 1
    assert "storage.busy_timeout: 5.5 s is longer than server.grace_period (5 s)" \
        in result.stderr, result.stderr
    path.write_text("[server]\ngrace_period = 5\n[storage]\nbusy_timeout = 5\n")
    assert cli("check-config", "--config", str(path)).returncode == 0


# -- a request framed twice (RFC 9112 6.1) --------------------------------------------------


def exchange(port: int, data: bytes, wait: float = 2.0) -> tuple[bytes, bool]:
    """Send ``data`` on a new connection; everything answered, and whether the daemon
    closed the connection (False: still open after ``wait`` seconds of silence)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except TimeoutError:
            return got, False
        return got, True


async def test_content_length_with_transfer_encoding_closes_after_the_answer(start_daemon):
    # A request behind it in the same packet (what a proxy reading the body by the other
    # header would pass on as a separate request) is never answered.
    daemon = await start_daemon()
    port = int(daemon.url.rsplit(":", 1)[1])
    body = b"username=alice&selector=A&pushToken=tok-A&pushappid=app"
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    behind = b"GET /token/?username=eve&selector=SMUGGLED&pushToken=x HTTP/1.1\r\nHost: p\r\n\r\n"
    head = b"POST /token/ HTTP/1.1\r\nHost: p\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    for framing in (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                    b"transfer-encoding: chunked\r\ncontent-length: 1000\r\n",
                    b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\nContent-Length: 0\r\n"):
        got, closed = await trio.to_thread.run_sync(exchange, port, head + framing + b"\r\n"
                                                    + chunked + behind)
        assert closed and got.count(b"HTTP/1.1 ") == 1, (framing, got)
        assert b"\r\nconnection: close\r\n" in got.lower(), got
    # Content-Length alone: both requests answered, the connection kept.
    alone = head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
    got, closed = await trio.to_thread.run_sync(exchange, port, alone + behind)
    assert not closed and got.count(b"HTTP/1.1 200") == 2, got
    store = daemon.store()
    assert {d.selector for d in store.devices()} == {"A", "SMUGGLED"}
    store.close()


# -- a client that shuts its sending side after a whole request still gets the answer ------


def test_a_half_closed_client_gets_its_answer(spawn, tmp_path):
    """``shutdown(SHUT_WR)`` right after a whole request (GET, POST form, POST JSON): the
    answer arrives and the connection closes after it. hypercorn took the EOF for a client
    gone and cancelled the request: 0 of 50 answered, though most were stored."""
    db = tmp_path / "pnbridge.db"
    daemon = spawn(daemon_toml(tmp_path, db))
    port = int(daemon.url().rsplit(":", 1)[1])
    def shapes(n: int) -> list[bytes]:
        body = f"username=hc&selector=P{n}&pushToken=tok-post".encode()
        return [
            f"GET /token/?username=hc&selector=G{n}&pushToken=t HTTP/1.1\r\nHost: x\r\n\r\n"
            .encode(),
            b"POST /token/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-"
            b"urlencoded\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body,
            f"GET /removeToken/?username=hc&selector=G{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        ]

    def half_close(raw: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(raw)
            sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(4096):  # until the daemon closes
                answer += chunk
            return answer

    answers = [half_close(raw) for n in range(7) for raw in shapes(n)]
    assert [a[:13] for a in answers] == [b"HTTP/1.1 200 "] * len(answers), answers
    with httpx.Client(base_url=daemon.url()) as client:
        assert report_status(client, "after") == 200
    assert daemon.popen.poll() is None
    result = cli("devices", "list", "--json", "--config", str(tmp_path / "pnbridge.toml"))
    selectors = {d["selector"] for d in json.loads(result.stdout)}
    assert {f"P{n}" for n in range(7)} <= selectors and not {f"G{n}" for n in range(7)} & selectors


def test_websocket_handshakes_are_refused_without_a_traceback(spawn, tmp_path):
    """pnbridge has no WebSocket route: a handshake, with frames or garbage after it and the
    connection ended in each style, is a 403 (or nothing, the client being gone) and never a
    traceback. Quart's 404 rejection raced hypercorn's answer: a traceback at error each."""
    daemon = spawn(daemon_toml(tmp_path, tmp_path / "pnbridge.db"))
    port = int(daemon.url().rsplit(":", 1)[1])
    handshake = (b"GET /token/ HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket"
                 b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13"
                 b"\r\n\r\n")
    rng = random.Random(7)

    def attempt(n: int) -> bytes:
        tail = rng.choice([b"", b"\x81\x85garbage", b"\x88\x00", rng.randbytes(30)])
        style = STYLES[n % len(STYLES)]
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(handshake + tail)
            if style == "half":
                sock.shutdown(socket.SHUT_WR)
            elif style == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return b""
            elif style == "close":
                return b""
            try:
                return sock.recv(64)
            except OSError:
                return b""

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(attempt, range(400)))
    # 403; 400 where hypercorn read the bytes after the handshake as a bad request first.
    assert {a[:13] for a in answers} <= {b"HTTP/1.1 403 ", b"HTTP/1.1 400 ", b""}
    assert sum(a.startswith(b"HTTP/1.1 403 ") for a in answers) >= 100, answers[:8]
    with httpx.Client(base_url=daemon.url()) as client:
        assert report_status(client, "after") == 200
    assert daemon.popen.poll() is None
    assert "Traceback" not in daemon.log and "ERROR" not in daemon.log, daemon.log[-3000:]


async def test_answers_do_not_name_the_server(start_daemon):
    daemon = await start_daemon()
    answers = [await daemon.client.get("/token/", params={"username": "u", "selector": "s",
                                                            "pushToken": "t"}),
               await daemon.client.get("/nope"), await daemon.client.get("/healthz")]
    assert [a.status_code for a in answers] == [200, 404, 200]
    assert not any("server" in a.headers for a in answers), [a.headers for a in answers]
