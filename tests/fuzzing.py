"""Generators of hostile requests, one per attack class of docs/security.md, for the HTTP fuzz
tests: each returns the raw bytes of a request (or a cut-off one) an attacker would send."""

from __future__ import annotations

import base64
import encodings.aliases
import json
import random
import socket
import struct
import time
from urllib.parse import quote

from faults import API_KEY

# A line break a request smuggles into a log is followed by this: no log line may start with it.
FORGED = "FORGED-LINE"

# Codec names Python knows that are not text encodings, others that are, and names no codec has.
CHARSETS = sorted({*encodings.aliases.aliases, *encodings.aliases.aliases.values(),
                   "rot13", "rot_13", "base64", "base_64", "hex", "zlib", "bz2", "uu", "quopri",
                   "undefined", "punycode", "idna", "unicode_escape", "raw_unicode_escape",
                   "utf-8-sig", "utf-16", "utf-32", "mbcs", "oem", "palmos", "x" * 300, "",
                   '"utf-8"', " latin-1 ", "utf-8\x00", "../../etc/passwd", "utf\x1b[31m",
                   "encodings.rot_13", "__init__", "aliases", "\u00e9t\u00e9"})

# Control characters (C0, DEL, C1) and the line separators some terminals and viewers honour.
CONTROLS = [*map(chr, range(0x20)), "\x7f", *map(chr, range(0x80, 0xA0)), "\u2028", "\u2029"]


def raw(method: str, target: str | bytes, body: bytes = b"", headers: dict[str, str] | None
        = None, content_type: str = "application/x-www-form-urlencoded",
        close: bool = True) -> bytes:
    """An HTTP/1.1 request; header values are sent as latin-1 bytes, as a socket would."""
    if isinstance(target, str):
        target = target.encode("latin-1", "replace")
    lines = ["Host: fuzz", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if close:
        lines.append("Connection: close")
    head = "".join(line + "\r\n" for line in lines).encode("latin-1", "replace")
    return method.encode() + b" " + target + b" HTTP/1.1\r\n" + head + b"\r\n" + body


def form(**fields: str) -> bytes:
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in fields.items()).encode()


def _device(rng: random.Random) -> dict[str, str]:
    n = rng.randrange(50)
    return {"username": f"fz{n}", "selector": f"sel{n}", "pushToken": f"tok-{n}-" + "t" * 20,
            "pushappid": "app.id"}


def charset(rng: random.Random) -> bytes:
    """A report whose Content-Type names any charset, text encoding or not."""
    name = rng.choice(CHARSETS)
    params = rng.choice([f"charset={name}", f'charset="{name}"', f"charset={name}; x=y",
                         f"CHARSET={name}", f"charset*=utf-8''{quote(name)}"])
    if rng.random() < 0.5:
        return raw("POST", "/token/", form(**_device(rng)),
                   content_type=f"application/x-www-form-urlencoded; {params}")
    return raw("POST", rng.choice(["/token/", "/removeToken/", "/api/v1/push"]),
               json.dumps(_device(rng)).encode(), {"Authorization": f"Bearer {API_KEY}"},
               content_type=f"application/json; {params}")


def _digest_params(rng: random.Random) -> str:
    names = ["username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc",
             "cnonce", "opaque", "userhash", "username*", ""]
    values = ["", '"', '"a', 'a"', '"a\\"', '"\\', "alice", '"alice"', "\xe9\xff", "x" * 5000,
              '"pnbridge"', "MD5", "SHA-256", "XYZ", "auth", "auth-int", "zzzzzzzz",
              "00000001", '""', "=", ",", "utf-8''%ff", f"a\r\n{FORGED}"]
    parts = [f"{rng.choice(names)}={rng.choice(values)}" for _ in range(rng.randrange(8))]
    return rng.choice([", ", ",", " ", ",,"]).join(parts)


def _basic_value(rng: random.Random) -> str:
    user = rng.choice(["alice", "", "\xe9", "a:b", "x" * 3000, "\x00", "bob"])
    password = rng.choice(["", "wrong", "\xff\xfe", ":", "p" * 3000])
    choice = rng.randrange(5)
    if choice == 0:
        return base64.b64encode(f"{user}:{password}".encode("latin-1", "replace")).decode()
    if choice == 1:
        return base64.b64encode(bytes(rng.randrange(256) for _ in range(20))).decode()
    if choice == 2:
        return "".join(chr(rng.randrange(0x20, 0x100)) for _ in range(rng.randrange(30)))
    if choice == 3:
        return "====" if rng.random() < 0.5 else "YWxpY2U"  # bad padding, no colon
    return ""


def auth_header(rng: random.Random) -> bytes:
    """A report to a digest or basic route with a malformed or wrong Authorization header."""
    scheme = rng.choice(["Digest", "Basic", "digest", "BASIC", "Bearer", "Negotiate", ""])
    value = _digest_params(rng) if rng.random() < 0.5 else _basic_value(rng)
    route = rng.choice(["/dig/", "/bas/"]) + rng.choice(["alice", "bob", "nobody", "%ff"])
    return raw(rng.choice(["GET", "POST"]), route + "?selector=s&pushToken=tok",
               headers={"Authorization": f"{scheme} {value}".strip()})


def _nested(rng: random.Random, depth: int) -> str:
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    return opener * depth + rng.choice(["1", "null", '"x"']) + closer * depth


def nested(rng: random.Random) -> bytes:
    """JSON nested from a few levels to 100,000, or with values JSON must not hold."""
    depth = rng.choice([2, 5, 20, 100, 500, 800, 1000, 5000, 30_000, 100_000])
    device = _device(rng)
    odd = rng.choice([None, "NaN", "Infinity", "-Infinity", "1e999999", "9" * 5000,
                      '"\\ud800"', '"\\udfff\\ud800"'])
    if odd is not None:
        text = json.dumps(device)[:-1] + f', "{rng.choice(["extra", "username", "x"])}": {odd}}}'
    elif rng.random() < 0.6:
        text = json.dumps(device)[:-1] + f', "custom": {_nested(rng, depth)}}}'
    else:
        text = _nested(rng, depth)
    if rng.random() < 0.3:
        body = json.dumps({"username": device["username"], "verb": "NotifyTextMessage",
                           "message": "hi"})[:-1] + f', "extra": {_nested(rng, depth)}}}'
        return raw("POST", "/api/v1/push", body.encode(), {"Authorization": f"Bearer {API_KEY}"},
                   content_type="application/json")
    return raw("POST", rng.choice(["/token/", "/removeToken/"]), text.encode(),
               content_type="application/json")


def _control_text(rng: random.Random) -> str:
    return "".join(rng.choice([rng.choice(CONTROLS), "\n" + FORGED, "\x1b[2J", "a", "%"])
                   for _ in range(rng.randrange(1, 6)))


def control(rng: random.Random) -> bytes:
    """Control characters and line breaks in the path, a field, or a header a log shows."""
    text = _control_text(rng)
    where = rng.randrange(4)
    if where == 0:  # the path (percent-encoded: decoded before routing and logging)
        return raw("GET", "/" + rng.choice(["x", "token/", "removeToken/a/"]) + quote(text))
    if where == 1:  # a field value
        device = _device(rng)
        device[rng.choice(list(device))] += text
        return raw("GET", "/token/?" + form(**device).decode())
    if where == 2:  # a header the access log or the journal shows (raw bytes, not encoded)
        name = rng.choice(["X-Forwarded-For", "User-Agent", "Referer", "X-Real-IP"])
        value = rng.choice(["1.2.3.4", "2001:db8::1", ""]) + text.replace("\n", "\r")
        return raw("GET", "/token/?" + form(**_device(rng)).decode(), headers={name: value})
    return raw("POST", "/token/", json.dumps({**_device(rng), "selector": text}).encode(),
               content_type="application/json")


CLASSES = {"charset": charset, "auth header": auth_header, "nested JSON": nested,
           "control characters": control}

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
