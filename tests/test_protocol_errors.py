"""The answers the HTTP/1 protocol gives itself, before any route sees the request (a
malformed head, a head over ``[server] max_header_bytes``): a status and one line of compact
JSON, as every push API answer. The head limit holds however the bytes arrive: in one
segment, or in many small ones. Over raw sockets against the real daemon."""

from __future__ import annotations

import contextlib
import json

import pytest
import trio
from conftest import Daemon, StartDaemon

LIMIT = 16384  # [server] max_header_bytes, the default


async def exchange(
    daemon: Daemon, head: bytes, *, piece: int | None = None
) -> tuple[int, dict[str, str], bytes]:
    """Send ``head`` (in one send, or in sends of ``piece`` bytes), read the answer to its
    end (the daemon closes after a protocol error; a good request asks for the close)."""
    host, port = daemon.url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        with trio.fail_after(10):
            # The daemon answers a head too large before it has all of it, and closes: the
            # rest of it finds the connection closed.
            with contextlib.suppress(trio.BrokenResourceError):
                if piece is None:
                    await stream.send_all(head)
                else:
                    for start in range(0, len(head), piece):
                        await stream.send_all(head[start:start + piece])
                        await trio.sleep(0)
            answer = b""
            with contextlib.suppress(trio.BrokenResourceError):
                while chunk := await stream.receive_some(65536):
                    answer += chunk
    top, _, body = answer.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_json_error(headers: dict[str, str], body: bytes, reason: str) -> None:
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    assert body.endswith(b"\n") and body.count(b"\n") == 1
    assert body == json.dumps({"error": reason}, separators=(",", ":")).encode() + b"\n"


@pytest.mark.parametrize("head", [
    b"POST /api/v1/push HTTP/1.1\r\nHost: pbx\r\nno colon here\r\n\r\n",
    b"POST /api/v1/push HTTP/1.1\r\nHost: pbx\r\nContent-Length: 2\r\nContent-Length: 3\r\n"
    b"\r\n{}",
    b"G@T /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["malformed-line", "two-content-lengths", "bad-method"])
async def test_a_malformed_request_gets_400_in_json(start_daemon: StartDaemon, head: bytes):
    daemon = await start_daemon()
    status, headers, body = await exchange(daemon, head)
    assert status == 400
    assert_json_error(headers, body, "malformed HTTP request")
    assert headers["connection"] == "close"


@pytest.mark.parametrize("coding", [b"gzip", b"chunked\r\nTransfer-Encoding: chunked"])
async def test_a_transfer_encoding_other_than_one_chunked_gets_501_in_json(
        start_daemon: StartDaemon, coding: bytes):
    daemon = await start_daemon()
    status, headers, body = await exchange(
        daemon, b"POST /api/v1/push HTTP/1.1\r\nHost: pbx\r\nTransfer-Encoding: " + coding
        + b"\r\n\r\n")
    assert status == 501
    assert_json_error(headers, body, "unsupported Transfer-Encoding (chunked only)")


def request_of(size: int) -> bytes:
    """A GET /healthz whose head (request line to the blank line) is ``size`` bytes."""
    start = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
    end = b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


@pytest.mark.parametrize("piece", [None, 512], ids=["one-send", "many-sends"])
@pytest.mark.parametrize("size", [LIMIT + 1, 17_000, 60_000, 300_000])
async def test_a_head_over_max_header_bytes_gets_431_however_it_arrives(
        start_daemon: StartDaemon, size: int, piece: int | None):
    daemon = await start_daemon()
    status, headers, body = await exchange(daemon, request_of(size), piece=piece)
    assert status == 431
    assert_json_error(headers, body, "request head too large ([server] max_header_bytes)")


@pytest.mark.parametrize("piece", [None, 512], ids=["one-send", "many-sends"])
async def test_a_head_at_max_header_bytes_is_served(start_daemon: StartDaemon,
                                                    piece: int | None):
    daemon = await start_daemon()
    status, _, _ = await exchange(daemon, request_of(LIMIT), piece=piece)
    assert status == 200


async def test_the_limit_follows_the_setting(start_daemon: StartDaemon):
    daemon = await start_daemon({"server": {"max_header_bytes": 4096}})
    assert (await exchange(daemon, request_of(4096)))[0] == 200
    assert (await exchange(daemon, request_of(4097)))[0] == 431
