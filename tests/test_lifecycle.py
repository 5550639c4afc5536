"""`pnbridge serve` as a process: listen forms, clean stops, restarts, startup errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from conftest import pnbridge

REPORT = {"username": "u", "selector": "S:1", "token_msgs": "tok+en/="}


def toml(tmp_path, listen: str, extra: str = "") -> str:
    return f'[server]\nlisten = ["{listen}"]\n[storage]\npath = "{tmp_path / "p.db"}"\n{extra}'


def stored(tmp_path) -> list[str]:
    config = tmp_path / "pnbridge.toml"
    result = pnbridge("devices", "list", "--config", str(config))
    assert result.returncode == 0, result.stderr
    return [line.split()[0] for line in result.stdout.splitlines()[1:]]


def test_restart_keeps_every_device(spawn, tmp_path):
    process = spawn(toml(tmp_path, "127.0.0.1:0"))
    url = process.url()
    for i in range(20):
        assert httpx.get(f"{url}/token", params={**REPORT, "selector": f"S:{i}"}).status_code == 200
    assert process.stop(signal.SIGINT) == 0
    assert "stopped" in process.log
    process = spawn(toml(tmp_path, "127.0.0.1:0"))
    url = process.url()
    assert httpx.get(f"{url}/token", params={**REPORT, "selector": "S:new"}).status_code == 200
    assert process.stop() == 0
    assert sorted(stored(tmp_path)) == sorted([f"S:{i}" for i in range(20)] + ["S:new"])


def test_request_in_flight_during_sigterm_is_answered_and_stored(spawn, tmp_path):
    process = spawn(toml(tmp_path, "127.0.0.1:0"))
    host, port = process.url().removeprefix("http://").rsplit(":", 1)
    body = b"username=u&selector=S:inflight&token_msgs=abc"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10]
        )
        time.sleep(0.3)
        process.popen.send_signal(signal.SIGTERM)
        process.wait_for("SIGTERM received")
        sock.sendall(body[10:])
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert process.popen.wait(15) == 0
    assert stored(tmp_path) == ["S:inflight"]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{host}:{port}/token")


def test_unix_socket(spawn, tmp_path):
    path = tmp_path / "pnbridge.sock"
    process = spawn(toml(tmp_path, f"unix:{path}"))
    process.wait_for("listening on")
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport, base_url="http://pnbridge") as client:
        assert client.get("/token", params=REPORT).status_code == 200
    assert process.stop() == 0
    assert stored(tmp_path) == ["S:1"]


def test_ipv6_loopback(spawn, tmp_path):
    process = spawn(toml(tmp_path, "[::1]:0"))
    url = process.url()
    assert url.startswith("http://[::1]:")
    assert httpx.get(f"{url}/token", params=REPORT).status_code == 200


def test_inherited_socket_fd(spawn, tmp_path):
    """Socket activation: the listening socket is handed over as fd://N."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    fd = listener.fileno()
    process = spawn(toml(tmp_path, f"fd://{fd}"), pass_fds=(fd,))
    # The kernel queues connections on the inherited socket before the daemon accepts.
    assert httpx.get(f"http://127.0.0.1:{port}/token", params=REPORT, timeout=15).status_code == 200
    assert process.stop() == 0
    listener.close()
    assert stored(tmp_path) == ["S:1"]


def test_port_in_use_is_a_clear_error(spawn, tmp_path):
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    process = spawn(toml(tmp_path, f"127.0.0.1:{port}"))
    assert process.popen.wait(15) == 1
    assert f"cannot listen on 127.0.0.1:{port}" in process.log
    taken.close()


def test_bad_config_stops_startup_naming_the_key(spawn, tmp_path):
    process = spawn(toml(tmp_path, "127.0.0.1:0", "[reporter]\nmax_body = 'big'\n"))
    assert process.popen.wait(15) == 1
    assert "reporter.max_body: expected an integer" in process.log


def test_embedded_defaults(tmp_path):
    """No config at all: 127.0.0.1:8080 and ./pnbridge.db, and the log says so."""
    env = {k: v for k, v in os.environ.items() if k != "PNBRIDGE_CONFIG"}
    deadline = time.monotonic() + 60
    while True:  # another test run on this machine may hold 8080 for a moment
        popen = subprocess.Popen(
            [sys.executable, "-m", "pnbridge", "serve"], cwd=tmp_path, env=env,
            stderr=subprocess.PIPE, text=True,
        )
        lines = []
        while line := popen.stderr.readline():
            lines.append(line)
            if "listening on" in line or "cannot listen" in line:
                break
        if "listening on" in lines[-1] or time.monotonic() > deadline:
            break
        popen.wait(15)
        time.sleep(0.5)
    try:
        log = "".join(lines)
        assert "embedded defaults" in lines[0] and "127.0.0.1:8080" in lines[0], log
        assert "listening on http://127.0.0.1:8080" in lines[-1], log
        assert httpx.get("http://127.0.0.1:8080/token", params=REPORT).status_code == 200
    finally:
        popen.send_signal(signal.SIGTERM)
        try:
            assert popen.wait(15) == 0
        finally:
            if popen.poll() is None:
                popen.kill()
    assert (tmp_path / "pnbridge.db").exists()
