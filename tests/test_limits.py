"""Limits on by default: rate limits per client and per username (429 and recovery), the
client address behind trusted proxies, header limits, and the device cap per username."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
import trio
from pnbridge.access.ratelimit import Buckets, client_address, networks
from pnbridge.config.tables import Config


def params(username: str, selector: str) -> dict[str, str]:
    return {"username": username, "selector": selector, "token_msgs": f"tok-{selector}"}


def test_limits_are_on_by_default():
    config = Config()
    assert config.reporter.client_rate > 0 and config.reporter.username_rate > 0
    assert config.storage.max_devices_per_user == 20
    assert config.server.read_timeout and config.server.max_header_bytes == 16384


async def test_client_rate_limit_answers_429_and_recovers(start_daemon):
    daemon = await start_daemon({"reporter": {"client_rate": 10.0, "client_burst": 3}})
    statuses = [
        (await daemon.client.get("/token", params=params(f"u{i}", f"S{i}"))).status_code
        for i in range(4)
    ]
    assert statuses == [200, 200, 200, 429]
    limited = await daemon.client.get("/token", params=params("u9", "S9"))
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    await trio.sleep(0.15)
    assert (await daemon.client.get("/token", params=params("u9", "S9"))).status_code == 200
    store = daemon.store()
    assert sorted(d.selector for d in store.devices()) == ["S0", "S1", "S2", "S9"]
    store.close()


async def test_username_rate_limit_holds_across_client_addresses(start_daemon):
    daemon = await start_daemon({
        "reporter": {"username_rate": 10.0, "username_burst": 2},
        "server": {"trusted_proxies": ["127.0.0.1/32"]},
    })

    async def get(username: str, client: str) -> int:
        r = await daemon.client.get("/token", params=params(username, f"S-{username}"),
                                    headers={"X-Forwarded-For": client})
        return r.status_code

    assert [await get("carol", f"198.51.100.{i}") for i in range(3)] == [200, 200, 429]
    assert await get("dave", "198.51.100.9") == 200  # another username is not held back
    await trio.sleep(0.15)
    assert await get("carol", "198.51.100.20") == 200


async def test_forwarded_for_is_believed_only_from_trusted_proxies(start_daemon, tmp_path):
    untrusted = await start_daemon({
        "reporter": {"client_rate": 1.0, "client_burst": 1},
        "server": {"trusted_proxies": []},
        "storage": {"path": str(tmp_path / "a.db")},
    })
    for client, expected in (("203.0.113.1", 200), ("203.0.113.2", 429)):
        r = await untrusted.client.get("/token", params=params("u", client),
                                       headers={"X-Forwarded-For": client})
        assert r.status_code == expected  # the peer (127.0.0.1) is the client both times
    store = untrusted.store()
    assert [e.source["client"] for e in store.events()] == ["127.0.0.1"]
    store.close()

    proxied = await start_daemon({
        "reporter": {"client_rate": 1.0, "client_burst": 1},
        "server": {"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]},
        "storage": {"path": str(tmp_path / "b.db")},
    })
    # The rightmost address that is not a trusted proxy; a forged left part is ignored.
    for i, chain in enumerate(("6.6.6.6, 203.0.113.1", "6.6.6.6, 203.0.113.2, 10.1.2.3")):
        r = await proxied.client.get("/token", params=params("u", f"S{i}"),
                                     headers={"X-Forwarded-For": chain})
        assert r.status_code == 200
    r = await proxied.client.get("/token", params=params("u", "S9"),
                                 headers={"X-Forwarded-For": "203.0.113.1"})
    assert r.status_code == 429  # 203.0.113.1 has used its burst
    store = proxied.store()
    assert [e.source["client"] for e in store.events()] == ["203.0.113.1", "203.0.113.2"]
    store.close()


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("192.0.2.1", "203.0.113.9", "192.0.2.1"),
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "1.1.1.1, 203.0.113.9, 10.0.0.1", "203.0.113.9"),
        ("127.0.0.1", "10.0.0.2, 10.0.0.1", "10.0.0.2"),
        ("127.0.0.1", "garbage, 10.0.0.1", "10.0.0.1"),
        ("127.0.0.1", "203.0.113.9\x1b[2J", "127.0.0.1"),
        ("127.0.0.1", "203.0.113.9, 1.1.1.1\n2026-01-01 INFO forged", "127.0.0.1"),
        ("127.0.0.1", "203.0.113.9:51234", "203.0.113.9"),
        ("127.0.0.1", "[2001:DB8::7]:443, 10.0.0.1", "2001:db8::7"),
        ("127.0.0.1", "10.0.0.3, garbage, 10.0.0.1", "10.0.0.1"),
        ("127.0.0.1", " , ", "127.0.0.1"),
        (None, "203.0.113.9", "203.0.113.9"),
        ("::1", "2001:db8::7", "2001:db8::7"),
    ],
)
def test_client_address(peer, header, expected):
    trusted = networks(["127.0.0.0/8", "::1/128", "10.0.0.0/8"])
    assert client_address(peer, header, trusted) == expected


def test_buckets_stay_bounded():
    buckets = Buckets(rate=1.0, burst=1, capacity=100)
    for i in range(1000):
        assert buckets.take(f"k{i}") == 0
    assert len(buckets._buckets) == 100
    assert buckets.take("k999") > 0


async def test_too_many_headers_is_431(start_daemon):
    daemon = await start_daemon({"server": {"max_headers": 10}})
    headers = {f"X-H{i}": "v" for i in range(12)}
    r = await daemon.client.get("/token", params=params("u", "S"), headers=headers)
    assert r.status_code == 431


async def test_oversized_header_section_is_refused(start_daemon):
    daemon = await start_daemon({"server": {"max_header_bytes": 2048}})
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)

    def send() -> bytes:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET /token HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")
            return sock.recv(1024)

    answer = await trio.to_thread.run_sync(send)
    assert not answer.startswith(b"HTTP/1.1 200")
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4")


def _open(daemon) -> socket.socket:
    host, port = daemon.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def _closed_after(sock: socket.socket, trickle: bytes = b"") -> float:
    """Seconds until the server closes ``sock``, sending ``trickle`` a byte at a time. On the
    wall clock: a virtual one would stand still while the bytes trickle in, so a timeout
    that each byte restarts would go unnoticed."""
    began = time.monotonic()
    sock.settimeout(0.05)
    for byte in [trickle[i:i + 1] for i in range(len(trickle))] + [b""] * 100:
        try:
            if sock.recv(1024) == b"":
                return time.monotonic() - began
        except TimeoutError:
            pass
        except OSError:  # reset by the server
            return time.monotonic() - began
        with contextlib.suppress(OSError):
            sock.sendall(byte)
    return time.monotonic() - began


async def test_slow_headers_are_cut_off(start_daemon):
    daemon = await start_daemon({"server": {"keep_alive_timeout": 0.3}})
    with _open(daemon) as sock:
        sock.sendall(b"GET /token HTTP/1.1\r\n")
        waited = await trio.to_thread.run_sync(_closed_after, sock, b"X-Slow: " + b"a" * 200)
    assert waited < 2


async def test_stalled_body_is_cut_off(start_daemon):
    daemon = await start_daemon({"server": {"read_timeout": 0.3}})
    with _open(daemon) as sock:
        sock.sendall(b"POST /token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nuser")
        waited = await trio.to_thread.run_sync(_closed_after, sock)
    assert waited < 2


async def test_device_cap_evicts_the_least_recently_seen(start_daemon):
    daemon = await start_daemon({"storage": {"max_devices_per_user": 3}})
    for selector in ("S1", "S2", "S3"):
        assert (await daemon.client.get("/token", params=params("erin", selector))).status_code == 200
        await trio.sleep(0.01)
    # S1 reports again (unchanged): S2 is now the least recently seen.
    await daemon.client.get("/token", params=params("erin", "S1"))
    await daemon.client.get("/token", params=params("frank", "F1"))
    assert (await daemon.client.get("/token", params=params("erin", "S4"))).status_code == 200
    store = daemon.store()
    assert sorted(d.selector for d in store.devices("erin")) == ["S1", "S3", "S4"]
    assert [d.selector for d in store.devices("frank")] == ["F1"]
    *_, registered, evicted = store.events()
    assert (registered.kind, registered.reason, registered.selector) == ("registered", "new", "S4")
    assert (evicted.kind, evicted.reason, evicted.selector) == ("removed", "evicted", "S2")
    assert evicted.seq == registered.seq + 1 and evicted.time == registered.time  # one transaction
    store.close()
