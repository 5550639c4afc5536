"""Log and terminal injection: what a client sends (a path, a header, a report field) never
starts a log line of its own and never writes a control character to the daemon's log, the
audit log or a terminal running the CLI."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
from conftest import cli, pnbridge
from plugintools import wait_until_sync
from pnbridge.model import Report
from pnbridge.storage.sqlite.store import SQLiteStore

# How every line of a spawned daemon's log starts.
LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+: "
)
# What must reach no log and no terminal: C0 (but the newline ending a line), DEL, C1, the
# Unicode line and paragraph separators.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")
FORGED = "1999-12-31 23:59:59,999 INFO pnbridge.reporter: removed selector=FORGED"
# Percent-encoded in a path or query: every kind of line break and escape sequence.
BREAKS = ["%0A", "%0D", "%0D%0A", "%1B[31m", "%1B]0;owned%07", "%E2%80%A8", "%E2%80%A9",
          "%C2%85", "%C2%9B31m", "%7F", "%00", "%0B", "%0C"]
# Raw bytes h11 lets through in a header value (all but NUL and whitespace): C0, DEL, C1
# (also as UTF-8) and the UTF-8 line separators.
RAW_HEADER = [b"\x1b[31m", b"\x1b]0;owned\x07", b"\x08\x08", b"\x7f", b"\x9b31m", b"\x85",
              b"\xc2\x85", b"\xc2\x9b2J", b"\xe2\x80\xa8", b"\xe2\x80\xa9"]


def tables(tmp_path: Path) -> dict:
    return {"server": {"log_level": "debug"}, "plugins": {
        "enabled": ["auditlog"],
        "auditlog": {"path": str(tmp_path / "audit.jsonl"), "fsync": "never"}}}


def send(url: str, raw: bytes) -> bytes:
    """``raw`` over a fresh connection to ``url``; the whole answer."""
    where = urlsplit(url)
    with socket.create_connection((where.hostname, where.port), timeout=10) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def get(target: bytes, headers: bytes = b"") -> bytes:
    return (b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n" + headers
            + b"Connection: close\r\n\r\n")


def assert_clean(text: str, what: str) -> None:
    bad = sorted({hex(ord(c)) for c in UNSAFE.findall(text)})
    assert not bad, f"{what} holds {bad}:\n{text!r}"
    forged = [line for line in text.splitlines() if line.startswith(("1999-", "INFO ", "[31m"))]
    assert not forged, f"{what} has lines a request started:\n{forged}"


def assert_log_lines(log: str) -> None:
    """Every line of the log is a record's own line."""
    assert_clean(log, "the daemon log")
    stray = [line for line in log.splitlines() if not LOG_LINE.match(line)]
    assert not stray, "lines that are no log record's:\n" + "\n".join(map(repr, stray))


def test_requests_cannot_forge_log_lines_or_reach_a_terminal(spawn, tmp_path):
    daemon = spawn(tables(tmp_path))
    url = daemon.url()
    forged = quote(FORGED).encode()
    for brk in BREAKS:
        b = brk.encode()
        # An unmatched path (the access log's route), deeper too; a username and a selector
        # the reporter refuses (400, logged); a stored report with the break in an extra.
        assert send(url, get(b"/x" + b + forged)).startswith(b"HTTP/1.1 404 ")
        assert send(url, get(b"/nope" + b + forged + b"/more")).startswith(b"HTTP/1.1 404 ")
        for field in (b"username", b"selector"):
            answer = send(url, get(b"/token/?pushToken=t&" + field + b"=u" + b + forged
                                   + (b"&username=u" if field == b"selector" else b"")))
            assert answer.startswith(b"HTTP/1.1 400 ") and b"\x1b" not in answer, answer
    for i, raw in enumerate(RAW_HEADER):
        answer = send(url, get(
            b"/token/?username=u" + str(i).encode() + b"&selector=S" + str(i).encode()
            + b"&pushToken=tok&pushappid=app&note=" + BREAKS[i].encode() + forged,
            # The peer is loopback, a trusted proxy by default: X-Forwarded-For is believed.
            b"User-Agent: " + raw + b"\r\nX-Forwarded-For: " + raw + b"FORGED\r\n"
            + b"X-Odd: " + raw + b"\r\n",
        ))
        assert answer.startswith(b"HTTP/1.1 200 "), answer
    # A charset name with escape codes (codecs.lookup folds them away, so utf-8 is used) on a
    # body that is no UTF-8: the 400 names the charset, and so may the log.
    for raw in RAW_HEADER:
        body = b"username=\xff\xfe&selector=x"
        answer = send(url, b"POST /token/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/"
                      b"x-www-form-urlencoded; charset=utf" + raw + b"8\r\nContent-Length: "
                      + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert_clean(answer.split(b"\r\n\r\n", 1)[1].decode(), "a 400's body")
    # A removal through the proxy as well.
    answer = send(url, get(b"/removeToken/?selector=S0",
                           b"X-Forwarded-For: \x1b[2J\x1b[HFORGED\r\n"))
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    audit = tmp_path / "audit.jsonl"
    total = len(RAW_HEADER) + 1
    wait_until_sync(lambda: audit.exists() and len(audit.read_text().splitlines()) == total)
    assert daemon.stop() == 0
    assert_log_lines(daemon.log)
    assert "route=/x%0A1999-12-31" in daemon.log  # the unmatched path, as it was sent
    # An X-Forwarded-For hop that is no address is not believed: the proxy is the client.
    assert "client=\\x1b" not in daemon.log and "client=127.0.0.1" in daemon.log
    # The audit file: one JSON line per event, the values intact.
    text = audit.read_text()
    assert_clean(text, "the audit log")
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["source"]["client"] for r in records] == ["127.0.0.1"] * total
    config = str(tmp_path / "pnbridge.toml")
    outputs = {
        "audit": pnbridge("audit", "--config", config),
        "audit --json": pnbridge("audit", "--json", "--config", config),
        "devices show": cli("devices", "show", "S3", "--config", config),
    }
    for what, result in outputs.items():
        assert result.returncode == 0, (what, result.stderr)
        assert_clean(result.stdout, what)
    assert len(outputs["audit"].stdout.splitlines()) == 1 + total
    assert "client=127.0.0.1" in outputs["audit"].stdout
    assert [json.loads(line) for line in outputs["audit --json"].stdout.splitlines()] == records


def stored_by_hand(tmp_path: Path, value: str) -> str:
    """A config whose database holds a device (and its events) with ``value`` in its
    username, selector and source, as an older version or another tool could have written
    it (the reporter refuses such fields today); one event parked for a plugin."""
    db = tmp_path / "pnbridge.db"
    config = tmp_path / "pnbridge.toml"
    config.write_text(f'[storage]\npath = "{db}"\n[plugins]\nenabled = ["auditlog"]\n'
                      f'[plugins.auditlog]\npath = "{tmp_path / "audit.jsonl"}"\n')
    store = SQLiteStore(db)
    with store.transaction():
        change = store.register(
            Report("token", username=f"user{value}", selector=f"sel{value}",
                   token_msgs=f"tok{value}en-long-enough", appid_msgs=f"app{value}",
                   extras={f"note{value}": value}),
            {"client": f"10.0.0.1{value}"}, time.time())
        store.register(Report("token", username="plain", selector="plain", token_msgs="t"),
                       {}, time.time())
        assert change.event is not None
        store.park(f"plugin{value}", change.event, 3, f"failed: {value}", time.time(),
                   time.time())
    store.close()
    return str(config)


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "\x1b[2J", "\x9b31m", "x\u2028y", "\x7f",
                                   "\x85", "\x07\x08", "\u202etxt.exe"])
def test_the_cli_escapes_what_the_database_holds(tmp_path, value):
    config = stored_by_hand(tmp_path, value)
    commands = [
        ["devices", "list"], ["devices", "list", "--json"],
        ["devices", "show", f"sel{value}"], ["devices", "show", f"sel{value}", "--json"],
        ["events"], ["events", "--json"], ["events", "--failed"],
        ["events", "--failed", "--json"], ["events", "--plugin", f"plugin{value}"],
        ["devices", "remove", f"sel{value}"], ["devices", "show", f"sel{value}"],
    ]
    for number, args in enumerate(commands, 1):
        result = cli(*args, "--config", config)
        gone = number == len(commands)  # shown after its removal: "no device ..."
        assert result.returncode == (1 if gone else 0), (args, result.stderr)
        assert_clean(result.stdout + result.stderr, " ".join(args))
        if "--json" in args:
            json.loads(result.stdout)
    listed = cli("devices", "list", "--config", config).stdout.splitlines()
    assert len(listed) == 2  # the header and the plain device
