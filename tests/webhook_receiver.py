"""A webhook receiver for the tests: a threaded HTTP server on 127.0.0.1 that checks each
request's signature with the receiver example of docs/plugins/webhook.md, exactly as printed."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DOCS = Path(__file__).parent.parent / "docs" / "plugins" / "webhook.md"
SECRET = "s3cret-for-tests"
TOKEN = "QVBBOT-" + "x" * 60


def doc_verify() -> Callable[..., bool]:
    """The ``verify`` function of the receiver example in the docs, exactly as printed."""
    section = DOCS.read_text().split("## The receiver's side", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "no python block in the receiver section"
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)
    return namespace["verify"]


verify = doc_verify()


class Receiver:
    """A threaded HTTP server on 127.0.0.1: checks every request's signature, answers
    ``answer(payload)`` (default 200) and keeps each accepted event once, by id."""

    def __init__(self, secret: str = SECRET, answer: Callable[[dict], Any] | None = None,
                 port: int = 0):
        self.secret = secret.encode()
        self.answer = answer or (lambda payload: 200)
        self.requests: list[tuple[dict, dict]] = []  # (headers, payload) of signed requests
        self.accepted: dict[str, dict] = {}  # event id -> payload, in order of acceptance
        self.forged = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request (kill -9): not forged
                    self.close_connection = True
                    return
                headers = dict(self.headers.items())
                status, extra = 401, {}
                if verify(receiver.secret, self.headers, body):
                    payload = json.loads(body)
                    with receiver.lock:
                        receiver.requests.append((headers, payload))
                        status = receiver.answer(payload)
                        if isinstance(status, tuple):
                            status, extra = status
                        if status == 200:
                            receiver.accepted.setdefault(headers["X-Pnbridge-Event-Id"], payload)
                else:
                    with receiver.lock:
                        receiver.forged += 1
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
