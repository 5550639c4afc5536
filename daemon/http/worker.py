"""pnbridge's HTTP server: hypercorn's trio worker cut down to TCP and unix binds, with every
connection contained.

hypercorn's own ``TCPServer`` closes a connection (``send_eof``) while another of its tasks
may be sending on it: when a client cuts a request body short and closes as the answer goes
out, hypercorn's 400 for the cut body races that close, the send raises
``trio.BusyResourceError``, and nothing stops it before the server's nursery, which exits the
daemon. Here each connection closes under its send lock, and whatever a connection raises
stays in that connection: it is counted (``pnbridge_connection_errors_total``) and logged at
debug, once per connection.

The read timeout (``[server] read_timeout``) is armed only while a request is arriving, not
while the app works on one that has arrived whole: a handler that takes longer than the
read timeout (a push retried until its deadline, a report waiting ``busy_timeout`` for a
lock) still gets its answer out; its own deadlines bound it. Likewise a client that shuts its
sending side after a whole request (``shutdown(SHUT_WR)``) gets its answer: hypercorn took
that for a client gone and cancelled the request.

HTTP/1 goes through ``H11``: the request head limit (``[server] max_header_bytes``) holds
however the bytes arrive (h11 checks it only while a head is incomplete, so a head that came
in one segment passed whatever its size), and the answers hypercorn writes itself (a
malformed request, a head too large) carry a short JSON body like every push API answer.

Written against hypercorn 0.17 and 0.18 (pyproject pins ``<0.19``: this module subclasses
``hypercorn.trio.tcp_server.TCPServer`` and uses its internals).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from math import inf
from typing import Any

import h11
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import SocketTypeError
from hypercorn.events import Closed, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ASGIFramework, ConnectionState, LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app
from prometheus_client import Counter

from ..errors import ListenError, leaves

log = logging.getLogger("pnbridge.http")

# Seconds a send under way gets to finish before a closing connection closes under it.
CLOSE_WAIT = 2.0

# The reasons of the answers the HTTP/1 protocol gives itself, by status (h11's own message
# may quote the request: it is not sent).
PROTOCOL_ERRORS = {
    431: "request head too large ([server] max_header_bytes)",
    501: "unsupported Transfer-Encoding (chunked only)",
}


class BoundedHead(h11.Connection):
    """h11's server connection, refusing a request head longer than
    ``max_incomplete_event_size`` however its bytes arrived: h11 itself checks that size only
    while the head is incomplete."""

    def next_event(self) -> Any:
        before = len(self._receive_buffer)
        event = super().next_event()
        if (isinstance(event, h11.Request)
                and before - len(self._receive_buffer) > self._max_incomplete_event_size):
            self._process_error(self.their_role)  # as h11 does for its own errors
            raise h11.RemoteProtocolError("request head too long", error_status_hint=431)
        return event


class H11(H11Protocol):
    """hypercorn's HTTP/1 protocol with ``BoundedHead``, and JSON in its own error answers."""

    def __init__(self, app: AppWrapper, config: HypercornConfig, *args: Any) -> None:
        super().__init__(app, config, *args)
        self.connection = BoundedHead(
            h11.SERVER, max_incomplete_event_size=config.h11_max_incomplete_size)

    async def _send_error_response(self, status_code: int) -> None:
        """``{"error": "..."}`` and a newline, then the connection closes (as hypercorn's
        empty answer did)."""
        reason = PROTOCOL_ERRORS.get(status_code, "malformed HTTP request")
        body = json.dumps({"error": reason}, separators=(",", ":")).encode() + b"\n"
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
                   *self.config.response_headers("h11")]
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())


class Connection(TCPServer):
    """One client connection: hypercorn's, closed under its send lock, its failures contained."""

    def __init__(self, errors: Counter, *args: Any) -> None:
        super().__init__(*args)
        self.errors = errors

    async def run(self) -> None:
        """Serve the connection; an exception from it is counted and logged, never raised.

        Only ``Exception`` is contained: ``trio.Cancelled`` (the server's grace period running
        out) and ``KeyboardInterrupt`` go on to the server.
        """
        try:
            await super().run()
        except* Exception as group:
            self._failed(group)

    def _failed(self, group: BaseExceptionGroup) -> None:
        names = sorted({type(error).__name__ for error in leaves(group)})
        for name in names:
            self.errors.labels(name).inc()
        log.debug("connection failed (contained): %s", ", ".join(names), exc_info=group)

    async def _read_data(self) -> None:
        """hypercorn's read loop, with the read timeout of ``_read_limit``; HTTP/1 with
        ``H11`` (nothing has reached hypercorn's protocol yet)."""
        old = self.protocol.protocol
        if isinstance(old, H11Protocol):
            self.protocol.protocol = H11(old.app, old.config, old.context, old.task_group,
                                         old.connection_state, old.ssl, old.client, old.server,
                                         old.send)
        while True:
            try:
                with trio.fail_after(self._read_limit()):
                    data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            except trio.TooSlowError:
                await self.idle_task.stop()  # else a cut-off head waits for keep_alive_timeout
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                if self._answer_pending():
                    return  # the answer goes out, then hypercorn closes the connection
                break
        await self.protocol.handle(Closed())

    def _answer_pending(self) -> bool:
        """The client ended its side (a half-close, or a close) after a whole request whose
        answer is not out yet. hypercorn would tell the app that the client is gone and
        cancel it; but a half-closed client still reads, and a whole request is answered."""
        protocol = self.protocol.protocol
        return (isinstance(protocol, H11Protocol) and protocol.stream is not None
                and protocol.connection.their_state is h11.CLOSED)

    def _read_limit(self) -> float:
        """``read_timeout`` while a request is arriving; none between requests (there
        ``keep_alive_timeout`` closes the connection) and while every request in hand has
        arrived whole and waits for its answer. HTTP/2: none while a stream is open (the
        app's ``BODY_TIMEOUT`` bounds a slow body)."""
        protocol = self.protocol.protocol
        if isinstance(protocol, H11Protocol):
            state = protocol.connection.their_state
            waiting = state in (h11.DONE, h11.MUST_CLOSE) or (
                state is h11.IDLE and not protocol.connection.trailing_data[0])
        else:
            waiting = not protocol.idle
        return inf if waiting else (self.config.read_timeout or inf)

    async def _close(self) -> None:
        """Send EOF, then close: the EOF under the send lock, so that it cannot race a send;
        shielded, so that a cancelled connection still closes its socket."""
        with trio.CancelScope(shield=True):
            try:
                with trio.move_on_after(CLOSE_WAIT):
                    if self.send_lock.statistics().owner is trio.lowlevel.current_task():
                        await self._send_eof()
                    else:
                        async with self.send_lock:
                            await self._send_eof()
            finally:
                await self.stream.aclose()

    async def _send_eof(self) -> None:
        # Broken/Closed: the client is gone; AttributeError: a TLS stream (no half-close).
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                 AttributeError):
            await self.stream.send_eof()


SOCKET_UNIT_HINT = "is the service started by its .socket unit?"


def create_sockets(config: HypercornConfig) -> list[socket.socket]:
    """The bound sockets of ``config.bind``, one address at a time, so that a failure names
    the address that failed (ListenError); the sockets made before it are closed."""
    sockets: list[socket.socket] = []
    for bind in config.bind:
        try:
            sockets += config._create_sockets([bind])
        except (OSError, SocketTypeError) as error:
            for sock in sockets:
                sock.close()
            raise ListenError(bind, _why(bind, error)) from None
    return sockets


def _why(bind: str, error: OSError | SocketTypeError) -> str:
    """Why ``bind`` failed, for an operator: the OS's words, plainly for an fd:// bind."""
    if bind.startswith("fd://"):
        if isinstance(error, SocketTypeError):
            return f"not a stream (TCP or unix) socket ({SOCKET_UNIT_HINT})"
        if error.errno == errno.ENOTSOCK:
            return f"not a socket ({SOCKET_UNIT_HINT})"
        if error.errno == errno.EBADF:
            return f"no such file descriptor ({SOCKET_UNIT_HINT})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {error.filename}" if error.filename else "")
    return str(error)


async def serve(
    app: ASGIFramework,
    config: HypercornConfig,
    errors: Counter,
    *,
    shutdown_trigger: Callable[[], Awaitable[object]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the ASGI ``app`` on ``config.bind`` (host:port, unix: and fd:// binds) until
    ``shutdown_trigger`` returns; then in-flight requests get ``config.graceful_timeout``
    seconds. Reports ``started`` with the bound addresses. hypercorn's
    ``hypercorn.trio.worker_serve`` without TLS, QUIC and max_requests, with ``Connection``."""
    asgi = wrap_app(app, config.wsgi_max_body_size, "asgi")
    state: LifespanState = {}
    lifespan = Lifespan(asgi, config, state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as connections:
            listeners, binds = [], []
            for sock in create_sockets(config):
                sock.listen(config.backlog)
                listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
                binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
            handler = partial(Connection, errors, asgi, config, context,
                              ConnectionState(state.copy()))
            task_status.started(binds)
            try:
                async with trio.open_nursery() as accepting:
                    accepting.start_soon(partial(trio.serve_listeners, handler, listeners,
                                                 handler_nursery=connections))
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                await context.terminated.set()
                connections.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
