"""pnbridge under systemd: sd_notify on a real datagram socket, real signals, live reload."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from urllib.parse import urlsplit

from conftest import Process
from notify import NotifySocket
from pnbridge.storage.sqlite.store import SQLiteStore

CONFIG = """\
[server]
listen = ["127.0.0.1:0"]
grace_period = 5
[storage]
path = "{db}"
"""


class Connection:
    """One HTTP/1.1 keep-alive connection, byte by byte, to see it survive."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, path: str) -> tuple[int, bytes]:
        self.send(f"{method} {path} HTTP/1.1\r\nHost: pbx\r\n\r\n".encode())
        return self.response()

    def response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._read()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._read()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), body

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("connection closed by the server")
        self.buffer += data

    def close(self) -> None:
        self.sock.close()


def test_ready_stopping_and_a_request_in_flight_during_sigterm(spawn, notify, tmp_path):
    db = tmp_path / "pnbridge.db"
    daemon = spawn(CONFIG.format(db=db), env={"NOTIFY_SOCKET": notify.address})
    ready = notify.wait_for("READY")
    url = daemon.url()
    assert ready["STATUS"] == f"listening on {url}"
    # READY means listening: a request right away is answered.
    conn = Connection(url)
    assert conn.request("GET", "/healthz") == (200, b"ok\n")

    body = b"username=alice&selector=S1&token_msgs=QVBB0123459876"
    conn.send(
        b"POST /token/ HTTP/1.1\r\nHost: pbx\r\nContent-Type: application/x-www-form-urlencoded"
        b"\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    # "100 Continue": the server has taken the request and waits for its body.
    assert conn.response() == (100, b"")
    daemon.popen.send_signal(signal.SIGTERM)
    stopping = notify.wait_for("STOPPING")
    assert stopping["STATUS"].startswith("stopping")
    time.sleep(0.2)  # well into the drain
    conn.send(body)
    assert conn.response() == (200, b"")
    conn.close()
    assert daemon.popen.wait(15) == 0
    assert "SIGTERM received" in daemon.log
    store = SQLiteStore(db)
    assert [d.selector for d in store.devices()] == ["S1"]
    store.close()


def test_watchdog_pings_at_half_the_timeout_on_an_abstract_socket(spawn, tmp_path):
    notify = NotifySocket(f"@pnbridge-test-{uuid.uuid4().hex}")
    try:
        daemon = spawn(
            CONFIG.format(db=tmp_path / "pnbridge.db"),
            env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "400000"},
        )
        notify.wait_for("READY")
        pings = []
        deadline = time.monotonic() + 1.2
        while (left := deadline - time.monotonic()) > 0:
            message = notify.receive(left)
            if message == {"WATCHDOG": "1"}:
                pings.append(time.monotonic())
        # Every 0.2 s: about six in 1.2 s.
        assert 4 <= len(pings) <= 8, pings
        gaps = sorted(b - a for a, b in itertools.pairwise(pings))
        assert 0.15 < gaps[len(gaps) // 2] < 0.27, gaps
        assert daemon.stop(signal.SIGINT) == 0
        assert "SIGINT received" in daemon.log
    finally:
        notify.close()


def test_no_watchdog_pings_for_another_pid(spawn, notify, tmp_path):
    daemon = spawn(
        CONFIG.format(db=tmp_path / "pnbridge.db"),
        env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "200000",
             "WATCHDOG_PID": str(os.getpid())},
    )
    notify.wait_for("READY")
    assert notify.receive(0.5) is None
    assert daemon.stop() == 0


ROUTE = """
[reporter]
routes = [{ path = "/push/{username}/{selector}/{token_msgs}", kind = "token" }]
"""


def test_sighup_applies_a_changed_config_without_dropping_connections(spawn, notify, tmp_path):
    db = tmp_path / "pnbridge.db"
    daemon = spawn(CONFIG.format(db=db), env={"NOTIFY_SOCKET": notify.address})
    notify.wait_for("READY")
    conn = Connection(daemon.url())
    assert conn.request("GET", "/push/alice/S1/QVBB0123")[0] == 404
    assert "pnbridge.access" in daemon.wait_for(r"pnbridge\.access: GET").string

    config = tmp_path / "pnbridge.toml"
    config.write_text(
        CONFIG.format(db=db).replace(
            "grace_period = 5", 'grace_period = 5\naccess_log = false\nlog_level = "debug"')
        + ROUTE
    )
    daemon.popen.send_signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    assert notify.wait_for("READY")["STATUS"] == "config reloaded"

    # The same connection, now with the new route (and no access log line for it).
    assert conn.request("GET", "/push/alice/S1/QVBB0123") == (200, b"")
    assert conn.request("GET", "/push/alice/S1/QVBB0123") == (200, b"")
    daemon.wait_for(r"DEBUG pnbridge\.reporter: unchanged selector=S1")  # the new log level
    conn.close()
    assert daemon.stop() == 0
    log = daemon.log
    assert "config reloaded" in log
    assert log.count("pnbridge.access: ") == 1


def test_sighup_with_a_broken_config_keeps_the_old_one(spawn, notify, tmp_path):
    db = tmp_path / "pnbridge.db"
    daemon = spawn(CONFIG.format(db=db) + ROUTE, env={"NOTIFY_SOCKET": notify.address})
    notify.wait_for("READY")
    conn = Connection(daemon.url())
    assert conn.request("GET", "/push/alice/S1/QVBB0123") == (200, b"")

    (tmp_path / "pnbridge.toml").write_text(CONFIG.format(db=db) + "bogus = 1\n")
    daemon.popen.send_signal(signal.SIGHUP)
    notify.wait_for("RELOADING")
    ready = notify.wait_for("READY")
    assert ready["STATUS"].startswith("reload failed, running the old config: ")
    assert "storage.bogus" in ready["STATUS"]
    daemon.wait_for(r"ERROR pnbridge\.server: reload failed.*storage\.bogus: unknown key")

    assert conn.request("GET", "/push/alice/S2/QVBB4567") == (200, b"")
    conn.close()
    assert daemon.stop() == 0


def test_socket_activation_serves_on_fd_3(notify, tmp_path):
    """As pnbridge.socket starts it: the listening socket is fd 3, LISTEN_FDS=1."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = tmp_path / "pnbridge.toml"
    config.write_text(CONFIG.format(db=tmp_path / "pnbridge.db").replace(
        '"127.0.0.1:0"', '"fd://3"'))
    popen = subprocess.Popen(
        [sys.executable, "-m", "pnbridge", "serve", "--config", str(config)],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=tmp_path,
        env={**os.environ, "NOTIFY_SOCKET": notify.address, "LISTEN_FDS": "1"},
        pass_fds=(3,), preexec_fn=lambda: os.dup2(listener.fileno(), 3),
    )
    listener.close()
    daemon = Process(popen)
    try:
        notify.wait_for("READY")
        conn = Connection(f"http://127.0.0.1:{port}")
        assert conn.request("GET", "/healthz") == (200, b"ok\n")
        conn.close()
        assert daemon.stop() == 0
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
