"""Hostile HTTP over raw sockets against a daemon child process: malformed request lines,
huge headers, invalid UTF-8, deeply nested and enormous JSON, duplicate keys, wrong methods,
random bytes, slow clients. Never a 5xx, never a crash, memory stays bounded, and a
well-behaved client is served all along."""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
from conftest import PASSWORDS
from faults import API_KEY, daemon_toml, report_status, rss_kib
from fuzzing import CLASSES, FORGED, STYLES, cut_body
from pnbridge.access import users

ROUTES = ["/token", "/token/", "/token/1001", "/removeToken/", "/api/v1/push", "/healthz",
          "/readyz", "/metrics", "/nope/x", "/", "//token", "/token/%ff%fe", "/token/\xff"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT",
           "PROPFIND", "get", "G\x00T", ""]
CONTENT_TYPES = ["application/json", "application/x-www-form-urlencoded", "text/plain",
                 "multipart/form-data; boundary=x", "application/json; charset=latin-1",
                 "\xff/\xfe", ""]
AUTH = f"Authorization: Bearer {API_KEY}\r\n"


def request(method: str, target: bytes, body: bytes = b"", headers: str = "",
            content_type: str = "application/json") -> bytes:
    head = (f"{method} ".encode() + target + b" HTTP/1.1\r\nHost: fuzz\r\n"
            + f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n".encode("latin-1")
            + headers.encode("latin-1") + b"Connection: close\r\n\r\n")
    return head + body


def crafted() -> list[bytes]:
    nested = b"[" * 100_000 + b"]" * 100_000
    dup = b'{"username": "a", "username": "b", "selector": "s", "selector": {"x": 1}, ' \
          b'"pushToken": "t", "pushToken": null}'
    return [
        b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\r\n\r\n\r\n",
        b"GET /token HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 20,
        b"GET /token?username=%ff&selector=\xff\xfe&pushToken=%00 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /token/\xc3\x28/\xed\xa0\x80 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Many: 1\r\n" * 5000 + b"\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n",
        b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n12345",
        request("POST", b"/token", nested),
        request("POST", b"/api/v1/push", nested, AUTH),
        request("POST", b"/token", b'{"a": "' + b"x" * 3_000_000 + b'"}'),
        request("POST", b"/api/v1/push", b'{"username": "' + b"x" * 3_000_000 + b'"}', AUTH),
        request("POST", b"/token", dup), request("POST", b"/removeToken", dup),
        request("POST", b"/api/v1/push", b'{"username": "1001", "username": 5, "verb": "x"}',
                AUTH),
        request("POST", b"/token", b"\xff\xfe\x00{}\x80", content_type="application/json"),
        request("POST", b"/token", b"username=\xff&selector=%ZZ&&&==&pushToken=%",
                content_type="application/x-www-form-urlencoded"),
        request("POST", b"/token", b"--x\r\nbroken", content_type="multipart/form-data; boundary=x"),
        request("POST", b"/token", b"1e99999", content_type="application/json"),
        request("POST", b"/api/v1/push", b"NaN", AUTH),
        request("DELETE", b"/api/v1/push"), request("POST", b"/metrics"),
        request("TRACE", b"/token"), request("CONNECT", b"127.0.0.1:1"),
        request("GET", b"*"), request("GET", b"http://evil.example/token"),
    ]


def random_request(rng: random.Random) -> bytes:
    """A request mixing real routes and methods with random bytes."""
    def junk(n: int) -> bytes:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(n)))

    target = rng.choice(ROUTES).encode("latin-1")
    if rng.random() < 0.5:
        target += b"?" + rng.choice([b"username=1001&selector=s&pushToken=t", junk(80)])
    body = rng.choice([b"", junk(300), json.dumps({junk(5).decode("latin-1"): "v"}).encode(),
                       b'{"username": "1001", "selector": "' + junk(20) + b'"}'])
    raw = request(rng.choice(METHODS), target.replace(b" ", b"%20"), body,
                  AUTH if rng.random() < 0.5 else "", rng.choice(CONTENT_TYPES))
    if rng.random() < 0.2:  # flip a few bytes anywhere
        raw = bytearray(raw)
        for _ in range(3):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        raw = bytes(raw)
    return raw


def exchange(address: tuple[str, int], raw: bytes, timeout: float = 10.0,
             half_close: bool = True) -> int | None:
    """Send ``raw`` (then shut the socket's sending side, unless not ``half_close``: the daemon
    takes that for a client gone and may drop the request); the status of the answer, or None
    when the daemon closed without one."""
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            sock.sendall(raw)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # it may stop reading a request it has rejected
        answer = b""
        try:
            while len(answer) < 64 and (chunk := sock.recv(4096)):
                answer += chunk
        except ConnectionResetError:
            pass
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


class GoodClient(threading.Thread):
    """Reports steadily while the fuzz runs; records every answer's status and latency."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.results = url, []
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            n = 0
            while not self.stop.is_set():
                started = time.perf_counter()
                status = report_status(client, f"good-{n % 20}", token=f"good-{n}")
                self.results.append((status, time.perf_counter() - started))
                n += 1
                time.sleep(0.02)


def test_fuzz_every_route(spawn, tmp_path):
    daemon = spawn(daemon_toml(tmp_path, tmp_path / "pnbridge.db"))
    url = daemon.url()
    address = (urlsplit(url).hostname, urlsplit(url).port)
    rng = random.Random(20240610)
    for raw in [random_request(rng) for _ in range(30)]:  # warm up before measuring memory
        exchange(address, raw)
    rss_before = rss_kib(daemon.popen.pid)
    good = GoodClient(url)
    good.start()
    statuses: dict[int | None, int] = {}
    try:
        for raw in crafted() + [random_request(rng) for _ in range(300)]:
            status = exchange(address, raw)
            statuses[status] = statuses.get(status, 0) + 1
            assert status is None or status < 500, (status, raw[:200])
    finally:
        good.stop.set()
        good.join(15)
    assert daemon.popen.poll() is None, daemon.log
    assert rss_kib(daemon.popen.pid) - rss_before < 64 * 1024, statuses
    assert good.results and {s for s, _ in good.results} == {200}, good.results
    # Wall clock: the daemon is a child process (no virtual clock): a generous bound.
    assert max(t for _, t in good.results) < 2.0
    assert sum(n for s, n in statuses.items() if s and s < 300) > 10, statuses  # not all refused
    assert "Traceback" not in daemon.log, daemon.log


def test_slow_clients_are_timed_out(spawn, tmp_path):
    """Clients trickling headers or a body a byte at a time, or going silent mid-request,
    are cut off within the configured timeouts while a good client is served."""
    daemon = spawn(daemon_toml(tmp_path, tmp_path / "pnbridge.db", server="""\
keep_alive_timeout = 1.0
read_timeout = 1.0
body_timeout = 1.5"""))
    url = daemon.url()
    address = (urlsplit(url).hostname, urlsplit(url).port)
    head = (b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n")
    clients = []  # (socket, what it trickles: one byte each round, or nothing)
    for _ in range(5):
        headers = socket.create_connection(address)
        headers.sendall(b"GET /token HTTP/1.1\r\nHost: x\r\n")
        body, silent = socket.create_connection(address), socket.create_connection(address)
        body.sendall(head)
        silent.sendall(head + b"username=")
        clients += [(headers, b"X-Slow: " + b"a" * 100), (body, b"a" * 100), (silent, b"")]
    open_ = {sock: trickle for sock, trickle in clients}
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=5) as client:
        for step in range(40):  # 0.2 s each: the timeouts end them within about 3 s
            if not open_:
                break
            for sock, trickle in list(open_.items()):
                try:
                    if step < len(trickle):
                        sock.send(trickle[step:step + 1])
                    sock.setblocking(False)
                    if sock.recv(4096) is not None:  # an answer (408) or the end
                        del open_[sock]
                except BlockingIOError:
                    pass
                except OSError:
                    del open_[sock]
            assert report_status(client, "good") == 200  # served all along
            time.sleep(0.2)
    took = time.monotonic() - started
    for sock, _ in clients:
        sock.close()
    assert not open_, f"{len(open_)} slow client(s) still connected after {took:.1f}s"
    assert daemon.popen.poll() is None


# How a line of ``pnbridge serve``'s log starts; a line starting otherwise was forged.
LOG_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) pnbridge[\w.]*: ")


def test_fuzz_attack_classes(spawn, tmp_path):
    """A few thousand generated requests of each attack class of docs/security.md (charsets,
    malformed Authorization headers, nested and non-standard JSON, control characters and
    line breaks in paths, fields and headers), with cut-off bodies closed in four styles
    racing the answers from other threads: no 5xx, the daemon alive, a good client served
    throughout, and every log line one the daemon wrote."""
    users_file = tmp_path / "users"
    users.write(users_file, {n: users.new_user(n, "pnbridge", p) for n, p in PASSWORDS.items()})
    routes = "".join(f"""
[[reporter.routes]]
path = "/{prefix}/{{username}}"
kind = "token"
auth = "{mode}"
""" for prefix, mode in (("dig", "digest"), ("bas", "basic")))
    daemon = spawn(daemon_toml(tmp_path, tmp_path / "pnbridge.db", access_log=True,
                               extra=f'[auth]\nusers_file = "{users_file}"\n{routes}'))
    url = daemon.url()
    address = (urlsplit(url).hostname, urlsplit(url).port)
    rng = random.Random(20261206)
    good = GoodClient(url)
    good.start()
    statuses: dict[str, dict[int | None, int]] = {name: {} for name in CLASSES}
    try:
        with ThreadPoolExecutor(8) as racers:
            cuts = [racers.submit(cut_body, address[1], style)
                    for style in STYLES for _ in range(100)]
            for _ in range(600):
                for name, generate in CLASSES.items():
                    raw = generate(rng)
                    status = exchange(address, raw, half_close=False)
                    seen = statuses[name]
                    seen[status] = seen.get(status, 0) + 1
                    assert status is None or status < 500, (name, status, raw[:300])
            for cut in cuts:
                cut.result()
    finally:
        good.stop.set()
        good.join(15)
    assert daemon.popen.poll() is None, daemon.log[-5000:]
    assert report_status(httpx.Client(base_url=url), "after-fuzz") == 200
    assert good.results and {s for s, _ in good.results} == {200}, good.results
    for name, seen in statuses.items():  # every request of each class was answered
        assert None not in seen, (name, seen)
    log = daemon.log
    assert "\x1b" not in log
    forged = [line for line in log.splitlines() if not LOG_LINE.match(line)]
    assert not forged, forged[:20]
    assert FORGED not in "".join(line.split(": ", 1)[0] for line in log.splitlines())
