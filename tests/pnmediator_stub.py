"""A real HTTP server standing in for pnmediator: it records every request and answers each
``DeviceToken`` as scripted (200, body code 404, HTTP 404, 500, 429, slowly, or not at all),
or as something else at that url would: an HTML or empty 404, an endless body."""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import h11
import trio

KEY = "test-key-0123456789abcdef"  # the push API key of push_config


@dataclass
class Answer:
    """One scripted answer: ``status`` and JSON ``body`` after ``delay`` seconds; with
    ``drop``, the connection is closed without an answer. ``raw`` is a body sent as it is
    (with ``content_type``) instead of the JSON; ``endless`` bytes of generated body are
    streamed instead, 64 KiB at a time (``sent`` counts what went out)."""

    status: int = 200
    body: Any = field(default_factory=lambda: {"code": 200, "response": "OK"})
    delay: float = 0.0
    drop: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"
    endless: int = 0
    sent: int = 0


SENT = Answer()
BODY_404 = Answer(200, {"code": 404, "response": "Device token not found"})
HTTP_404 = Answer(404, {"code": 404, "response": "Not found"})
HTTP_400 = Answer(400, {"code": 400, "response": "Missing AppId"})
HTTP_500 = Answer(500, {"code": 500, "response": "Internal error"})
DROP = Answer(drop=True)
# What is at a wrong url: not pnmediator's answers.
HTML_404 = Answer(404, raw=b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
                  b"<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n"
                  b"</body>\r\n</html>\r\n", content_type="text/html")
EMPTY_404 = Answer(404, raw=b"", content_type="text/plain")
OTHER_JSON_404 = Answer(404, {"error": "Not Found", "status": 404, "path": "/pnm2/sned"})
CODE_200_404 = Answer(404, {"code": 200, "response": "OK"})
# pnmediator's own "invalid token", with whatever HTTP status.
CODE_404_STRING = Answer(200, {"code": "404", "response": "Device token not found"})
CODE_404_HTTP_500 = Answer(500, {"code": 404, "response": "Device token not found"})


def slow(seconds: float) -> Answer:
    return Answer(delay=seconds)


@dataclass
class Stub:
    """Requests seen (the JSON bodies, in arrival order) and the answers still scripted."""

    url: str = ""
    port: int = 0  # where to listen (0: any free port)
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: dict[str, list[Answer]] = field(default_factory=lambda: defaultdict(list))
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)  # of each request, lower-case
    times: list[float] = field(default_factory=list)
    connections: int = 0
    other_requests: int = 0  # not POST: answered 405, nothing recorded
    in_flight: int = 0  # requests read and not yet answered
    most_in_flight: int = 0

    def answer(self, token: str, *answers: Answer) -> None:
        """Answer ``token``'s next requests with ``answers`` in turn, then 200."""
        self.script[token].extend(answers)

    def to(self, token: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r.get("DeviceToken") == token]

    def _next(self, token: str) -> Answer:
        queued = self.script.get(token)
        return queued.pop(0) if queued else SENT

    async def serve(self, *, task_status: trio.TaskStatus[Stub] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/pnm2/send"
        task_status.started(self)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                request, body = await _read_request(conn, stream)
                if request is None:
                    return
                if request.method != b"POST":  # no push (pnbridge doctor's HEAD): 405
                    self.other_requests += 1
                    await stream.send_all(conn.send(h11.Response(
                        status_code=405, headers=[("content-length", "0")])))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                    conn.start_next_cycle()
                    continue
                self.paths.append(request.target.decode())
                self.headers.append({k.decode(): v.decode() for k, v in request.headers})
                data = json.loads(body)
                self.requests.append(data)
                self.times.append(trio.current_time())
                answer = self._next(data.get("DeviceToken", ""))
                path = urllib.parse.urlsplit(request.target.decode()).path  # or via a proxy
                if path != urllib.parse.urlsplit(self.url).path:
                    answer = HTML_404  # what a web server says at a wrong path
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
                try:
                    await trio.sleep(answer.delay)
                finally:
                    self.in_flight -= 1
                if answer.drop:
                    return
                payload = json.dumps(answer.body).encode() if answer.raw is None else answer.raw
                size = answer.endless or len(payload)
                headers = [("content-type", answer.content_type),
                           ("content-length", str(size)), *answer.headers.items()]
                try:
                    await stream.send_all(conn.send(h11.Response(status_code=answer.status,
                                                                 headers=headers)))
                    if answer.endless:
                        await _stream(conn, stream, answer)
                    else:
                        await stream.send_all(conn.send(h11.Data(data=payload)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the client gave up waiting (or reading)
                if conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()


class StubThread:
    """The pnmediator stand-in, serving in a trio loop of its own thread for the module."""

    def __init__(self) -> None:
        self.stub = Stub()
        self._started = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as self._scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.stub.serve)
                self._started.set()

    def start(self) -> Stub:
        self._thread.start()
        assert self._started.wait(10), "the pnmediator stand-in did not start"
        return self.stub

    def stop(self) -> None:
        assert self._scope is not None and self._token is not None
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)


async def _stream(conn: h11.Connection, stream: trio.SocketStream, answer: Answer) -> None:
    """Send ``answer.endless`` bytes of JSON-looking body, generated as it goes."""
    chunk = b'{"code": 200, "pad": "' + b"x" * 65500
    while answer.sent < answer.endless:
        piece = chunk[:answer.endless - answer.sent]
        await stream.send_all(conn.send(h11.Data(data=piece)))
        answer.sent += len(piece)


async def _read_request(
    conn: h11.Connection, stream: trio.SocketStream
) -> tuple[h11.Request | None, bytes]:
    request, body = None, b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                return None, b""
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return request, body
        else:  # ConnectionClosed
            return None, b""


def push_config(stub: Stub, **deadlines: float) -> dict[str, Any]:
    """The push API (``KEY`` and the given deadlines) and pnmediator at ``stub``."""
    return {
        "api": {"keys": ["another-key-000000000000", KEY], "deadlines": deadlines},
        "plugins": {"enabled": ["pnmediator"],
                    "pnmediator": {"url": stub.url, "timeout": 0.5}},
    }
