"""pnmediator: the push transport through the Acrobits push mediator (``send_push``).

Each push is one ``POST`` of a JSON object to ``[plugins.pnmediator] url`` over pooled HTTP
connections (``Connections``), opened at startup and closed at shutdown, with at most
``max_in_flight`` pushes under way at once. What pnmediator answers maps to an outcome by
``ANSWERS`` below. Each instance keeps its settings and connections in ``app.state``.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import httpcore
import httpx
import trio
from pnbridge import (
    Finding,
    PluginContext,
    Push,
    PushResult,
    check,
    hookimpl,
    http_reachable,
    parse_retry_after,
)

URL = "https://pnm.cloudsoftphone.com/pnm2/send"

# The verb's fields of a Push, by the names the Acrobits docs use.
FIELDS = {
    "id": "Id", "message": "Message", "badge": "Badge", "sound": "Sound",
    "display_name": "UserDisplayName", "thread_id": "ThreadId",
}

# pnmediator's answer -> outcome. Its JSON body's "code" 404 (a number or a numeric string),
# whatever the HTTP status it comes with, means the token is no longer valid (uninstall,
# reinstall): INVALID_TOKEN. Any other answer goes by the HTTP status, or by the body's code
# for a 2xx: other 4xx are permanent for this push; 429 and 5xx are temporary. An HTTP 404
# without that JSON is not pnmediator's answer (a web server or proxy at a wrong url): a
# "config-error", a failure that clears nothing and shows in /readyz. A 2xx without a code
# counts as sent. Timeouts and connection errors are temporary too.
INVALID_TOKEN = 404
ANSWERS: dict[int | range, Literal["sent", "config-error", "retry", "failed"]] = {
    200: "sent",
    404: "config-error",
    429: "retry",
    range(500, 600): "retry",
    range(400, 500): "failed",
}
# At most this much of an answer is read; the rest is never received (the connection is
# closed) and such an answer goes by its HTTP status alone.
MAX_ANSWER = 64 * 1024


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


@dataclass(frozen=True)
class Reply:
    """An answer: its status, headers, and body (None when longer than ``MAX_ANSWER``)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    content: bytes | None


class Connections:
    """Keep-alive HTTP connections to ``url``, at most ``limit`` requests under way.

    Pushes go through httpcore, the HTTP engine under httpx, and below its pool: httpx's
    client (cookies, auth, redirects, its models) cost more than a push's own HTTP work,
    and httpcore's pool polls each idle connection it holds whenever a request starts or
    ends. Here a push takes the connection last put back, replacing it when pnmediator has
    closed it (docs/benchmarks.md has the numbers).
    """

    def __init__(
        self, url: str, limit: int, timeout: float, headers: dict[str, str], proxy: str = ""
    ):
        self._url = httpcore.URL(url)
        self._factory = _pool(httpx.create_ssl_context(), proxy)  # one TLS context for all
        self._idle: list[httpcore.AsyncConnectionInterface | None] = [None] * limit
        self._limit = trio.Semaphore(limit)
        host = self._url.host + (b":%d" % self._url.port if self._url.port else b"")
        self._headers = [(b"Host", host)] + [(k.encode(), v.encode()) for k, v in headers.items()]
        self._extensions = {"timeout": dict.fromkeys(("connect", "read", "write"), timeout)}

    async def post(self, body: bytes) -> Reply:
        """POST ``body``; the answer, its body read up to ``MAX_ANSWER`` bytes (a longer
        one is not read on: its connection is closed). Raises one of ``UNREACHABLE``."""
        request = httpcore.Request(
            "POST", self._url, content=body, extensions=self._extensions,
            headers=[*self._headers, (b"Content-Length", b"%d" % len(body))],
        )
        async with self._limit:
            connection = self._idle.pop()
            try:
                if connection is None or connection.is_closed() or connection.has_expired():
                    if connection is not None:
                        await connection.aclose()
                    connection = self._factory.create_connection(self._url.origin)
                response = await connection.handle_async_request(request)
                got, whole = bytearray(), True
                try:
                    async for chunk in response.aiter_stream():
                        got += chunk
                        if len(got) > MAX_ANSWER:
                            whole = False
                            break
                finally:
                    await response.aclose()
                if not whole:  # the rest is still on its way: this connection is done
                    await connection.aclose()
                return Reply(response.status, response.headers, bytes(got) if whole else None)
            except BaseException:
                if connection is not None:
                    with trio.CancelScope(shield=True):
                        await connection.aclose()
                connection = None
                raise
            finally:
                self._idle.append(connection)

    async def aclose(self) -> None:
        for connection in self._idle:
            if connection is not None:
                await connection.aclose()


def _pool(tls: ssl.SSLContext, proxy: str) -> httpcore.AsyncConnectionPool:
    """What makes connections: straight, or through ``proxy`` (tunnelled for https)."""
    if not proxy:
        return httpcore.AsyncConnectionPool(ssl_context=tls)
    parts = urllib.parse.urlsplit(proxy)
    auth = None
    if parts.username is not None:
        auth = (urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password or ""))
    plain = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    return httpcore.AsyncHTTPProxy(proxy_url=plain, proxy_auth=auth, ssl_context=tls)


# What Connections.post raises when pnmediator gives no answer (timeouts aside).
UNREACHABLE = (
    httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError,
    httpcore.UnsupportedProtocol, httpcore.ConnectionNotAvailable,
)


@dataclass
class _Open:
    """A started instance: its settings and its connections."""

    settings: Settings
    connections: Connections


@hookimpl
def settings_class() -> type[Settings]:
    return Settings


@hookimpl
async def startup(app: PluginContext) -> None:
    settings = app.settings(Settings)
    headers = {"User-Agent": "pnbridge", "Content-Type": "application/json"}
    app.state = _Open(settings, Connections(
        settings.url, settings.max_in_flight, settings.timeout, headers, settings.proxy
    ))


@hookimpl
async def shutdown(app: PluginContext) -> None:
    if app.state is not None:
        await app.state.connections.aclose()
        app.state = None


@hookimpl
async def doctor(app: PluginContext) -> list[Finding]:
    """pnmediator gives an HTTP answer at the url (a HEAD after the TLS handshake: no push)."""
    settings = app.settings(Settings)
    return [await http_reachable(
        settings.url, "pnmediator at", f"check [plugins.{app.name}] url and proxy, DNS and "
        "the firewall (outgoing HTTPS)", settings.timeout, settings.proxy,
    )]


@hookimpl
async def send_push(push: Push, app: PluginContext) -> PushResult:
    running: _Open | None = app.state
    if running is None:
        return PushResult("failed", f"the {app.name} plugin is not started")
    if not push.appid:
        return PushResult("failed", f"no app id stored with the {push.pair} token")
    body = json.dumps(request_body(push), separators=(",", ":")).encode()
    try:
        response = await running.connections.post(body)
    except httpcore.TimeoutException:
        return PushResult("retry", f"no answer within {running.settings.timeout:g} s")
    except UNREACHABLE as error:
        return PushResult("retry", f"cannot reach pnmediator: {type(error).__name__}: {error}")
    retry_after = next(
        (v.decode("latin-1") for k, v in response.headers if k.lower() == b"retry-after"), None
    )
    result = outcome(response.status, _json(response.content), retry_after)
    if result.config_error:
        result = replace(result, reason=f"{result.reason}; check [plugins.{app.name}] url "
                                        f"= {_shown(running.settings.url)}")
    return result


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
    """The outcome of pnmediator's answer (``body``: its parsed JSON), by ``ANSWERS``: its
    ``code`` the HTTP status, its ``reason`` what pnmediator said (for a sent push too)."""
    said = body.get("response") if isinstance(body, dict) else None
    told = _code(body.get("code")) if isinstance(body, dict) else None
    code = status
    if told == INVALID_TOKEN or (told is not None and 200 <= status < 300):
        code = told
    by_code = code == told and (code != status or code == INVALID_TOKEN)
    reason = f"pnmediator {'code' if by_code else 'HTTP'} {code}"
    reason += f": {said}" if said and isinstance(said, str) else ""
    if told == INVALID_TOKEN:
        return PushResult("invalid-token", reason, code=status)
    verdict = next(
        (v for k, v in ANSWERS.items() if code == k or (isinstance(k, range) and code in k)),
        "sent" if 200 <= code < 300 else "failed",
    )
    if verdict == "sent":
        return PushResult("sent", reason, code=status)
    if verdict == "config-error":
        return PushResult("failed", f"HTTP {status} without pnmediator's JSON code 404, not "
                                    "pnmediator's answer: likely a configuration error (a "
                                    "wrong url, or a proxy)", config_error=True, code=status)
    wait = parse_retry_after(retry_after) if verdict == "retry" else None
    return PushResult(verdict, reason, wait, code=status)


def _code(value: Any) -> int | None:
    """The body's ``code`` as a number (``404``, ``404.0`` or ``"404"``); None when there is
    none that reads as one."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _shown(url: str) -> str:
    """``url`` without its userinfo (a password there stays out of logs and /readyz)."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _json(content: bytes | None) -> Any:
    if content is None:  # longer than MAX_ANSWER: the status alone decides
        return None
    try:
        return json.loads(content)
    except ValueError:
        return None

