"""Every request in the two Acrobits seed documents, replayed over a raw socket against a
real ``pnbridge serve``, gets the documented answer; ``pnbridge devices list --json`` shows
the stored pairs.

The seed's JSON examples declare ``Content-Length: 183`` for a 340-byte body (a documentation
slip: no server could read the selector at its end); the replay sends the true length and
everything else byte for byte.
"""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import pytest
from conftest import cli

SEL = "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
TOKEN_MSGS = "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"
TOKEN_CALLS = "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY="
BOTH_PAIRS = {
    "username": "johndow", "selector": SEL,
    "token_msgs": TOKEN_MSGS, "appid_msgs": "com.cloudsoftphone.app",
    "token_calls": TOKEN_CALLS, "appid_calls": "com.cloudsoftphone.app.pushkit",
}

GET_QUERY = (
    "?username=johndow&password=12345678&selector=12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
    "&token_msgs=QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J"
    "&appid_msgs=com.cloudsoftphone.app&token_calls=Udl99X2JFP1bWwS5gR%2FwGeLE1hmAB2CMpr1Ej0wxkrY%3D"
    "&appid_calls=com.cloudsoftphone.app.pushkit"
)
JSON_BODY = """{
    "token_msgs"    : "QVBBOTFiRzlhcVd2bW54bllCWldHOWh4dnRrZ3pUWFNvcGZpdWZ6bWM2dFAzS2J",
    "appid_msgs"    : "com.cloudsoftphone.app",
    "token_calls"   : "Udl99X2JFP1bWwS5gR/wGeLE1hmAB2CMpr1Ej0wxkrY=",
    "appid_calls"   : "com.cloudsoftphone.app.pushkit",
    "selector"      : "12869E0E6E553673C54F29105A0647204C416A2A:7C3A0D14"
}"""
HEADERS = "Host: example.com\r\nConnection: close\r\nCache-Control: max-age=0\r\nUser-Agent: CloudSoftphone/1.5.6\r\n"


def get_request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\n{HEADERS}\r\n".encode()


def post_request(path: str, body: str, content_type: str | None) -> bytes:
    data = body.encode()
    type_line = f"Content-Type: {content_type}\r\n" if content_type else ""
    head = f"POST {path} HTTP/1.1\r\n{HEADERS}{type_line}Content-Length: {len(data)}\r\n\r\n"
    return head.encode() + data


def exchange(url: str, request: bytes) -> tuple[str, dict[str, str], bytes]:
    """Send raw bytes; read the answer's head and its Content-Length of body."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        status, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        while len(body) < int(headers["content-length"]):
            body += sock.recv(65536)
    return status, headers, body


def assert_documented_success(answer):
    status, headers, body = answer
    assert status.startswith("HTTP/1.1 200"), answer
    assert headers.get("content-length") == "0" and body == b""
    assert "content-type" not in headers


@pytest.fixture
def daemon(spawn, tmp_path):
    db = tmp_path / "seed.db"
    process = spawn(f"""
[server]
listen = ["127.0.0.1:0"]
[storage]
path = "{db}"
[[reporter.routes]]
path = "/pushToken/{{username}}/{{selector}}/{{pushToken}}&appid={{pushappid}}"
kind = "token"
[[reporter.routes]]
path = "/removePushToken/{{username}}/{{selector}}/{{pushToken}}&appid={{pushappid}}"
kind = "removal"
""")
    process.config = str(tmp_path / "pnbridge.toml")
    process.base = process.url()
    return process


def stored(daemon) -> list[dict]:
    result = cli("devices", "list", "--json", "--config", daemon.config)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def pairs(device: dict) -> dict:
    return {k: device[k] for k in BOTH_PAIRS}


def test_connection_close_is_honoured(daemon):
    """The app sends Connection: close; the server closes the socket right after answering
    (not at its keep-alive timeout), so a morning rush does not pile up idle sockets."""
    parts = urlsplit(daemon.base)
    with socket.create_connection((parts.hostname, parts.port), timeout=3) as sock:
        began = time.monotonic()
        sock.sendall(get_request("/token/" + GET_QUERY))
        answer = b""
        while chunk := sock.recv(65536):  # until the server closes
            answer += chunk
        # Wall clock: the daemon is a child process (no virtual clock): a generous bound.
        assert time.monotonic() - began < 2
    assert answer.startswith(b"HTTP/1.1 200")


def test_push_token_reporter_get_example(daemon):
    assert_documented_success(exchange(daemon.base, get_request("/token/" + GET_QUERY)))
    (device,) = stored(daemon)
    assert pairs(device) == BOTH_PAIRS
    assert "password" not in json.dumps(device) and "12345678" not in json.dumps(device)


def test_push_token_reporter_post_json_example(daemon):
    request = post_request("/token/johndow/", JSON_BODY, "application/json")
    assert_documented_success(exchange(daemon.base, request))
    (device,) = stored(daemon)
    assert pairs(device) == BOTH_PAIRS


def test_account_removal_reporter_get_example(daemon):
    exchange(daemon.base, get_request("/token/" + GET_QUERY))
    exchange(daemon.base, get_request("/token/" + GET_QUERY.replace(SEL, "other:1")))
    assert_documented_success(exchange(daemon.base, get_request("/removeToken/" + GET_QUERY)))
    assert [d["selector"] for d in stored(daemon)] == ["other:1"]


def test_account_removal_reporter_post_json_example(daemon):
    exchange(daemon.base, post_request("/token/johndow/", JSON_BODY, "application/json"))
    request = post_request("/removeToken/johndow/", JSON_BODY, "application/json")
    assert_documented_success(exchange(daemon.base, request))
    assert stored(daemon) == []


# The configuration examples of both seeds, with the app's %variables% filled in.
FILLED = {
    "%account[username]%": "johndow", "%selector%": SEL,
    "%pushTokenIncomingCall%": TOKEN_CALLS, "%pushappid_incoming_call%": "com.cloudsoftphone.app.pushkit",
    "%pushTokenOther%": TOKEN_MSGS, "%pushappid_other%": "com.cloudsoftphone.app",
    "%pushToken%": TOKEN_MSGS, "%pushappid%": "com.cloudsoftphone.app",
}
QUERY_TEMPLATE = (
    "?username=%account[username]%&selector=%selector%&token_calls=%pushTokenIncomingCall%"
    "&appid_calls=%pushappid_incoming_call%&token_msgs=%pushTokenOther%&appid_msgs=%pushappid_other%"
)
FORM_TEMPLATE = QUERY_TEMPLATE[1:]
JSON_TEMPLATE = (
    '{ "username" : "%account[username]%", "token_calls" : "%pushTokenIncomingCall%", '
    '"token_msgs" : "%pushTokenOther%", "selector" : "%selector%", '
    '"appId_calls": "%pushappid_incoming_call%", "appId_msgs" : "%pushappid_other%" }'
)
PATH_TEMPLATE = "/%account[username]%/%selector%/%pushToken%&appid=%pushappid%"


def fill(template: str) -> str:
    """Substitute like the app, which does not URL-encode (tokens keep "+", "/" and "=")."""
    for variable, value in FILLED.items():
        template = template.replace(variable, value)
    return template


@pytest.mark.parametrize(
    ("token_request", "removal_request"),
    [
        pytest.param(get_request("/token/" + fill(QUERY_TEMPLATE)),
                     get_request("/removeToken/" + fill(QUERY_TEMPLATE)), id="url-query"),
        pytest.param(post_request("/token", fill(FORM_TEMPLATE), None),
                     post_request("/removeToken", fill(FORM_TEMPLATE), None), id="post-data-form"),
        pytest.param(post_request("/token", fill(JSON_TEMPLATE), "application/json"),
                     post_request("/removeToken", fill(JSON_TEMPLATE), "application/json"),
                     id="post-data-json"),
    ],
)
def test_configuration_examples_with_both_pairs(daemon, token_request, removal_request):
    assert_documented_success(exchange(daemon.base, token_request))
    (device,) = stored(daemon)
    assert pairs(device) == BOTH_PAIRS
    assert_documented_success(exchange(daemon.base, removal_request))
    assert stored(daemon) == []


def test_path_style_examples(daemon):
    token = get_request("/pushToken" + fill(PATH_TEMPLATE))
    assert_documented_success(exchange(daemon.base, token))
    (device,) = stored(daemon)
    assert pairs(device) == {
        "username": "johndow", "selector": SEL, "token_msgs": TOKEN_MSGS,
        "appid_msgs": "com.cloudsoftphone.app", "token_calls": None, "appid_calls": None,
    }
    removal = get_request("/removePushToken" + fill(PATH_TEMPLATE))
    assert_documented_success(exchange(daemon.base, removal))
    assert stored(daemon) == []
