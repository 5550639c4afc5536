"""Connections that end badly: a client that cuts its body short and closes, half-closes,
resets or stays open as the answer (413, 429) goes out never stops the daemon
(docs/reliability.md, "Connections"); a connection that fails anyway is contained and counted."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import httpx
import trio
from faults import metric, report
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app
from pnbridge.httpserver import Connection
from prometheus_client import CollectorRegistry, Counter
from quart import request
from quart_trio import QuartTrio

STYLES = ("close", "half", "reset", "open")


def cut_body(port: int, style: str, forwarded_for: str | None = None) -> None:
    """``POST /token/`` announcing 100,000 bytes of body, sending 9, then ending the connection
    in ``style``: close, half-close (SHUT_WR) and read, reset (SO_LINGER 0), or read the answer
    while keeping the socket open."""
    head = (b"POST /token/ HTTP/1.1\r\nHost: pnbridge\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n")
    if forwarded_for:
        head += b"X-Forwarded-For: " + forwarded_for.encode() + b"\r\n"
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return  # refused: the daemon is gone (the test's asserts say so)
    with sock:
        try:
            sock.sendall(head + b"\r\nusername=")
            time.sleep(random.random() * 0.004)
            if style == "half":
                sock.shutdown(socket.SHUT_WR)
                sock.recv(65536)
            elif style == "reset":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif style == "open":
                sock.recv(65536)
                time.sleep(0.05)
        except OSError:
            pass  # the daemon closed first: also an ending


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
                statuses.append(report(client, f"S{i % 50}"))
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
        assert report(client, "after") == 200
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
