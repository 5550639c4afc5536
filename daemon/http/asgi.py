"""ASGI glue between quart-trio and hypercorn."""

from __future__ import annotations

import contextlib

import trio
from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)


def shield_sends(app: ASGIFramework) -> ASGIFramework:
    """``app`` with the last ASGI ``send`` of each response shielded from cancellation.

    The last ``send`` of a response to a ``Connection: close`` request closes the socket
    inside hypercorn; closing it delivers ``http.disconnect`` to quart-trio, which cancels
    the app's nursery, and with it the close half-way: the socket stayed open until the
    keep-alive timeout (pgjones/hypercorn#330). hypercorn shields its own data sends too.
    """

    async def shielded(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        async def send_shielded(message: ASGISendEvent) -> None:
            if message["type"] != "http.response.body" or message.get("more_body"):
                await send(message)
                return
            with trio.CancelScope(shield=True):
                await send(message)

        await app(scope, receive, send_shielded)

    return shielded


def close_if_framed_twice(app: ASGIFramework) -> ASGIFramework:
    """``app`` answering ``Connection: close`` to an HTTP/1 request that has both
    Content-Length and Transfer-Encoding, so that the connection closes after the answer
    (RFC 9112 6.1): where a proxy in front read the body by the other header, the rest of
    the connection would be a request smuggled past it."""

    async def guarded(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "http" or scope.get("http_version") not in ("1.0", "1.1"):
            await app(scope, receive, send)
            return
        names = {name.lower() for name, _ in scope["headers"]}
        if not {b"content-length", b"transfer-encoding"} <= names:
            await app(scope, receive, send)
            return

        async def send_closing(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.start":
                headers = [(n, v) for n, v in message.get("headers", ())
                           if n.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await app(scope, receive, send_closing)

    return guarded


def refuse_websockets(app: ASGIFramework) -> ASGIFramework:
    """``app`` answering a WebSocket handshake ``403`` itself: pnbridge has no WebSocket
    route. Quart's 404 rejection raced hypercorn's own answer to data sent after the
    handshake, and hypercorn logged a traceback at error for each such request."""

    async def http_only(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] != "websocket":
            await app(scope, receive, send)
            return
        # Raises when the client already broke the connection (h11 in its ERROR state):
        # then there is no one to answer, and hypercorn closes the connection.
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": 1008, "reason": None})

    return http_only
