"""The FastAGI service: a TCP listener for Asterisk's ``AGI(agi://HOST:PORT/SCRIPT,...)`` and
its three scripts (read and checked by scripts.py).

``wake`` pushes NotifyIncomingCall to every device of the callee, asks Asterisk for the
endpoint's contacts until one is there (or the wait is over), and sets the channel variables
the dialplan dials with. ``missed`` and ``answered-elsewhere`` push the follow-up verbs with
the call's id. Every push is one of the daemon's fan-outs (``Fanouts``, as for the push API:
the same Pusher, the same ``[api] max_in_flight``) and runs to its deadline whether or not
Asterisk is still connected.
Sessions are bounded in number and time; whatever one client sends stays in its session.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ..config.agi import AgiConfig
from ..config.tables import DeadlinesConfig
from ..errors import AgiError, BadScript, Busy, ListenError, StoreError, UnknownUser
from ..ops.log import describe, escape
from ..ops.metrics import Metrics
from ..push.inflight import Fanout, Fanouts
from ..push.request import PushRequest
from .protocol import AgiChannel, Hangup, fits
from .scripts import FOLLOW_UPS, SCRIPTS, Call, call_of, script_of

log = logging.getLogger("pnbridge.agi")

MAX_REASON = 200  # characters of a reason (a plugin's, an error's) sent to the channel
CONTACTS = "PNBRIDGE_CONTACTS"
REFUSED_LOG_EVERY = 10.0
# Errors from accept() that pass (too many open files, memory): wait, then accept again.
_ACCEPT_PAUSE = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


@dataclass
class Pending:
    """A session's push: ``done`` is set with its status once the fan-out is over."""

    done: trio.Event = field(default_factory=trio.Event)
    status: str = ""  # sent, none, failed, unknown-user
    sent: int = 0
    reason: str = ""


class AgiService:
    """Listens on ``[agi] listen``; one task per session, pushes in tasks of their own."""

    def __init__(
        self, config: AgiConfig, fanouts: Fanouts | None, metrics: Metrics,
        deadlines: Callable[[], DeadlinesConfig], reuse_port: bool = False,
    ):
        self.config = config
        self.reuse_port = reuse_port
        self.fanouts = fanouts
        self.metrics = metrics
        self.deadlines = deadlines
        self.active = 0
        self._refused = 0  # since the last log line about them
        self._refused_logged: float | None = None

    async def serve(
        self, shutdown: trio.Event,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until ``shutdown``, then close the sessions; their pushes go on in
        ``fanouts`` (the daemon drains them within its grace period). Reports ``started``
        with the addresses bound."""
        listeners: list[trio.SocketListener] = []
        try:
            for address in self.config.listen:
                host, port = _split(address)
                try:
                    listeners += await _listen(host, port, self.reuse_port)
                except OSError as error:
                    raise ListenError(f"[agi] listen {address}",
                                      error.strerror or describe(error)) from None
            addresses = [_name(listener) for listener in listeners]
            async with trio.open_nursery() as sessions:
                for listener in listeners:
                    sessions.start_soon(self._accept, listener, sessions)
                log.info("FastAGI on %s", ", ".join(addresses))
                task_status.started(addresses)
                await shutdown.wait()
                sessions.cancel_scope.cancel()
        finally:
            _close(listeners)

    async def _accept(self, listener: trio.SocketListener, sessions: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as error:
                if error.errno not in _ACCEPT_PAUSE:
                    raise
                log.error("FastAGI: cannot accept a connection: %s", describe(error))
                await trio.sleep(0.1)
                continue
            if self.active >= self.config.max_sessions:
                self._refuse(stream)
                await stream.aclose()
                continue
            self.active += 1
            sessions.start_soon(self._session, stream)

    def _refuse(self, stream: trio.SocketStream) -> None:
        """Count a connection beyond max_sessions; log at most one line every REFUSED_LOG_EVERY
        seconds."""
        self.metrics.agi_refused.inc()
        self._refused += 1
        now = time.monotonic()
        if self._refused_logged is None or now - self._refused_logged >= REFUSED_LOG_EVERY:
            log.warning("FastAGI: %d sessions under way ([agi] max_sessions): connection from %s"
                        " closed (%d such since the last line like this)", self.active,
                        _peer(stream), self._refused)
            self._refused, self._refused_logged = 0, now

    async def _session(self, stream: trio.SocketStream) -> None:
        """One session, contained: whatever it raises is logged and counted, never raised."""
        peer, script, outcome = _peer(stream), "-", "error"
        started = time.monotonic()
        channel = AgiChannel(stream, self.config.read_timeout)
        try:
            with trio.move_on_after(self.config.session_timeout) as scope:
                env = await channel.read_environment()
                script = escape(script_of(env)[:40])
                outcome = await self._run(channel, env, peer)
            if scope.cancelled_caught:
                outcome = "timeout"
                log.warning("FastAGI %s from %s: ended after [agi] session_timeout (%g s)",
                            script, peer, self.config.session_timeout)
        except Hangup as why:
            outcome = "hangup"
            log.info("FastAGI %s from %s: %s after %.1f s%s", script, peer, why,
                     time.monotonic() - started,
                     "; the push goes on to its deadline" if script in SCRIPTS else "")
        except AgiError as error:
            outcome = "garbage"
            log.warning("FastAGI from %s: %s; connection closed", peer, error)
        except Exception as error:  # a bug here must not end the other sessions
            log.exception("FastAGI %s from %s failed: %s", script, peer, describe(error))
        finally:
            self.active -= 1
            self.metrics.agi_sessions.labels(script if script in SCRIPTS else "-", outcome).inc()
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await stream.aclose()

    async def _run(self, channel: AgiChannel, env: dict[str, str], peer: str) -> str:
        """Run the session's script; its outcome (PNBRIDGE_STATUS, or error)."""
        try:
            call = call_of(env, self.config)
        except BadScript as error:
            reason = _short(str(error))
            log.warning("FastAGI from %s: %s", peer, escape(reason))
            await channel.verbose(f"pnbridge: {reason}")
            await channel.set_variable("PNBRIDGE_REASON", reason)
            await channel.set_variable("PNBRIDGE_STATUS", "error")
            return "error"
        source = {"agi": call.script, "client": peer, "channel": env.get("agi_channel", ""),
                  "requester": "agi"}
        if call.script == "wake":
            return await self._wake(channel, call, source)
        return await self._follow_up(channel, call, source)

    def _start(self, request: PushRequest, source: dict[str, str]) -> Pending:
        """Start the push among the daemon's fan-outs (it outlives the session); its
        Pending, settled when the fan-out is over, or at once (failed) when it was refused."""
        pending = Pending()
        if self.fanouts is None:
            self._settle(pending, request, "failed", 0,
                         "no push transport: enable a send_push plugin (pnmediator)",
                         logging.WARNING)
            return pending
        try:
            fanout = self.fanouts.start(request, getattr(self.deadlines(), request.verb),
                                        source)
        except Busy as error:
            self._settle(pending, request, "failed", 0, f"not sent: {error}", logging.WARNING)
            return pending
        fanout.then(lambda done: self._settle(pending, request, *_outcome(done)))
        return pending

    def _settle(self, pending: Pending, request: PushRequest, status: str, sent: int,
                reason: str, level: int = logging.INFO) -> None:
        pending.status, pending.sent, pending.reason = status, sent, _short(reason)
        pending.done.set()
        log.log(level, "FastAGI push %s username=%s id=%s: %s%s", request.verb,
                escape(request.username), escape(request.id), status,
                f" ({escape(pending.reason)})" if reason else "")

    async def _wake(self, channel: AgiChannel, call: Call, source: dict[str, str]) -> str:
        request = PushRequest(username=call.user, verb="NotifyIncomingCall", id=call.id,
                              display_name=call.display_name)
        pending = self._start(request, source)
        await channel.set_variable("PNBRIDGE_PUSH_ID", call.id)  # for missed, even if cut
        started = time.monotonic()
        contacts = await self._contacts(channel, call, pending)
        await pending.done.wait()  # within the push's deadline
        waited = time.monotonic() - started
        log.info("FastAGI wake username=%s id=%s: %s, %d device(s) sent, contacts %s after"
                 " %.1f s", escape(call.user), escape(call.id), pending.status, pending.sent,
                 "found" if contacts else "none", waited)
        await channel.set_variable("PNBRIDGE_DEVICES", str(pending.sent))
        await channel.set_variable(CONTACTS, _fit(contacts))
        if pending.reason:
            await channel.set_variable("PNBRIDGE_REASON", pending.reason)
        await channel.set_variable("PNBRIDGE_STATUS", pending.status)
        return pending.status

    async def _contacts(self, channel: AgiChannel, call: Call, pending: Pending) -> str:
        """The endpoint's dial string, asked of Asterisk every poll_interval until it is not
        empty or ``call.timeout`` is over; "" at once when the push went to no device (nobody
        is woken). The timeout is looked at between questions only: a question and its
        answer are never parted (each answer has its read_timeout)."""
        deadline = trio.current_time() + call.timeout
        while True:
            reply = await channel.command("GET FULL VARIABLE",
                                          f"${{PJSIP_DIAL_CONTACTS({call.endpoint})}}")
            if reply.code != 200:
                await channel.verbose(f"pnbridge: Asterisk answered {reply.code} "
                                      f"{_short(reply.extra)} to GET FULL VARIABLE: not waiting")
                return ""
            if channel.hungup:
                raise Hangup("the channel hung up")
            if reply.result == "1" and reply.data:
                return reply.data
            if pending.done.is_set() and pending.status != "sent":
                return ""
            left = deadline - trio.current_time()
            if left <= 0:
                return ""
            await channel.hangup_within(min(self.config.poll_interval, left))

    async def _follow_up(self, channel: AgiChannel, call: Call, source: dict[str, str]) -> str:
        request = PushRequest(username=call.user, verb=FOLLOW_UPS[call.script], id=call.id)
        pending = self._start(request, source)
        refused = pending.done.is_set()  # at once: max_in_flight, no transport
        await channel.set_variable("PNBRIDGE_PUSH_ID", call.id)
        if not call.wait and not refused:
            await channel.set_variable("PNBRIDGE_STATUS", "queued")
            return "queued"
        await pending.done.wait()
        await channel.set_variable("PNBRIDGE_DEVICES", str(pending.sent))
        if pending.reason:
            await channel.set_variable("PNBRIDGE_REASON", pending.reason)
        await channel.set_variable("PNBRIDGE_STATUS", pending.status)
        return pending.status


def _outcome(fanout: Fanout) -> tuple[str, int, str]:
    """The PNBRIDGE_STATUS of a finished fan-out, the devices sent, and why when not sent."""
    error = fanout.error
    if isinstance(error, UnknownUser):
        return "unknown-user", 0, "no device of this user"
    if isinstance(error, StoreError):
        log.error("FastAGI: storage failed on push: %s", describe(error))
        return "failed", 0, "storage unavailable"
    if error is not None:
        return "failed", 0, describe(error)
    counts = fanout.counts()
    if counts["sent"]:
        return "sent", counts["sent"], ""
    if counts["failed"]:
        return "failed", 0, "; ".join(r.reason for r in fanout.results or ()
                                      if r.outcome == "failed")
    return "none", 0, "no device has a token for calls"


def _fit(contacts: str) -> str:
    """The dial string cut to whole contacts (``&``-separated) that fit one AGI command."""
    if fits(f"SET VARIABLE {CONTACTS}", contacts):
        return contacts
    every = contacts.split("&")
    kept = 0
    while kept < len(every) and fits(f"SET VARIABLE {CONTACTS}", "&".join(every[:kept + 1])):
        kept += 1
    log.warning("FastAGI: the contacts do not fit one AGI command; dialling %d of %d", kept,
                len(every))
    return "&".join(every[:kept])


def _short(text: str) -> str:
    """At most MAX_REASON characters of ``text`` (a reason from a plugin, an error's)."""
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 1] + "…"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def _listen(host: str, port: int, reuse_port: bool) -> list[trio.SocketListener]:
    """trio's TCP listeners on ``host:port``; with ``reuse_port``, SO_REUSEPORT set on each
    (several instances on one port, the kernel spreading connections)."""
    if not reuse_port:
        return await trio.open_tcp_listeners(port, host=host)
    sockets: list[trio.socket.SocketType] = []
    try:
        for family, kind, proto, _, address in await trio.socket.getaddrinfo(
                host or None, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE):
            sock = trio.socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
            if family == trio.socket.AF_INET6:
                sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
            await sock.bind(address)
            sock.listen()
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return [trio.SocketListener(sock) for sock in sockets]


def _close(listeners: list[trio.SocketListener]) -> None:
    for listener in listeners:
        listener.socket.close()


def _name(listener: trio.SocketListener) -> str:
    host, port, *_ = listener.socket.getsockname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port, *_ = stream.socket.getpeername()
    except OSError:
        return "?"
    return f"{host}:{port}"

