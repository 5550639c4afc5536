"""Attacks on reporter authentication, sent as raw bytes to a real daemon: malformed
Authorization headers, password guessing, a failing or blocking ``authenticate_report``
hook, IPv6 clients spreading over their /64, and floods of Basic (scrypt) checks."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import pytest
import trio
from conftest import PASSWORDS, cli
from faults import rss_kib
from plugintools import install_plugins, wait_until_sync
from pnbridge.access import users
from pnbridge.access.ratelimit import client_key
from reports import report

ALICE, BOB = "alice", "bob"
REALM = "pnbridge"


def write_users(tmp_path) -> str:
    path = tmp_path / "users"
    users.write(path, {n: users.new_user(n, REALM, p) for n, p in PASSWORDS.items()})
    return str(path)


async def raw(url: str, head: bytes, body: bytes = b"") -> tuple[int, bytes, bytes]:
    """Send one HTTP/1.1 request (``head`` without its final blank line) over a new
    connection; the status, the header block (Date removed) and the body."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host.strip("[]"), int(port))
    async with stream:
        await stream.send_all(head + b"\r\nConnection: close\r\n\r\n" + body)
        answer = b""
        with trio.fail_after(20):
            while chunk := await stream.receive_some(65536):
                answer += chunk
    head_block, _, rest = answer.partition(b"\r\n\r\n")
    status = int(head_block.split(b" ", 2)[1])
    headers = b"\r\n".join(
        line for line in head_block.split(b"\r\n")[1:] if not line.lower().startswith(b"date:")
    )
    return status, headers, rest


def get(target: str, *headers: bytes) -> bytes:
    return b"\r\n".join([f"GET {target} HTTP/1.1".encode(), b"Host: pnbridge", *headers])


def digest_header(user: str, password: str, nonce: str, uri: str, nc: int = 1,
                  method: str = "GET") -> bytes:
    """What a Digest client (RFC 7616, MD5, qop=auth) sends."""
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()
    cnonce, count = "0a4f113b", f"{nc:08x}"
    answer = md5(f"{md5(f'{user}:{REALM}:{password}')}:{nonce}:{count}:{cnonce}:auth:"
                 f"{md5(f'{method}:{uri}')}")
    return (f'Authorization: Digest username="{user}", realm="{REALM}", nonce="{nonce}", '
            f'uri="{uri}", qop=auth, nc={count}, cnonce="{cnonce}", response="{answer}", '
            f"algorithm=MD5").encode()


async def nonce_for(url: str, target: str) -> str:
    status, headers, _ = await raw(url, get(target))
    assert status == 401
    return re.search(rb'nonce="([^"]+)"', headers).group(1).decode()


def basic_header(user: str, password: str) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode())


def masked(headers: bytes) -> bytes:
    """A header block with its Digest nonces masked (each challenge has a fresh one)."""
    return re.sub(rb'nonce="[^"]+"', b'nonce="N"', headers)


# -- item 3: malformed Authorization headers answer 401, never 500 ---------------------------

TARGET = "/token?username=alice&selector=S1&token_msgs=tok"
FULL = ('realm="pnbridge", nonce="{nonce}", uri="' + TARGET + '", qop=auth, nc=00000001, '
        'cnonce="c", response="{response}"')


def digest_cases(nonce: str) -> list[bytes]:
    full = FULL.format(nonce=nonce, response="0" * 32)
    return [
        b"Digest", b"Digest ", b"Digest username", b"Digest username=", b'Digest username="',
        b'Digest username="alice', b'Digest username="alice\\"', b"Digest =alice",
        b"Digest ,,,", b'Digest username="alice",', b'Digest username="alice" realm="x"',
        b'Digest username="alice", username="bob", ' + full.encode(),  # duplicated
        b'Digest username="alice", ' + full.replace(", qop=auth", "").encode(),  # missing
        b'Digest username="alice", ' + full.encode() + b', qop=auth',
        b'Digest username="' + b"a" * 6000 + b'", ' + full.encode(),  # huge
        b"Digest username=" + b"x" * 6000,
        b'Digest username="\xe4lice", ' + full.encode(),  # latin-1: not UTF-8
        'Digest username="älice", '.encode() + full.encode(),  # UTF-8, unknown user
        b'Digest username="alice", ' + FULL.format(nonce=nonce, response="\xe4" * 32)
        .encode("latin-1"),  # non-ASCII response
        b'Digest username="alice", ' + FULL.format(nonce=nonce, response="ä" * 32)
        .encode(),
        b'Digest username="alice", ' + full.replace(TARGET, "http://[::1/token").encode(),
        b'Digest username="alice", ' + full.replace("00000001", "0000_001").encode(),
        b'Digest username="alice", ' + full.replace("00000001", "00000000").encode(),
        b'Digest username="alice", ' + full.replace(nonce, "\xe4\xe4").encode("latin-1"),
        b'Digest username="alice", ' + full.replace(nonce, "%%%").encode(),
        b'Digest username="alice", ' + full.encode() + b", algorithm=SHA-512",
        b'Digest username="alice", ' + full.encode() + b', userhash=true',
        b'Digest username="al\x7fice", ' + full.encode(),
        b"Digest \xff\xfe\x00".replace(b"\x00", b""),
    ]


BASIC_CASES = [
    b"Basic", b"Basic ", b"Basic \xc3\xa4\xc3\xa4", b"Basic \xe4\xe4\xe4\xe4",
    b"Basic !!!!", b"Basic YWxpY2U", b"Basic " + base64.b64encode(b"alice"),
    b"Basic " + base64.b64encode(b"alice\xff:pw"), b"Basic " + base64.b64encode(b":"),
    b"Basic " + base64.b64encode(b"x" * 6000), b"Basic " + b"A" * 6000 + b"=",
    b"Basic " + base64.b64encode(b"alice:" + PASSWORDS[ALICE].encode()) + b"\xe4",
    b"Basic YWxp Y2U6eA==", b"Basic\tYWxpY2U6eA==", b"basic", b"Bearer x", b"\xe4",
]


@pytest.mark.parametrize("mode", ["digest", "basic"])
async def test_malformed_authorization_is_a_401_with_the_modes_challenge(
    start_daemon, tmp_path, mode
):
    daemon = await start_daemon({"auth": {"reporter": mode, "users_file": write_users(tmp_path)}})
    cases = digest_cases(await nonce_for(daemon.url, TARGET)) if mode == "digest" else BASIC_CASES
    for case in cases:
        status, headers, body = await raw(daemon.url, get(TARGET, b"Authorization: " + case
                                                          if not case.startswith(b"Auth")
                                                          else case))
        assert status == 401, case
        assert re.search(rb"(?i)www-authenticate: " + mode.encode(), headers), case
        assert body == b"authentication required\n", case
    # Still served: the real client is let in.
    auth = httpx.DigestAuth if mode == "digest" else httpx.BasicAuth
    r = await daemon.client.get(TARGET, auth=auth(ALICE, PASSWORDS[ALICE]))
    assert r.status_code == 200


ROUTE = "/t/{username}/{selector}/{token_msgs}"


def test_an_unexpected_exception_is_a_500_whose_log_holds_no_path(spawn, tmp_path):
    """A device row the daemon cannot read (a token stored as a BLOB by another tool) makes
    the report for it fail unexpectedly. The answer is a bare 500, and the log
    names the route template and the exception type, never the path or the query."""
    db = tmp_path / "pnbridge.db"
    daemon = spawn({"reporter": {"routes": [{"path": ROUTE, "kind": "token"}]}})
    url = daemon.url()
    assert httpx.get(f"{url}/t/alice/S1/first-token").status_code == 200
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE devices SET token_msgs = x'ff00' WHERE selector = 'S1'")
    r = httpx.get(f"{url}/t/alice/S1/SECRET-TOKEN-7f3a?q=QUERY-SECRET-19")
    assert r.status_code == 500
    assert r.text.startswith("The server encountered an internal error") and r.text[-1] == "\n"
    line = daemon.wait_for(r"unexpected \w+ on GET route=\S+: answered 500")
    assert f"route={ROUTE}" in line.string
    assert httpx.get(f"{url}/healthz").status_code == 200
    daemon.stop()
    log = daemon.log
    for secret in ("SECRET-TOKEN-7f3a", "QUERY-SECRET-19", "/t/alice/S1", "Traceback"):
        assert secret not in log, secret


# -- item 5: password guessing --------------------------------------------------------------

GUESSES = {"username_rate": 0.001, "username_burst": 5}


async def guess_daemon(start_daemon, tmp_path, mode: str, **reporter):
    config = {"auth": {"reporter": mode, "users_file": write_users(tmp_path)},
              "reporter": {**GUESSES, **reporter}}
    if mode == "hook":
        install_plugins(tmp_path / "plugins", "auth/pbxauth")
        config["plugins"] = {"paths": [str(tmp_path / "plugins")], "enabled": ["pbxauth"],
                             "pbxauth": {"passwords": PASSWORDS, "refuse_unknown": True}}
        config["reporter"]["routes"] = [
            {"path": "/p/{username}/{password}/{selector}/{token_msgs}", "kind": "token"}]
    return await start_daemon(config)


async def guess(daemon, mode: str, password: str, n: int) -> tuple[int, bytes, bytes]:
    """Guess ``n``-th at alice's password, with the report naming another user each time
    (or, every other guess, a removal naming none)."""
    named = n % 2 == 0
    target = (f"/token?username=mallory{n}&selector=G{n}&token_msgs=t" if named
              else f"/removeToken?selector=G{n}")
    if mode == "basic":
        return await raw(daemon.url, get(target, basic_header(ALICE, password)))
    if mode == "digest":
        nonce = await nonce_for(daemon.url, target)
        return await raw(daemon.url, get(target, digest_header(ALICE, password, nonce, target)))
    target = f"/p/alice/{password}/G{n}/t" if named else f"/token?username=alice&password=" \
        f"{password}&selector=G{n}&token_msgs=t"
    return await raw(daemon.url, get(target))


@pytest.mark.parametrize("mode", ["basic", "digest", "hook"])
async def test_guesses_at_one_password_are_limited_by_the_claimed_user(
    start_daemon, tmp_path, mode
):
    daemon = await guess_daemon(start_daemon, tmp_path, mode)
    statuses = [(await guess(daemon, mode, f"guess-{n}", n))[0] for n in range(12)]
    assert statuses[:4] == [401] * 4 and statuses[-6:] == [429] * 6, statuses
    # The right password is limited as well: the limit says nothing about it.
    assert (await guess(daemon, mode, PASSWORDS[ALICE], 99))[0] == 429
    # Another user is not.
    target = "/token?username=bob&selector=B1&token_msgs=t"
    if mode == "basic":
        status = (await raw(daemon.url, get(target, basic_header(BOB, PASSWORDS[BOB]))))[0]
    elif mode == "digest":
        status = (await daemon.client.get(target, auth=httpx.DigestAuth(BOB, PASSWORDS[BOB]))
                  ).status_code
    else:
        status = (await raw(daemon.url, get(f"/p/bob/{PASSWORDS[BOB]}/B1/t")))[0]
    assert status == 200


def test_long_claimed_names_cost_little_memory(spawn, tmp_path):
    """3,000 Digest headers each naming a new 15,000-character user: each gets a per-user
    bucket, keyed by the name's hash, so the daemon grows by far less than the 45 MB of names
    (it grew by 46 MB when the name itself was the key)."""
    daemon = spawn(f"""\
[server]
listen = ["127.0.0.1:0"]
access_log = false
[storage]
path = "{tmp_path / 'pnbridge.db'}"
[reporter]
client_rate = 0
[auth]
reporter = "digest"
users_file = "{write_users(tmp_path)}"
""")
    address = (urlsplit(daemon.url()).hostname, urlsplit(daemon.url()).port)

    def claim(n: int) -> int:
        header = f'Digest username="{n:05d}{"m" * 15_000}", realm="pnbridge", nonce="x", ' \
                 'uri="/token", response="0"'
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(f"GET /token?username=u&selector=s&token_msgs=t HTTP/1.1\r\nHost: x\r\nAuthorization: "
                         f"{header}\r\nConnection: close\r\n\r\n".encode())
            return int(sock.recv(64).split(b" ")[1])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(claim, range(100)))  # warm up
        before = rss_kib(daemon.popen.pid)
        statuses = set(pool.map(claim, range(100, 3100)))
    assert statuses == {401}
    grown = rss_kib(daemon.popen.pid) - before
    assert grown < 20 * 1024, f"{grown} KiB"


@pytest.mark.parametrize("mode", ["basic", "digest", "hook"])
async def test_refused_answers_are_the_same_for_a_right_and_a_wrong_password(
    start_daemon, tmp_path, mode
):
    daemon = await guess_daemon(start_daemon, tmp_path, mode, username_rate=0)
    answers = {}
    for password in (PASSWORDS[ALICE], "wrong-password", ""):
        for n, target in enumerate((
            "/token?username=bob&selector=A1&token_msgs=t",  # names another user
            "/removeToken?username=bob&selector=A1",
        )):
            if mode == "basic":
                answer = await raw(daemon.url, get(target, basic_header(ALICE, password)))
            elif mode == "digest":
                nonce = await nonce_for(daemon.url, target)
                answer = await raw(daemon.url, get(target, digest_header(
                    ALICE, password, nonce, target)))
            else:
                answer = await raw(daemon.url, get(target + f"&password={password}"))
            answers[password, n] = (answer[0], masked(answer[1]), answer[2])
    refused = set(answers.values())
    assert len(refused) == 1, answers
    status, headers, _ = refused.pop()
    assert status == 401
    assert (b"www-authenticate" in headers.lower()) == (mode != "hook")


# -- item 9: a failing or blocking authenticate_report hook -----------------------------------

def test_a_failing_or_blocking_auth_hook_is_a_503_and_starves_nothing(spawn, tmp_path):
    release = tmp_path / "release"
    plugins = tmp_path / "plugins"
    install_plugins(plugins, "auth/pbxdown", "auth/pbxasync", "auth/threadrec")
    recorded = tmp_path / "recorded"
    daemon = spawn({
        "auth": {"reporter": "hook", "hook_timeout": 1.0, "hook_threads": 4},
        "reporter": {"routes": [{"path": "/open/token", "kind": "token", "auth": "none"}]},
        "plugins": {"paths": [str(plugins)], "enabled": ["pbxdown", "pbxasync", "threadrec"],
                    "threadrec": {"path": str(recorded)}, "pbxdown": {"release": str(release)}},
    })
    url = daemon.url()

    def report_as(user: str, selector: str, path: str = "/token") -> httpx.Response:
        with httpx.Client(base_url=url, timeout=30) as client:
            return report(client, selector, path=path, status=None, username=user, token=None,
                          token_msgs="t", password="pw-71c")

    try:
        for user in ("raises", "async-raises"):
            started = time.monotonic()
            r = report_as(user, "R1")
            # Wall clock: the daemon is a child process, no virtual clock reaches it.
            assert r.status_code == 503 and time.monotonic() - started < 1.0, user
            assert r.text == "authentication unavailable, try again later\n"
        results: list[tuple[int, float]] = []

        async def blocked(n: int) -> None:
            started = time.monotonic()
            r = await client.get("/token", params={
                "username": "blocks" if n % 4 else "async-blocks", "selector": f"B{n}",
                "token_msgs": "t"})
            results.append((r.status_code, time.monotonic() - started))

        async def meanwhile() -> None:
            await trio.sleep(0.3)  # the blocked reports hold every hook thread by now
            for n in range(3):
                started = time.monotonic()
                r = await client.get("/token", params={
                    "username": "carol", "selector": f"C{n}", "token_msgs": "t"})
                assert r.status_code in (200, 503)
                assert time.monotonic() - started < 2.0
                assert (await client.get("/healthz")).status_code == 200

        async def main() -> None:
            async with client, trio.open_nursery() as nursery:
                for n in range(60):
                    nursery.start_soon(blocked, n)
                nursery.start_soon(meanwhile)

        client = httpx.AsyncClient(base_url=url, timeout=30,
                                   limits=httpx.Limits(max_connections=100))
        trio.run(main)
        # Every report got its 503 within the deadline (a token of the limiter is awaited
        # within it too), none hangs.
        assert len(results) == 60
        assert {status for status, _ in results} == {503}
        # Wall clock: the daemon is a child process (no virtual clock): a generous bound.
        assert max(took for _, took in results) < 3.0
        # The hook's 4 threads are all held, so a hook report waits for one and is a 503;
        # every other thread task still runs: a report of another route is stored and
        # delivered to a plain event hook (a worker thread), and SIGHUP reloads.
        assert report_as("dave", "D1").status_code == 503
        assert report_as("dave", "D1", "/open/token").status_code == 200
        wait_until_sync(lambda: recorded.exists() and "D1" in recorded.read_text())
        daemon.popen.send_signal(1)
        daemon.wait_for("config reloaded")
    finally:
        release.touch()
    # Once the blocked hooks return, their threads serve reports again.
    wait_until_sync(lambda: report_as("erin", "E1").status_code == 200)
    daemon.stop()
    log = daemon.log
    assert "pw-71c" not in log  # the raised message quoted the password: not logged
    assert "plugin pbxdown: authenticate_report failed: ConnectionError" in log
    assert "plugin pbxdown: authenticate_report gave no answer within 1s" in log


def test_hook_settings_are_checked(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[auth]\nhook_timeout = 0\nhook_threads = 0\nbasic_checks = 0\n"
                    "basic_queue = -1\n[reporter]\nipv6_prefix = 129\n")
    result = cli("check-config", "--config", str(path))
    assert result.returncode == 1
    for problem in ("auth.hook_timeout: must be greater than 0",
                    "auth.hook_threads: must be 1 or more", "auth.basic_checks: must be 1 or more",
                    "auth.basic_queue: must be 0 or more", "reporter.ipv6_prefix: must be 1 to 128"):
        assert problem in result.stderr, result.stderr


# -- item 10c: IPv6 clients are limited by their /64 ------------------------------------------


def test_client_key_groups_ipv6_by_prefix():
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9") \
        == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("2001:db8:1:2::1", 128) != client_key("2001:db8:1:2::2", 128)
    assert client_key("2001:db8::1", 48) == client_key("2001:db8:0:ffff::1", 48)
    assert client_key("::ffff:192.0.2.1") == client_key("192.0.2.1") == "192.0.2.1"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key("unix") == "unix"


@pytest.mark.parametrize("prefix", [64, 128])
async def test_ipv6_addresses_of_one_network_share_a_bucket(start_daemon, prefix):
    daemon = await start_daemon({
        "server": {"trusted_proxies": ["127.0.0.1/32"]},
        "reporter": {"client_rate": 0.001, "client_burst": 3, "ipv6_prefix": prefix},
    })

    async def from_address(address: str, n: int) -> int:
        return (await raw(daemon.url, get(f"/token?username=u{n}&selector=S{n}&token_msgs=t",
                                          f"X-Forwarded-For: {address}".encode())))[0]

    statuses = [await from_address(f"2001:db8:1:2::{n:x}", n) for n in range(1, 7)]
    if prefix == 64:
        assert statuses == [200, 200, 200, 429, 429, 429]
        assert await from_address("2001:db8:1:3::1", 7) == 200  # another network
    else:
        assert statuses == [200] * 6


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback() and not os.environ.get("CI"),
                    reason="this host has no IPv6 loopback")
async def test_an_ipv6_peer_is_limited_by_its_network(start_daemon):
    daemon = await start_daemon({
        "server": {"listen": ["[::1]:0"]},
        "reporter": {"client_rate": 0.001, "client_burst": 2},
    })
    assert "[::1]" in daemon.url
    statuses = [(await raw(daemon.url, get(f"/token?username=u&selector=S{n}&token_msgs=t")))[0]
                for n in range(3)]
    assert statuses == [200, 200, 429]


# -- item 10d: Basic's scrypt checks are bounded -----------------------------------------------


async def test_a_flood_of_basic_reports_gets_answers_or_503_quickly(start_daemon, tmp_path):
    daemon = await start_daemon({"auth": {
        "reporter": "basic", "users_file": write_users(tmp_path), "basic_checks": 1,
        "basic_queue": 2,
    }})
    results: list[tuple[int, float]] = []
    header = basic_header(ALICE, PASSWORDS[ALICE])

    async def one(n: int) -> None:
        started = time.monotonic()
        status, _, _ = await raw(daemon.url, get(
            f"/token?username=alice&selector=F{n}&token_msgs=t", header))
        results.append((status, time.monotonic() - started))

    async with trio.open_nursery() as nursery:
        for n in range(40):
            nursery.start_soon(one, n)
        await trio.sleep(0.05)
        r = await daemon.client.get("/healthz")
        assert r.status_code == 200
    statuses = [status for status, _ in results]
    assert set(statuses) == {200, 503}, statuses
    # Wall clock: the password checks run in worker threads, on the real clock.
    assert max(took for _, took in results) < 5.0
    status, _, _ = await raw(daemon.url, get(
        "/token?username=alice&selector=F99&token_msgs=t", header))
    assert status == 200


# -- generated Authorization headers ---------------------------------------------------------

PIECES = [b'"', b",", b"=", b"\\", b" ", b"\t", b"\xe4", b"\xc3\xa4", b"\xff", b"\x7f", b"%",
          b"[", b"username=", b'realm="', b", nc=", b"Digest ", b"Basic ", b"\x01"]


def mutate(rng, header: bytes) -> bytes:
    """``header`` with one to four random cuts, insertions, deletions or repetitions."""
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(header) + 1)
        op = rng.randrange(4)
        if op == 0:
            header = header[:at]
        elif op == 1:
            header = header[:at] + rng.choice(PIECES) + header[at:]
        elif op == 2:
            header = header[:at] + header[at + rng.randint(1, 8):]
        else:
            header = header[:at] + header[at - rng.randint(1, 20):at] + header[at:]
    return header


@pytest.mark.parametrize(("mode", "count"), [("digest", 1500), ("basic", 150)])
async def test_generated_authorization_headers_never_get_a_5xx(start_daemon, tmp_path, mode,
                                                               count):
    import random
    rng = random.Random(14)
    daemon = await start_daemon({"auth": {"reporter": mode, "users_file": write_users(tmp_path)}})
    statuses: dict[int, int] = {}
    for n in range(count):
        target = f"/token?username=alice&selector=Z{n}&token_msgs=t"
        if mode == "digest":
            valid = digest_header(ALICE, PASSWORDS[ALICE], await nonce_for(daemon.url, target),
                                  target)
        else:
            valid = basic_header(ALICE, PASSWORDS[ALICE])
        header = mutate(rng, valid.removeprefix(b"Authorization: "))
        status, _, body = await raw(daemon.url, get(target, b"Authorization: " + header))
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500 and b"Traceback" not in body, (header, status, body)
    assert statuses.get(401, 0) > count // 2, statuses
    r = await daemon.client.get("/token?username=alice&selector=OK&token_msgs=t",
                                auth=httpx.DigestAuth(ALICE, PASSWORDS[ALICE]) if mode == "digest"
                                else httpx.BasicAuth(ALICE, PASSWORDS[ALICE]))
    assert r.status_code == 200
