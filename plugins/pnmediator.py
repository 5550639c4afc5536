"""pnmediator: the push transport through the Acrobits push mediator (``send_push``).

Each push is one ``POST`` of a JSON object to ``[plugins.pnmediator] url`` over pooled HTTP
connections (``Connections``), opened at startup and closed at shutdown, with at most
``max_in_flight`` pushes under way at once. What pnmediator answers maps to an outcome by
``ANSWERS`` below.
"""

from __future__ import annotations

import email.utils
import json
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpcore
import httpx
import trio
from pnbridge import Push, PushResult, hookimpl
from pnbridge.settings import check

if TYPE_CHECKING:
    from pnbridge.pluginhost import App

URL = "https://pnm.cloudsoftphone.com/pnm2/send"

# The verb's fields of a Push, by the names the Acrobits docs use.
FIELDS = {
    "id": "Id", "message": "Message", "badge": "Badge", "sound": "Sound",
    "display_name": "UserDisplayName", "thread_id": "ThreadId",
}

# pnmediator's answer (the HTTP status, or the JSON body's "code" of a 2xx) -> outcome.
# 404 means the token is no longer valid (uninstall, reinstall); other 4xx are permanent
# for this push; 429 and 5xx are temporary. A 2xx without a code counts as sent.
# Timeouts and connection errors are temporary too.
ANSWERS: dict[int | range, str] = {
    200: "sent",
    404: "invalid-token",
    429: "retry",
    range(500, 600): "retry",
    range(400, 500): "failed",
}


def _url(url: str) -> str | None:
    return None if url.startswith(("https://", "http://")) else "must be an http(s):// URL"


def _proxy(url: str) -> str | None:
    if not url or url.startswith(("http://", "https://")):
        return None
    return "must be an http(s):// URL (or empty: no proxy)"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be greater than 0"


@dataclass(frozen=True)
class Settings:
    """``[plugins.pnmediator]``."""

    url: str = field(default=URL, metadata=check(_url))
    # Seconds one HTTP attempt may take; a slower one is retried within the verb's deadline.
    timeout: float = field(default=3.0, metadata=check(_positive))
    # Pushes under way at once (and HTTP connections to pnmediator); more wait their turn.
    max_in_flight: int = field(default=100, metadata=check(_positive))
    # An HTTP proxy to reach pnmediator through, "http://[user:password@]host:port"; none
    # when empty. HTTPS_PROXY and the like in the environment are not read.
    proxy: str = field(default="", metadata=check(_proxy))


class Connections:
    """Keep-alive HTTP connections to pnmediator, at most ``limit`` requests under way.

    Pushes go through httpcore, the HTTP engine under httpx, without httpx's client: its
    cookies, auth, redirects and models cost more than a push's own HTTP work, and none of
    them has a use here. httpcore's pool polls every idle connection it holds whenever a
    request starts or ends, so each connection is a pool of its own, and a request takes the
    one that was last put back (docs/benchmarks.md has the numbers).
    """

    def __init__(self, limit: int, timeout: float, headers: dict[str, str], proxy: str = ""):
        tls = httpx.create_ssl_context()  # one for all: each loads the CA bundle
        self._idle = [_connection(tls, proxy) for _ in range(limit)]
        self._all = list(self._idle)
        self._limit = trio.Semaphore(limit)
        self._headers = [(name.encode(), value.encode()) for name, value in headers.items()]
        self._extensions = {"timeout": dict.fromkeys(("connect", "read", "write", "pool"), timeout)}

    async def post(self, url: str, body: bytes) -> httpcore.Response:
        """POST ``body`` to ``url``; the answer, read whole. Raises one of ``UNREACHABLE``."""
        async with self._limit:
            connection = self._idle.pop()
            try:
                return await connection.request(
                    "POST", url, headers=self._headers, content=body, extensions=self._extensions
                )
            finally:
                self._idle.append(connection)

    async def aclose(self) -> None:
        for connection in self._all:
            await connection.aclose()


def _connection(tls: ssl.SSLContext, proxy: str) -> httpcore.AsyncConnectionPool:
    """One keep-alive connection, straight or through ``proxy`` (tunnelled for https)."""
    if not proxy:
        return httpcore.AsyncConnectionPool(ssl_context=tls, max_connections=1)
    parts = urllib.parse.urlsplit(proxy)
    auth = None
    if parts.username is not None:
        auth = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    plain = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return httpcore.AsyncHTTPProxy(
        proxy_url=plain, proxy_auth=auth, ssl_context=tls, max_connections=1
    )


# What Connections.post raises when pnmediator gives no answer (timeouts aside).
UNREACHABLE = (
    httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError,
    httpcore.UnsupportedProtocol,
)


@dataclass
class _Open:
    settings: Settings
    connections: Connections


_open: _Open | None = None


@hookimpl
def settings_class() -> type[Settings]:
    return Settings


@hookimpl
async def startup(app: App) -> None:
    global _open
    settings = app.settings(Settings)
    headers = {"User-Agent": "pnbridge", "Content-Type": "application/json"}
    _open = _Open(settings, Connections(
        settings.max_in_flight, settings.timeout, headers, settings.proxy
    ))


@hookimpl
async def shutdown(app: App) -> None:
    global _open
    if _open is not None:
        await _open.connections.aclose()
        _open = None


@hookimpl
async def send_push(push: Push) -> PushResult:
    if _open is None:
        return PushResult("failed", "the pnmediator plugin is not started")
    if not push.appid:
        return PushResult("failed", f"no app id stored with the {push.pair} token")
    body = json.dumps(request_body(push), separators=(",", ":")).encode()
    try:
        response = await _open.connections.post(_open.settings.url, body)
    except httpcore.TimeoutException:
        return PushResult("retry", f"no answer within {_open.settings.timeout:g} s")
    except UNREACHABLE as error:
        return PushResult("retry", f"cannot reach pnmediator: {error!r}")
    retry_after = next(
        (v.decode("latin-1") for k, v in response.headers if k.lower() == b"retry-after"), None
    )
    return outcome(response.status, _json(response.content), retry_after)


def request_body(push: Push) -> dict[str, Any]:
    """The JSON pnmediator takes for ``push``."""
    body: dict[str, Any] = {
        "verb": push.verb, "AppId": push.appid, "DeviceToken": push.token,
        "Selector": push.device.selector,
    }
    for name, acrobits in FIELDS.items():
        value = getattr(push, name)
        if value is not None:
            body[acrobits] = value
    return body


def outcome(status: int, body: Any, retry_after: str | None = None) -> PushResult:
    """The outcome of pnmediator's answer, by ``ANSWERS``."""
    code = status
    if 200 <= status < 300:
        code = _code(body.get("code") if isinstance(body, dict) else None)
    said = body.get("response") if isinstance(body, dict) else None
    reason = f"pnmediator {'HTTP ' + str(status) if code == status else 'code ' + str(code)}"
    reason += f": {said}" if said else ""
    verdict = next(
        (v for k, v in ANSWERS.items() if code == k or (isinstance(k, range) and code in k)),
        "sent" if 200 <= code < 300 else "failed",
    )
    if verdict == "sent":
        return PushResult("sent")
    wait = _seconds(retry_after) if verdict == "retry" else None
    return PushResult(verdict, reason, wait)  # type: ignore[arg-type]


def _code(value: Any) -> int:
    """The body's ``code`` as a number (``404`` or ``"404"``); 200 when there is none."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else 200


def _json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _seconds(retry_after: str | None) -> float | None:
    """Retry-After in seconds (a number or an HTTP date); None when absent or unreadable."""
    if not retry_after:
        return None
    try:
        return max(float(retry_after), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)
