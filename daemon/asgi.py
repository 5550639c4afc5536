"""ASGI glue between quart-trio and hypercorn."""

from __future__ import annotations

from typing import Any

import trio

ASGIApp = Any


def shield_sends(app: ASGIApp) -> ASGIApp:
    """``app`` with the last ASGI ``send`` of each response shielded from cancellation.

    The last ``send`` of a response to a ``Connection: close`` request closes the socket
    inside hypercorn; closing it delivers ``http.disconnect`` to quart-trio, which cancels
    the app's nursery, and with it the close half-way: the socket stayed open until the
    keep-alive timeout (pgjones/hypercorn#330). hypercorn shields its own data sends too.
    """

    async def shielded(scope: dict, receive: Any, send: Any) -> None:
        async def send_shielded(message: dict) -> None:
            if message["type"] != "http.response.body" or message.get("more_body"):
                await send(message)
                return
            with trio.CancelScope(shield=True):
                await send(message)

        await app(scope, receive, send_shielded)

    return shielded
